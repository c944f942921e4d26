"""The commands' flags: absl parsing whose mistakes, and a config file's, are one line.

A bad flag, a ``--config.a.b=v`` override of no field, or a config file that
does not parse, raises or exits is one ``error: …`` line with exit status 2
(`parse_flags`), naming the flag as the command names it (`config_flag_names`).
"""

import os
import re
import sys

from absl import logging
from cli import one_line


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

  Pass as ``app.run(main, flags_parser=cli_flags.parse_flags)`` (`cli.run` does).
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
  # The project's own errors say what is wrong in words; their class's dotted
  # name (hyperrecon_jax.train.configuration.ConfigError) adds nothing.
  last = re.sub(r"^hyperrecon_jax(\.\w+)*\.\w*Error: ", "", last)
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


def _is_json_object(path: str) -> bool:
  """Whether the file at ``path`` is a JSON object (False if unreadable)."""
  import json
  try:
    with open(path, "rb") as f:
      return isinstance(json.loads(f.read()), dict)
  except (OSError, ValueError):
    return False


def _is_text(path: str) -> bool:
  """Whether ``path`` is UTF-8 text without NUL bytes, as Python source is (True if unreadable)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return True
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return b"\0" not in data


def _config_file_error(error, argv) -> str | None:
  """``error`` raised by the code of a config file, as one line naming it; else None."""
  import traceback
  _, config = _config_argument(argv)
  path = os.path.abspath(config.partition(":")[0])
  if (isinstance(error, SyntaxError) and error.filename
      and os.path.abspath(error.filename) == path):
    return f"config file {error.filename}, line {error.lineno}: {error.msg}"
  if _is_json_object(path):
    # A run's config.json: Python read its `false` as a name ("NameError:
    # name 'false' is not defined"), which said nothing of the mistake.
    return (f"the config file {config.partition(':')[0]} holds JSON (a run's config.json?), "
            "not Python: --config takes a .py file whose get_config() returns the config "
            "(experiments/configs/); a run resumes with the file it was trained with, and "
            "evaluate.py, reconstruct.py and explore.py read its stored config from --workdir")
  if isinstance(error, AttributeError) and "has no attribute 'get_config" in str(error):
    return f"the config file {config.partition(':')[0]} has no get_config() function"
  if isinstance(error, (SyntaxError, ValueError)) and not _is_text(path):
    # A binary file (a scan, an archive) given as the config: Python's
    # compile error names no file or line, and ended in a traceback.
    return (f"the config file {config.partition(':')[0]} is not Python source "
            f"({one_line(error)}): --{_config_argument(argv)[0]} takes a .py file whose "
            "get_config() returns the experiment's config")
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
