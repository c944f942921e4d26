"""What a workdir's run is bound to, and what a rerun of it changes.

A run's stored config and the config of a command that resumes or scores it
are compared field by field: `incompatibilities` names the `BOUND_FIELDS` that
may not change (they fix the shapes of the parameters or data, or what the
model means), `changed_fields` every other field that did, for the note of a
resumed run.
"""

# Fields a workdir's run is bound to: they fix the shapes of the parameters,
# optimizer state or data, what the trained model means (its task and the
# terms and scales of its loss), or every random stream of the run
# (`train.seed`: data order, λ draws, measurement noise, and the noise of the
# run's reports, so a resume under another seed would be neither run).
# Resuming or re-running a workdir with another value is an error
# (`incompatibilities`); everything else (steps, learning rate, logging,
# sampler, strategy) may change between runs.
BOUND_FIELDS = (
    "model.hyper_dim", "model.channels", "model.batch_norm",
    "model.hyper_init", "model.conditioned", "losses",
    "loss_scales", "task", "data.name", "data.image_size",
    "data.axis", "data.split_fractions", "data.split_seed", "data.gap_slices",
    "data.min_foreground", "data.percentile", "hparams.fixed",
    "hparams.baselines", "train.seed",
)


# A bound field that a command sets from a flag of its own, named with it: a
# user who typed `baselines.py --lambdas=0,1` looks for that flag.
FLAG_OF_FIELD = {"hparams.baselines": "baselines.py --lambdas"}


def value_at(config, dotted: str):
  """The field ``dotted`` (``'model.channels'``) of a config or config dict; a list as a tuple."""
  node = config
  for part in dotted.split("."):
    node = node[part]
  return tuple(node) if isinstance(node, (list, tuple)) else node


def _flat(node, prefix):
  if isinstance(node, dict):
    for k, v in node.items():
      yield from _flat(v, f"{prefix}.{k}")
  else:
    yield prefix, tuple(node) if isinstance(node, (list, tuple)) else node


def incompatibilities(old, new) -> list[str]:
  """`BOUND_FIELDS` on which two config dicts differ, as readable strings.

  Of ``task``, only the fields its operator reads (`physics.task_fields`) are
  bound: a denoising run does not depend on ``task.acceleration``.
  """
  from hyperrecon_jax import physics
  out = []
  for field in BOUND_FIELDS:
    try:
      a, b = value_at(old, field), value_at(new, field)
    except (KeyError, AttributeError, TypeError):
      continue
    if field == "task" and isinstance(a, dict) and isinstance(b, dict):
      read = set(physics.task_fields(a)) | set(physics.task_fields(b))
      a, b = ({k: v for k, v in t.items() if k in read} for t in (a, b))
    if isinstance(a, dict) or isinstance(b, dict):
      a, b = dict(_flat(a, field)), dict(_flat(b, field))
      out += [f"{k}: {a.get(k)!r} in the workdir, {b.get(k)!r} now"
              for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b:
      flag = f" ({FLAG_OF_FIELD[field]})" if field in FLAG_OF_FIELD else ""
      out.append(f"{field}{flag}: {a!r} in the workdir, {b!r} now")
  return out



# Settings of a machine, not of a run: a resumed run's note leaves them out.
MACHINE_FIELDS = ("data.data_dir", "data.manual_dir", "data.num_threads")


def changed_fields(old, new) -> list[str]:
  """The fields two config dicts differ on, ``field: old → new``, machine settings left out.

  For the note of a resumed run: a field not in `BOUND_FIELDS` may change
  between runs (steps, learning rate, sampler, sampling method), and the
  checkpoint then stores the new value, so the change is said once, when it
  happens.
  """
  a, b = dict(_flat(dict(old), "")), dict(_flat(dict(new), ""))
  out = []
  for key in sorted(set(a) | set(b)):
    field = key[1:]
    # term_probes: a value differing beyond roundoff is refused (`check_workdir`).
    if (field not in MACHINE_FIELDS and not field.startswith("term_probes.")
        and a.get(key) != b.get(key)):
      out.append(f"{field}: {a.get(key)!r} → {b.get(key)!r}")
  return out
