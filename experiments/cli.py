"""What the experiment scripts share: clean one-line errors instead of tracebacks."""

import _thread
import atexit
import contextlib
import os
import re
import signal
import sys
import time

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

  from absl import flags
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


def _asked_for_help(exit_: SystemExit) -> bool:
  """Whether absl's help flags raised ``exit_`` after printing the usage."""
  from absl import app
  helps = (app.HelpFlag, app.HelpfullFlag, app.HelpXMLFlag)
  tb = exit_.__traceback__
  while tb is not None:
    if isinstance(tb.tb_frame.f_locals.get("self"), helps):
      return True
    tb = tb.tb_next
  return False


def parse_flags(argv):
  """absl flag parsing whose errors (a bad ``--config.x.y=v`` too) are one line.

  The config flag is named as the command names it (`config_flag_names`):
  ``--recipe`` for ``benchmarks/throughput.py``.

  Arguments that are not flags are an error too (no script takes any), and so
  is a flag given an empty value (``--out=``, e.g. from an unset shell
  variable): no flag of the scripts means anything when empty, and a silent
  default (the package's folder for ``--folder``) is worse than a refusal.

  Pass as ``app.run(main, flags_parser=cli.parse_flags)``.
  """
  from absl import flags
  # A config file's problems are the one error line; absl's warnings about it
  # (e.g. get_config() returned None) would repeat it before the flags apply
  # --verbosity, which sets the level again.
  logging.set_verbosity(logging.ERROR)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {_flag_error(e, argv)}", file=sys.stderr)
  except SystemExit as e:
    # --help exits here too; only a config file's own exit is an error (it
    # would end the run with the file's status, 0 for sys.exit()).
    where = _config_file_error(e, argv)
    if where is None:
      if _asked_for_help(e):
        # absl ends --help, --helpshort, --helpfull and --helpxml with status
        # 1; the usage a user asked for is no failure.
        raise SystemExit(0) from None
      raise
    print(f"error: {where}", file=sys.stderr)
  except Exception as e:  # noqa: BLE001 (a config file can raise anything)
    where = _config_file_error(e, argv) or _unloaded_config_file(e)
    if where is None and not isinstance(e, (AttributeError, KeyError, TypeError, ValueError)):
      raise
    if where is None:
      import cli_config  # it imports this module
      where = cli_config.override_error(e, argv)
    print(f"error: {where}", file=sys.stderr)
  else:
    # An argument left over explains an empty flag before it ("--out= DIR").
    failed = _failed_config_file(flags.FLAGS) or (
        f"unexpected arguments {rest[1:]}: every setting is one --flag=value (a space after "
        "'=' splits it in two) (try --help)" if len(rest) > 1 else _empty_flag(flags.FLAGS))
    if not failed:
      return rest
    print(f"error: {failed}", file=sys.stderr)
  sys.exit(2)


def config_flag_names() -> list[str]:
  """The names of the command's config flags, e.g. ``config``, or throughput.py's ``recipe``.

  Returns:
    The names of the defined ``ml_collections`` config flags, sorted; ``['config']``
    where the command defines none.
  """
  from absl import flags
  # ml_collections' config flags are of a private class; its public
  # get_config_filename reads this property (which raises before parsing,
  # so the class is asked, not the flag).
  names = {flags.FLAGS[name].name for name in flags.FLAGS
           if hasattr(type(flags.FLAGS[name]), "config_filename")}
  return sorted(names) or ["config"]


def _config_argument(argv) -> tuple[str, str]:
  """The config flag that ``argv`` gives, and its value.

  Args:
    argv: the command line.

  Returns:
    ``(name, value)``: the first of `config_flag_names` given in ``argv``
    and its value (``path[:arg]``); else the first name and ''.
  """
  names = config_flag_names()
  for i, arg in enumerate(argv[1:], 1):
    for name in names:
      if arg.startswith(f"--{name}="):
        return name, arg[len(f"--{name}="):]
      if arg == f"--{name}" and i + 1 < len(argv):
        return name, argv[i + 1]
  return names[0], ""


def _empty_flag(values) -> str | None:
  """The first string flag given an empty value, as an error message; else None."""
  for name in sorted(values):
    flag = values[name]
    # Config fields ("config.x.y") may be empty strings on purpose.
    if "." not in name and flag.present and flag.value in ("", []):
      return f"--{name} is empty: give a value, or leave the flag out (try --help)"
  return None


def _flag_error(error, argv=()) -> str:
  """A flag's parse error as one line; a config file's problem names the file."""
  text = one_line(error)
  if "Failed loading config file" in text:
    # ml_collections lists each path it tried: "… [Relative path]: PATH [Errno 2] REASON: …".
    attempt = text.rsplit("]:", 1)[-1].strip()
    path = attempt.split(" [Errno", 1)[0]
    reason = re.search(r"\[Errno \d+\] ([^:]+)", attempt)
    return f"cannot load the config file {path}: {reason.group(1) if reason else attempt}"
  if isinstance(error, OSError) and error.filename:
    return f"cannot load the config file {error.filename}: {error.strerror}"
  name, config = _config_argument(argv)
  if f"--{name} must have a value other than None" in text:
    if not config:  # absl's required-flag check, in ml_collections' words
      return f"--{name} is required: give the experiment's config file (try --help)"
    return f"the config file {config}: get_config() returned None, not a config"
  if "Error whilst parsing config file" in str(error):
    return _traceback_error(str(error), config)
  return f"{text} (try --help)"


