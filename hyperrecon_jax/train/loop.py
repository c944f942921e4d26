"""The training loop: logging, validation, checkpoints, resume, signals, the start-up checks."""

import contextlib
import itertools
import json
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import checkpoints
from hyperrecon_jax import compilation
from hyperrecon_jax import errors
from hyperrecon_jax import interrupts
from hyperrecon_jax import physics
from hyperrecon_jax import progress as progress_lib
from hyperrecon_jax import streams
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.data import locations
from hyperrecon_jax.data import split_record
from hyperrecon_jax.data import summary
from hyperrecon_jax.evaluators import validation
from hyperrecon_jax.train import config_checks
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import memory_checks
from hyperrecon_jax.train import run_fields
from hyperrecon_jax.train import sharded
from hyperrecon_jax.train import spread
from hyperrecon_jax.train import state as state_lib
from hyperrecon_jax.train import step as step_lib
from hyperrecon_jax.train import term_probes
from hyperrecon_jax.train import writer as writer_lib


class NonFiniteLossError(errors.Error, RuntimeError):
  """Training diverged; the last good checkpoint is kept.

  The loss or the parameters became NaN or infinite, or the model's
  reconstructions of a validation batch did (finite but huge parameters).
  """


class Interrupted(RuntimeError):
  """SIGINT/SIGTERM arrived; a checkpoint was saved."""


@contextlib.contextmanager
def _stop_on_signals():
  """Turns SIGINT/SIGTERM into a flag the loop polls between steps.

  It starts with any Ctrl-C the scripts' handler saw before (`interrupts`):
  one that a library swallowed during start-up stops the loop at its first
  step.
  """
  received = interrupts.take()
  handler = lambda signum, frame: received.append(signum)
  old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield received
  finally:
    for s, h in old.items():
      signal.signal(s, h)


def check_workdir(config, workdir: str, stored=None) -> None:
  """Raises ``ConfigError`` if the workdir's run was trained under other bound fields.

  Or under other formulas of its own loss terms (`term_probes.check`).

  Args:
    config: the new config; its ``term_probes`` as `term_probes.recorded`
      gives them (an empty record is probed here).
    workdir: the run's folder.
    stored: the config dict of the workdir's newest checkpoint, which is what
      the run was trained with; None falls back to ``config.json``.

  Nothing is written.
  """
  if stored is None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
      return
    try:
      with open(path) as f:
        stored = json.load(f)
    except OSError as e:
      raise configuration.ConfigError(f"{path} cannot be read ({e.strerror or e}); move it "
                                      "away or use another --workdir") from None
    except ValueError as e:
      raise configuration.ConfigError(
          f"{path} is not valid JSON ({e}); move it away or use another "
          "--workdir") from None
    # Another program's config.json would otherwise pass (no bound field to
    # differ) and be replaced.
    missing = configuration.missing_sections(stored)
    if missing:
      raise configuration.ConfigError(
          f"{path} is not the config of a run (it has no {', '.join(missing)}); move it "
          "away or use another --workdir")
  diffs = run_fields.incompatibilities(stored, json.loads(config.to_json()))
  if diffs:
    raise configuration.ConfigError(
        f"{workdir} holds a run trained with an incompatible config ("
        + "; ".join(diffs) + "); use another --workdir")
  # Its own loss terms must compute what they computed in its steps so far:
  # the values `train_and_evaluate` recorded, not a probe for each checkpoint tried.
  term_probes.check(config, stored.get(term_probes.FIELD) or {}, where=f"the run in {workdir}",
                    now=config.get(term_probes.FIELD) or None)


