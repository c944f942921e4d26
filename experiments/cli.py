"""What the experiment scripts share: clean one-line errors instead of tracebacks."""

import _thread
import atexit
import contextlib
import os
import signal
import sys
import time

from absl import flags
from absl import logging


def quiet_libraries():
  """Keeps absl at WARNING unless --verbosity was given (orbax logs every save).

  nibabel's header checks are silenced too: they log through absl's handler
  about files they read correctly (a NIfTI-2 header's size) and repeat the
  cause of a file the `error:` line already names. So is tensorboardX's
  "NaN or Inf found in input tensor": the metrics line shows the NaN, and
  the training loop names the step and what it kept.
  """
  import logging as python_logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    python_logging.getLogger("nibabel").setLevel(python_logging.CRITICAL)
    python_logging.getLogger("tensorboardX").setLevel(python_logging.ERROR)


def one_line(text: str) -> str:
  """The sentence a user needs from an error message, on one line."""
  text = str(text)
  if "Traceback (most recent call last)" in text:
    # A config file raised: keep the exception line, drop the stack.
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-2] if lines[-1].startswith("Try --help") else lines[-1]
    text = last.split(": ", 1)[-1]
  return " ".join(text.split())


def key_flags(*holders) -> None:
  """Makes flags defined here for a command show in its ``--help``.

  absl's ``--help`` lists the flags the command's own file defines (its key
  flags); those a shared helper of these modules defines showed only under
  ``--helpfull``. The command is the main module, ``sys.argv[0]``, which is
  how absl names it.
  """
  for holder in holders:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


class _PathParser(flags.ArgumentParser):
  """A file or folder: a leading ``~`` is the user's home.

  A shell expands ``~`` only at the start of a word, so after ``--flag=`` it
  reaches the command as it is; taken literally, ``--workdir=~/run`` would
  write a folder named ``~`` in the current one.
  """

  def parse(self, argument):
    return None if argument is None else os.path.expanduser(argument)

  def flag_type(self):
    return "string"


class _PathListParser(flags.ListParser):
  """Comma-separated files or folders, each as `_PathParser` reads one."""

  def parse(self, argument):
    return [os.path.expanduser(path) for path in super().parse(argument)]


def define_path(name: str, default: str | None, help_string: str, **kwargs):
  """``flags.DEFINE_string`` for a file or folder, a leading ``~`` the user's home.

  Returns:
    The flag holder, one of the command's key flags (`key_flags`).
  """
  holder = flags.DEFINE(_PathParser(), name, default, help_string,
                        serializer=flags.ArgumentSerializer(), **kwargs)
  key_flags(holder)
  return holder


def define_path_list(name: str, default, help_string: str, **kwargs):
  """``flags.DEFINE_list`` of files or folders, each ``~`` the user's home.

  Returns:
    The flag holder, one of the command's key flags (`key_flags`).
  """
  holder = flags.DEFINE(_PathListParser(), name, default, help_string,
                        serializer=flags.CsvListSerializer(","), **kwargs)
  key_flags(holder)
  return holder


def expand_home(argv: list[str], name: str) -> None:
  """Reads ``--NAME=~…`` in ``argv`` (in place) as the user's home, as `define_path` does.

  For the flags whose parser is another library's (``--config``'s file).
  """
  prefix = f"--{name}=~"
  for i, arg in enumerate(argv):
    if arg.startswith(prefix):
      argv[i] = f"--{name}=" + os.path.expanduser(arg[len(prefix) - 1:])


def define_model_flags(*, default_pretrained: str | None = None):
  """``--workdir``, ``--pretrained`` and ``--step``: the trained model a script reads.

  Exactly one of ``--workdir`` and ``--pretrained`` must be given, or neither
  when ``default_pretrained`` names a shipped model to use then.

  Returns:
    The three flag holders (workdir, pretrained, step).
  """
  workdir = define_path("workdir", None, "Folder of a training run.")
  default = f"; {default_pretrained} when neither is given" if default_pretrained else ""
  pretrained = define_path(
      "pretrained", None, "Instead of --workdir: a model shipped with the package "
      "(hyperrecon_jax.pretrained.names()), or the folder of one exported by "
      f"export_pretrained.py --folder{default}.")
  step = flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the "
                              "newest intact one).", lower_bound=1)
  if default_pretrained:
    flags.register_multi_flags_validator(
        ["workdir", "pretrained"], lambda f: f["workdir"] is None or f["pretrained"] is None,
        message="give at most one of --workdir and --pretrained")
  else:
    flags.register_multi_flags_validator(
        ["workdir", "pretrained"],
        lambda f: (f["workdir"] is None) != (f["pretrained"] is None),
        message="give exactly one of --workdir and --pretrained")
  key_flags(workdir, pretrained, step)
  return workdir, pretrained, step


def load_model(workdir: str | None, pretrained: str | None, step: int | None = None):
  """The model of `define_model_flags`' values: ``(config, model, variables, step, name)``.

  ``name`` is the shipped model's name, or the exported model's folder or
  the workdir as an absolute path.
  """
  if pretrained is not None:
    from hyperrecon_jax import errors
    from hyperrecon_jax import pretrained as pretrained_lib
    if step is not None:
      raise errors.InputError("a pretrained model has one checkpoint: --step does not apply")
    # An exported model's folder by its absolute path, as a workdir's: the
    # sidecar that records it is read from other folders.
    name = pretrained if pretrained in pretrained_lib.names() else os.path.abspath(pretrained)
    return (*pretrained_lib.load(pretrained), name)
  from hyperrecon_jax import train
  return (*train.load_trained(workdir, step), os.path.abspath(workdir))


