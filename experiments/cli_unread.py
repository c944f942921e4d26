"""Overrides a run would store unused: each refused by name, with what reads the field.

A ``--config.FIELD`` that the program, the task or the sampler does not read
(``train.py --config.segmenter.steps=0``, ``--config.task.acceleration=4``
with denoising, ``--config.hparams.log_min`` with the uniform sampler) would
be stored with the run and look used while the run went without it: most
likely another setting was meant too. Fields set inside a config file are
left alone; only the command line's overrides are looked at.
"""


def refuse_section(holder, section: str, program: str, hint: str, read=()) -> None:
  """Refuses a ``--config.<section>`` override that ``program`` does not read.

  Such an override would be stored with the run and look used while the run
  went without it (``train.py --config.segmenter.steps=0``).

  Args:
    holder: the ``DEFINE_config_file`` flag holder.
    section: the config section (``segmenter``).
    program: the script's name, for the message.
    hint: where the setting belongs instead, said after the refusal.
    read: the fields of ``section`` that ``program`` does read (``train.seed``).

  Raises:
    InputError: naming the first such override.
  """
  from absl import flags

  from hyperrecon_jax import errors
  unread = sorted(f for f in flags.FLAGS[holder.name].override_values
                  if f.startswith(section + ".") and f not in read)
  if unread:
    reads = (f"reads of config.{section} only "
             + " and ".join(f.partition(".")[2] for f in read) if read
             else f"does not read config.{section}")
    raise errors.InputError(f"--{holder.name}.{unread[0]}: {program} {reads}; {hint}")


def refuse_task(holder, config, program: str) -> None:
  """Refuses a ``--config.task.<field>`` override that the config's task does not read.

  ``--config.task.acceleration=4`` with denoising would be stored with the run
  and look used while the run went without it: each task reads its own fields
  (`physics.task_fields`), the others stay as `default.py` sets them.

  Args:
    holder: the ``DEFINE_config_file`` flag holder.
    config: the checked config (its ``task.name`` is the task the run trains).
    program: the script's name, for the message.

  Raises:
    InputError: naming the first such override and the fields the task reads.
  """
  from absl import flags

  from hyperrecon_jax import errors
  from hyperrecon_jax import physics
  task = config.task.to_dict()
  read = physics.task_fields(task)
  unread = sorted(f for f in flags.FLAGS[holder.name].override_values
                  if f.startswith("task.") and f.partition(".")[2] not in read)
  if unread:
    field = unread[0]
    raise errors.InputError(
        f"--{holder.name}.{field}: the {task['name']} task does not read config.{field} "
        f"({program} would store it with the run unused); it reads config.task."
        + ", ".join(read))


# The λ-drawing fields each sampler of a HyperRecon run reads (`hparams.sample`).
SAMPLER_FIELDS = {
    "uniform": (), "endpoints": ("endpoint_prob", "endpoint_prob_final"),
    "log_uniform": ("log_min",), "dirichlet": ("alpha",), "faces": ("endpoint_prob", "alpha"),
}
_SAMPLER_ONLY = ("endpoint_prob", "endpoint_prob_final", "log_min", "alpha")


def refuse_sampling(holder, config, program: str) -> None:
  """Refuses an override of how λ is drawn that a HyperRecon run does not read.

  ``--config.hparams.log_min=1e-4`` with the uniform sampler, or
  ``--config.sampling.top_b=4`` with UHS, would be stored with the run and
  look used while it trained without it: most likely the sampler or the
  method was meant too. An override to None unsets a field and is let be; a
  plain Unet or a stack of them draws no λ and is left alone.

  Args:
    holder: the ``DEFINE_config_file`` flag holder.
    config: the checked config.
    program: the script's name, for the message.

  Raises:
    InputError: naming the first such override and what reads it.
  """
  from absl import flags

  from hyperrecon_jax import errors
  if not config.model.hyper_dim:
    return
  sampler, method = config.hparams.sampler, config.sampling.method
  read = SAMPLER_FIELDS.get(sampler, _SAMPLER_ONLY)
  why = {}
  for field, value in dict(flags.FLAGS[holder.name].override_values).items():
    section, _, name = field.partition(".")
    if value is None:
      continue
    if section == "hparams" and name in _SAMPLER_ONLY and name not in read:
      users = [s for s, fields in SAMPLER_FIELDS.items() if name in fields]
      readers = " and ".join(users) + (" samplers do" if len(users) > 1 else " sampler does")
      why[field] = (f"the {sampler} sampler does not read it (the {readers}: "
                    "--config.hparams.sampler)")
    elif section == "sampling" and name in ("top_b", "normalize") and method != "dhs":
      why[field] = (f"sampling.method={method!r} does not read it (DHS does: "
                    "--config.sampling.method=dhs)")
  if why:
    field = sorted(why)[0]
    raise errors.InputError(f"--{holder.name}.{field}: {why[field]}; {program} would store it "
                            "with the run unused")