def train_and_evaluate(config, workdir: str):
  """Trains (or resumes) a run in ``workdir``; returns the final ``TrainState``.

  The trainer owns the workdir for the whole call (`hyperrecon_jax.workdir_lock`):
  a second trainer is refused at once. On several processes (after
  `jax.distributed.initialize`, or with ``config.train.distributed``) every
  process calls this with the same arguments: each reads its own shard of
  every batch (`sharded.train_batches`), every process writes its checkpoint
  shards, and process 0 alone holds the lock and writes the run's own files. A run
  that is rejected, or that has no step left to do, writes nothing, except
  the checksums of a checkpoint it verified (`checkpoints.restore`); a workdir
  folder it created is removed if it is still empty.

  Args:
    config: full experiment config (validated here).
    workdir: where config, checkpoints, metrics and event files go.

  Raises:
    ConfigError: impossible or workdir-incompatible config (nothing written).
    WorkdirBusyError: another trainer owns the workdir.
    NonFiniteLossError: the loss, the parameters or the reconstructions of a
      validation batch became non-finite (last good checkpoint kept).
    CheckpointError: every checkpoint is damaged (the trainer moved them to
      ``checkpoints.damaged``; a rerun starts again from step 0, with a
      warning).
    Interrupted: SIGINT/SIGTERM (a checkpoint was saved at the current step;
      a run of several processes stops one step later, `sharded.stop_agreement`).
  """
  config_checks.check_config(config)
  config_checks.check_report_design(config)
  config = term_probes.recorded(config)
  if config.train.distributed and not jax.distributed.is_initialized():
    # The scripts join the run before anything else (experiments/train.py);
    # this is for a library caller on Slurm, Open MPI or TPU, where JAX finds
    # its arguments itself.
    try:
      jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
      raise configuration.ConfigError(
          f"config.train.distributed=True, but this process cannot join a multi-process run "
          f"({' '.join(str(e).split())}): launch every "
          "process under Slurm, Open MPI or on a TPU, where JAX finds the run; or, with "
          "experiments/train.py, give --coordinator, --num_processes and --process_id") from e
  sharded.check_same_run(config, workdir)
  relative = {name: absolute for name in ("manual_dir", "data_dir")
              if (absolute := locations.absolute_folder(config.data.get(name)))
              != config.data.get(name)}
  if relative:
    # config.json names the folders the run reads (`locations.absolute_folder`).
    config = config.copy_and_resolve_references()
    config.data.update(relative)
  # Only process 0 writes the run's own files, so only it probes the folder.
  workdir_lib.check_folder(workdir, "training run", workdir_lib.RUN_ENTRIES,
                           write_probe=workdir_lock.is_primary(), subfolders=("checkpoints",))
  size = int(config.data.image_size)
  # Before the workdir is written: a task whose mask cannot be drawn (e.g. an
  # acceleration beyond the image's size), or a model that cannot fit, must
  # leave nothing behind.
  operator = physics.make_operator(config.task, (size, size))
  memory_checks.check_memory(config, state_lib.build_model(config))
  mesh = sharded.data_mesh()
  if config.train.batch_size % mesh.size:
    raise configuration.ConfigError(
        f"config.train.batch_size={config.train.batch_size} must be divisible "
        f"by the number of devices ({mesh.size})")
  # Every process of a multi-host run writes its checkpoint shards; process 0
  # alone holds the lock and writes the run's own files.
  with workdir_lock.run_lock(workdir):
    return _train(config, workdir, mesh, operator, workdir_lock.is_primary())


def _train(config, workdir, mesh, operator, owner):
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  model = state_lib.build_model(config)
  state, start, read, resuming = _start(config, workdir, model, replicated, owner)
  if start >= int(config.train.num_steps):
    return state
  # Before anything is written: a run goes on with the splits it began with,
  # and one that begins (again) at step 0 records them. A resumed run without
  # its record (deleted, or a workdir older than the record) records the
  # splits it goes on with, so that evaluation checks its test split again,
  # unless they cannot be its own (`split_history.unrecorded`: refused).
  splits = split_record.current(config.data)
  sharded.check_same_data(splits)
  record_path = os.path.join(workdir, split_record.FILE)
  rerecord = bool(start) and splits is not None and not os.path.exists(record_path)
  if start:
    split_record.check_resume(workdir, splits)
    print(resuming, file=sys.stderr)
  if owner:
    for line in summary.describe(config.data):
      print(line, file=sys.stderr)
  train_iter = sharded.train_batches(config, batch_sharding, start=read)
  # From the first batch on, a signal (during the compilation too) stops the
  # run after its next step, with a checkpoint.
  with _stop_on_signals() as received:
    batch_size = int(config.train.batch_size)
    next_batch = lambda: sharded.global_batch(next(train_iter), batch_sharding, batch_size)
    first = next_batch()
    # Compiled before the run's files are written: a step that cannot fit is
    # refused with nothing written.
    train_step = jax.jit(
        step_lib.make_train_step(config, model, operator),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated), donate_argnums=0,
        compiler_options=compilation.training_options()).lower(
            state, first, streams.key(int(config.train.seed), "train")).compile()
    memory_checks.check_step_memory(config, train_step)
    if owner:
      atomic_writes.write_text(os.path.join(workdir, "config.json"),
                               config.to_json(indent=2))
      if splits is not None and (start == 0 or rerecord):
        atomic_writes.write_text(record_path, split_record.to_json(splits))
      if rerecord:
        print(f"note: {record_path} was missing; it is written with the splits the run "
              f"goes on with from step {start}, which cannot be checked against those it "
              "began with", file=sys.stderr)
    batches = itertools.chain([first], iter(next_batch, None))
    # A plain Unet has one λ, the one it trains at; a stack one per Unet.
    val_lams = (step_lib.validation_lambdas(configuration.num_lambdas(config))
                if config.model.hyper_dim else
                list(state_lib.stack_lambdas(model)) or [tuple(config.hparams.fixed)])
    saver = _Saver(config, workdir, model, operator, val_lams, train_iter, read)
    writer = writer_lib.MetricWriter(workdir, start_step=start, enabled=owner)
    try:
      state = _steps(config, model, state, start, train_step,
                     lambda: next(batches), saver, writer, val_lams, received,
                     sharded.stop_agreement(mesh))
      seen = len(received)
    finally:
      try:
        writer.close()
      finally:
        saver.close()
    if len(received) > seen:
      print(f"note: signal {received[-1]} arrived while the finished run's files were "
            "closed; the run is complete and saved", file=sys.stderr)
    return state