def _traceback_error(text: str, config: str) -> str:
  """The last line of a config file's traceback, with the file and line it came from."""
  lines = [line for line in text.splitlines() if line.strip()]
  last = lines[-1].strip()
  path = os.path.abspath(config.partition(":")[0])
  frames = [(f, line) for f, line in re.findall(r'File "([^"]+)", line (\d+)', text)
            if os.path.abspath(f) == path]
  if frames:
    path, line = frames[-1]
    return f"config file {path}, line {line}: {last}"
  if "get_config()" in last and "positional argument" in last:
    path, _, arg = config.partition(":")
    given = f"the argument {arg!r} after ':'" if arg else "no argument"
    return f"the config file {path}: its get_config() does not take {given} ({last})"
  return f"the config file {config}: {last}"


def _failed_config_file(values) -> str | None:
  """Why a config file (``--config``, ``--recipe``) could not be loaded, or None.

  ml_collections parses a missing or unreadable config file without error
  and raises only when the config is first read.
  """
  for name in values:
    value = values[name].value
    if type(value).__name__ == "_ErrorConfig":
      return _flag_error(object.__getattribute__(value, "_error"))
  return None


def _unloaded_config_file(error) -> str | None:
  """Why the config file could not be loaded, if that is what ``error`` comes from; else None.

  A ``--config.x.y=v`` override of a file that did not load raises from the
  failed load, as the cause (or context) of ``error``.
  """
  chain = []
  while error is not None and len(chain) < 10:
    chain.append(error)
    error = error.__cause__ or error.__context__
  if not any("failure to load" in str(e) or "Failed loading config file" in str(e)
             for e in chain):
    return None
  for e in chain:  # ml_collections' message with the path, or the OSError of the file
    if "Failed loading config file" in str(e) or (isinstance(e, OSError) and e.filename):
      return _flag_error(e)
  return _flag_error(chain[0])


def _config_file_error(error, argv) -> str | None:
  """``error`` raised by the code of a config file, as one line naming it; else None."""
  import traceback
  _, config = _config_argument(argv)
  path = os.path.abspath(config.partition(":")[0])
  if (isinstance(error, SyntaxError) and error.filename
      and os.path.abspath(error.filename) == path):
    return f"config file {error.filename}, line {error.lineno}: {error.msg}"
  if isinstance(error, AttributeError) and "has no attribute 'get_config" in str(error):
    return f"the config file {config.partition(':')[0]} has no get_config() function"
  # The config file's own line that led to the error (it may have been
  # raised in a module the file imports, e.g. configs/default.py).
  stack = traceback.extract_tb(error.__traceback__)
  own = [i for i, f in enumerate(stack) if os.path.abspath(f.filename) == path]
  if not own:
    return None
  frame = stack[own[-1]]
  if isinstance(error, SystemExit):
    code = "" if error.code is None else repr(error.code)
    return (f"config file {frame.filename}, line {frame.lineno}: it calls sys.exit({code}) "
            "instead of returning a config")
  # An import that fails inside a library (one whose version does not fit
  # the others) is not the config file's mistake: say where it happened.
  # (A module that does not parse has no frame of its own: its SyntaxError
  # names the place.)
  deeper = [(f.filename, f.lineno) for f in stack[own[-1] + 1:]]
  if isinstance(error, SyntaxError) and error.filename:
    deeper.append((error.filename, error.lineno))
  where = ""
  if deeper and (frame.line or "").startswith(("import ", "from ")):
    where = (f" (raised in {deeper[-1][0]}, line {deeper[-1][1]}, while a module "
             "that the config file imports was imported)")
  return (f"config file {frame.filename}, line {frame.lineno}: {type(error).__name__}: "
          f"{one_line(error)}{where}")


def key_flags(*holders) -> None:
  """Makes flags defined here for a command show in its ``--help``.

  absl's ``--help`` lists the flags the command's own file defines (its key
  flags); those a shared helper of these modules defines showed only under
  ``--helpfull``. The command is the main module, ``sys.argv[0]``, which is
  how absl names it.
  """
  from absl import flags
  for holder in holders:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


def define_model_flags(*, default_pretrained: str | None = None):
  """``--workdir``, ``--pretrained`` and ``--step``: the trained model a script reads.

  Exactly one of ``--workdir`` and ``--pretrained`` must be given, or neither
  when ``default_pretrained`` names a shipped model to use then.

  Returns:
    The three flag holders (workdir, pretrained, step).
  """
  from absl import flags
  workdir = flags.DEFINE_string("workdir", None, "Folder of a training run.")
  default = f"; {default_pretrained} when neither is given" if default_pretrained else ""
  pretrained = flags.DEFINE_string(
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

  Configuration, data, checkpoint and input problems (`hyperrecon_jax.errors`)
  and file-system failures (a missing file, a full disk: the environment's,
  not a bug) are the user's to fix, and a traceback would only hide the
  sentence that says how; Ctrl-C prints ``interrupted`` and exits with 130.
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
    app.run(main, flags_parser=parse_flags)
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
  are abandoned as their blocks would release them (`workdir.abandon`).
  """
  workdir = sys.modules.get("hyperrecon_jax.workdir")
  if workdir is not None:  # a lock still held: its stack did not unwind
    workdir.abandon()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