@contextlib.contextmanager
def user_errors(*extra):
  """Turns the project's errors into one ``error: …`` line and a non-zero exit.

  Configuration, data, checkpoint and input problems (`hyperrecon_jax.errors`),
  file-system failures (a missing file, a full disk) and running out of
  memory (the environment's, not bugs) are the user's to fix, and a traceback
  would only hide the sentence that says how; Ctrl-C prints ``interrupted``
  and exits with 130.
  Anything else is a bug and keeps its traceback.
  """
  from hyperrecon_jax import errors
  from hyperrecon_jax import train
  try:
    yield
  except train.Interrupted as e:
    print(f"interrupted: {e}", file=sys.stderr)
    sys.exit(130)
  except (errors.Error, OSError, *extra) as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    raise SystemExit(2) from e  # the cause: the other processes of a run are told it
  except MemoryError as e:
    # The machine's limit, not a bug: an array larger than the memory left
    # (NumPy names its size and shape).
    print(f"error: out of memory: {one_line(e) or 'an allocation failed'}", file=sys.stderr)
    raise SystemExit(2) from e


def run(main):
  """``app.run(main)`` with one-line flag errors and a quiet Ctrl-C.

  Ctrl-C anywhere (start-up, compilation, evaluation) prints ``interrupted``
  and exits with 130, the shell's code for SIGINT, instead of a traceback.
  SIGTERM (``kill``, a scheduler's stop) does the same with 143: both unwind
  the stack, so every ``finally`` runs (a lock released, a staging folder
  removed) where SIGTERM's default would end the process on the spot. Once
  ``main`` has finished, either ends the interpreter's shutdown at once with
  the command's own status (`_finished`).
  """
  from absl import app
  import cli_flags

  from hyperrecon_jax import interrupts
  # A shell starts background jobs with SIGINT ignored, and Python keeps an
  # ignored SIGINT; a SIGINT sent to this process on purpose must still stop
  # it (the training loop handles SIGINT itself, whatever it inherited).
  # `interrupts.handler` raises KeyboardInterrupt too, and remembers the
  # signal for the training loop in case a library swallows the exception.
  signal.signal(signal.SIGINT, interrupts.handler)
  signal.signal(signal.SIGTERM, interrupts.handler)
  sys.unraisablehook = _redeliver_interrupts(sys.unraisablehook)
  # Registered before main imports the libraries: it runs after their exit
  # callbacks (last in, first out).
  atexit.register(_ignore_signals)
  try:
    app.run(main, flags_parser=cli_flags.parse_flags)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    received = interrupts.take()
    exit_now(128 + (received[-1] if received else signal.SIGINT))
  except SystemExit as done:
    _finished(done.code)
    raise


def _finished(code) -> None:
  """After ``main``: a signal during the interpreter's shutdown ends it with ``code``.

  Every output is written by then, but the shutdown (joining threads, the
  libraries' exit callbacks, tearing down XLA) takes seconds with jax loaded
  on a busy machine. Left to Python's default, a signal there would end the
  finished command with 130 or 143 and no word, and a script or scheduler
  would take it for a failed one. While Python still runs handlers, a signal
  ends the shutdown at once with the command's status; after the exit
  callbacks, when Python is about to remove its handlers, `_ignore_signals`
  ignores both to the end.

  Args:
    code: ``SystemExit.code`` (None, a status, or a message: status 1).
  """
  status = 0 if code is None else code if isinstance(code, int) else 1
  handler = lambda signum, frame: exit_now(status)
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, handler)


def _ignore_signals() -> None:
  """Ignores SIGINT and SIGTERM for the rest of the shutdown (`_finished`)."""
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)


def _redeliver_interrupts(hook):
  """An unraisable hook that sends a swallowed Ctrl-C to the process again.

  Python runs a signal handler wherever the main thread happens to be. When
  that is a garbage-collection callback (jax registers one) or a ``__del__``,
  the ``KeyboardInterrupt`` cannot propagate: Python prints "Exception ignored
  in ..." and carries on, and the Ctrl-C is lost. Sending SIGINT again from
  another thread lets the handler run at the next ordinary line instead: the
  start-up unwinds, or the training loop, if it runs by then, takes the signal
  and stops with a checkpoint. The signal sent again is the one swallowed, so
  that a swallowed SIGTERM still ends the process with 143, not 130.

  Args:
    hook: the unraisable hook to call for everything else.

  Returns:
    The new hook.
  """
  from hyperrecon_jax import interrupts

  def resend(signum):
    # Not while the hook runs: an interrupt raised inside the hook itself is
    # lost for good (Python prints it with the default hook, not this one).
    time.sleep(0.01)
    os.kill(os.getpid(), signum)

  def redeliver(unraisable):
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
      # _thread, not threading: Thread.start() waits for the thread to run,
      # and the signal would land in that wait.
      _thread.start_new_thread(resend, (interrupts.last() or signal.SIGINT,))
    else:
      hook(unraisable)
  return redeliver


def exit_now(code: int):
  """Exits without the interpreter's shutdown, after the stack has unwound.

  Interrupted in the middle of an XLA compilation or a dataset build, the
  shutdown can crash in a library's background thread (a segmentation fault
  after "interrupted" in about half of our tries). By now every ``finally``
  has run: the lock is released, temporary files are removed and checkpoints
  are written synchronously, so nothing is lost by skipping it. A process
  ended by another process's end has not unwound: the locks it still holds
  are abandoned as their blocks would release them (`workdir_lock.abandon`).
  """
  workdir_lock = sys.modules.get("hyperrecon_jax.workdir_lock")
  if workdir_lock is not None:  # a lock still held: its stack did not unwind
    workdir_lock.abandon()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