def _start(config, workdir, model, replicated, owner):
  """``(state, start step, examples read, note)``: the newest intact checkpoint, or step 0.

  The examples read are where the run's data resumes (`examples_read`). The
  note (``None`` at step 0) says what the run resumes from, once the resumed
  run's data has been checked against the splits it began with.
  """
  state = jax.device_put(state_lib.create_state(
      config, model, streams.key(int(config.train.seed), "init")), replicated)

  stored_config = {}

  def abstract(stored):
    check_workdir(config, workdir, stored)
    stored_config.clear()
    stored_config.update(stored)  # the last one read is the one restored
    return state

  reader = checkpoints.reader(workdir)
  try:
    restored = checkpoints.restore(reader, abstract, trainer=True)
  finally:
    if reader is not None:
      reader.close()
  if restored is None:
    check_workdir(config, workdir)
    damaged = checkpoints.quarantined(workdir)
    if damaged and owner:
      print(f"warning: {workdir} has no usable checkpoint: the damaged ones (steps "
            f"{', '.join(damaged)}) are in {os.path.join(workdir, checkpoints.DAMAGED_DIR)}; "
            "training starts again from step 0", file=sys.stderr)
    return state, 0, 0, None
  start, total = restored.step, int(config.train.num_steps)
  resuming = None
  if start >= total:
    print(f"nothing to do: {workdir} is at step {start} and "
          f"config.train.num_steps={total}", file=sys.stderr)
  else:
    # A run stored before a field was added has that field's compatible value.
    stored = json.loads(configuration.from_stored(stored_config).to_json())
    changed = run_fields.changed_fields(stored, json.loads(config.to_json()))
    resuming = f"resuming from step {start}" + (
        f"; changed since that checkpoint: {'; '.join(changed)}" if changed else "")
  return (jax.device_put(restored.state, replicated), start,
          examples_read(restored.data_state, stored_config), resuming)


def examples_read(data_state: dict, stored_config: dict) -> int:
  """How many examples of the training stream a checkpoint's run had read.

  A checkpoint stores ``{"examples": N}``; one written before counted the
  batches of the run's batch size then (``{"next_index": n}``, grain's
  iterator state), which its own config gives. In examples, the position
  holds when a resumed run changes ``train.batch_size``: counted in batches
  of the new size, it skipped or repeated examples of the epoch.

  Args:
    data_state: the checkpoint's data position ({} for none).
    stored_config: the config stored with the checkpoint, as a dict.
  """
  if not data_state:
    return 0
  if "examples" in data_state:
    return int(data_state["examples"])
  return int(data_state["next_index"]) * int(stored_config["train"]["batch_size"])


class _Saver:
  """Checkpoints only good states: finite, with finite reconstructions."""

  def __init__(self, config, workdir, model, operator, val_lams, train_iter, first):
    self._config, self._workdir, self._train_iter = config, workdir, train_iter
    self._first = first  # examples of the stream read before the iterator's first batch
    self._finite = validation.reconstructions_finite(config, model, operator, val_lams)
    self._mngr = checkpoints.manager(workdir, config.train.max_to_keep)

  def _kept(self):
    last = self._mngr.latest_step()
    return (f"the last good checkpoint is step {last} in {self._workdir}/checkpoints"
            if last is not None else "no checkpoint was written")

  def check_finite(self, s, record=None, step=None):
    """Raises `NonFiniteLossError` once the state has frozen at a bad step.

    Args:
      s: the train state.
      record: the metrics of a step logged since (``loss_<term>`` values), to
        name the terms that were not finite there.
      step: that step.
    """
    bad = int(jax.device_get(s.bad_step))
    if bad >= 0:
      terms = [k[len("loss_"):] for k, v in (record or {}).items()
               if k.startswith("loss_") and not math.isfinite(v)]
      # A term of one's own that gives NaN is named, not lost in the advice.
      which = (f" At step {step} the loss term(s) {', '.join(terms)} were not finite: check "
               "them, their inputs and their config.loss_scales." if terms else "")
      # bad_step is the state's step count before the failed update; the
      # loop (and metrics.jsonl, checkpoints) count that update as bad + 1.
      raise NonFiniteLossError(
          f"the loss or the parameters became non-finite at step {bad + 1}; "
          f"training stopped and {self._kept()}.{which} Lower config.train.lr, or check the "
          "data and config.loss_scales (a term divided by a tiny scale overflows).")

  def save(self, s, at):
    self.check_finite(s)
    if not self._finite(s.variables()):
      largest = max(float(jnp.max(jnp.abs(p))) for p in jax.tree_util.tree_leaves(s.params))
      raise NonFiniteLossError(
          f"the model's reconstructions of a validation batch are not finite at step {at} "
          f"(its parameters reach {largest:.3g}); training stopped and {self._kept()}. "
          "Lower config.train.lr or check the data.")
    read = self._first + (int(self._train_iter.get_state()["next_index"])
                          * int(self._config.train.batch_size))
    checkpoints.save(self._mngr, at, s, {"examples": read}, self._config)

  def close(self):
    self._mngr.close()


def _steps(config, model, state, start, train_step, next_batch, saver, writer, val_lams,
           received, stop_agreed):
  """Steps ``start + 1 … num_steps``: log, validate, checkpoint, stop on a signal."""
  total = int(config.train.num_steps)
  rng, lr = streams.key(int(config.train.seed), "train"), state_lib.learning_rate(config)
  progress = progress_lib.Progress(
      total, "step", lambda done, total, note: f"step {done}/{total} {note}",
      initial=start, every=None)
  t_last, step_last, waited = time.perf_counter(), start, 0.0
  try:
    for step in range(start + 1, total + 1):
      t_batch = time.perf_counter()
      batch = next_batch()
      waited += time.perf_counter() - t_batch
      state, metrics = train_step(state, batch, rng)
      is_last = step == total
      progress.set(step)
      evaluate = step % config.train.eval_every == 0 or is_last
      if step % config.train.log_every == 0 or evaluate:
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        saver.check_finite(state, record, step)
        elapsed = max(time.perf_counter() - t_last, 1e-9)
        record["steps_per_s"] = (step - step_last) / elapsed
        # The loop's share of the interval spent waiting for its next batch:
        # near 1, the input pipeline sets the pace and the device idles.
        record["input_wait"] = waited / elapsed
        record["lr"] = float(lr(step - 1))
        if evaluate:
          record.update(_validation(config, model, state, val_lams))
        t_last, step_last, waited = time.perf_counter(), step, 0.0  # validation is not speed
        writer.write(step, record)
        progress.note(f"{record['steps_per_s']:.2f} steps/s {writer_lib.summary(record)}")
      stop = stop_agreed(bool(received))
      if step % config.train.checkpoint_every == 0 or is_last or stop:
        saver.save(state, step)
      by = f"signal {received[0]}" if received else "a signal to another process"
      if is_last and (stop or received):  # received: during the last save
        # Nothing is left to stop: the run is finished and saved, and a rerun
        # would find it complete, so it ends as a finished run does.
        print(f"note: {by} arrived during the last step ({step}); the run is complete and "
              "saved", file=sys.stderr)
      elif stop:  # after logging, so the resumed log has no gap
        raise Interrupted(
            f"stopped by {by} at step {step}; a checkpoint "
            f"was saved — rerun the same command to resume.")
  finally:
    progress.close()
  return state


def _validation(config, model, state, val_lams) -> dict:
  """The validation record: PSNR/SSIM at the λ, and how far apart the generated Unets are."""
  record = validation.metrics(config, model, state.variables(), val_lams)
  if config.model.hyper_dim:
    record["weight_spread"] = spread.weight_spread(model, state.params, val_lams)
    if len(config.losses) >= 3:  # is every direction of λ learned?
      record.update(spread.direction_spreads(model, state.params, tuple(config.losses)))
  return record
