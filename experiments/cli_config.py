"""The config flag of the experiment scripts: a config file, its overrides checked by field."""

import os
import sys

import cli
import cli_flags

# The shipped config files; `define_config_file` makes them importable.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def default_config():
  """``configs/default.py``'s config: every field, with its default."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "default_config", os.path.join(CONFIGS_DIR, "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# What unsets a field that configs/default.py leaves unset (a placeholder,
# e.g. hparams.endpoint_prob_final) on the command line: ml_collections
# parses such a field with its type's parser, which takes no None.
UNSET_WORDS = ("None", "none")
# The dotted fields `define_config_file` took out of the command line to
# unset, by config flag.
_unset_fields: dict[str, list[str]] = {}


def define_config_file(help_string: str, *, name: str = "config", default: str | None = None):
  """``--config`` (or ``--NAME``): a config file, whose fields ``--config.a.b=v`` overrides.

  A field that ``configs/default.py`` leaves unset (None) also takes
  ``--config.FIELD=None`` (or ``none``), which unsets it where the config
  file sets it. Such overrides are taken out of ``sys.argv`` here, before
  absl parses it, and applied by `checked_config`.

  Args:
    help_string: the flag's help.
    name: the flag's name, which the overrides and the error messages use.
    default: the config file read when the flag is not given (``path[:arg]``);
      None: none.

  Returns:
    The ``DEFINE_config_file`` flag holder (a locked config).
  """
  from ml_collections import config_flags
  cli.expand_home(sys.argv, name)
  # A config file of the user's own, outside experiments/configs, starts
  # from the shipped ones as they do (`import default`, `import demo_ao`).
  # Appended: a module of the same name on the user's own path comes first.
  if CONFIGS_DIR not in sys.path:
    sys.path.append(CONFIGS_DIR)
  _unset_fields[name] = _take_unset_overrides(sys.argv, name, has_default=default is not None)
  try:
    holder = config_flags.DEFINE_config_file(name, default, help_string, lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # A default file is loaded, and the overrides applied to it, as the flag
    # is defined: before `cli_flags.parse_flags` could name a bad one.
    print(f"error: {override_error(e, sys.argv, [name])}", file=sys.stderr)
    sys.exit(2)
  cli.key_flags(holder)
  return holder


def _placeholder_fields(template, prefix: str = "") -> list[str]:
  """The fields that a config leaves unset.

  Args:
    template: a config (``configs/default.py``'s) or one of its sections.
    prefix: the section's dotted name and a dot ('' for the config).

  Returns:
    The dotted names of the fields that are None.
  """
  import ml_collections
  found = []
  for key, value in template.items():
    if isinstance(value, ml_collections.ConfigDict):
      found += _placeholder_fields(value, f"{prefix}{key}.")
    elif value is None:
      found.append(prefix + key)
  return found


def _take_unset_overrides(argv: list[str], name: str, has_default: bool = False) -> list[str]:
  """Removes from ``argv`` the overrides that unset a field unset by default.

  Overrides given before ``--config`` are left to ml_collections, which
  refuses them. An unset followed by another value of the same field gives
  way to that value, as repeated overrides do.

  Args:
    argv: the command line, changed in place.
    name: the config flag's name.
    has_default: whether the flag has a default file, which overrides apply
      to when the command line names none.

  Returns:
    The dotted fields to unset, in order.
  """
  prefixes = (f"--{name}.", f"-{name}.")
  start = next((i for i, arg in enumerate(argv)
                if arg in (f"--{name}", f"-{name}")
                or arg.startswith((f"--{name}=", f"-{name}="))), None)
  if start is None and not has_default:
    return []
  start = start or 0
  overrides = []  # (field, value, the indices it spans)
  end = argv.index("--", start) if "--" in argv[start:] else len(argv)
  for i in range(start + 1, end):  # what follows `--` is not a flag
    if not argv[i].startswith(prefixes):
      continue
    field, eq, value = argv[i].partition(".")[2].partition("=")
    if eq:
      overrides.append((field, value, (i,)))
    elif i + 1 < end:
      overrides.append((field, argv[i + 1], (i, i + 1)))
  if not any(value in UNSET_WORDS for _, value, _ in overrides):
    return []
  placeholders = set(_placeholder_fields(default_config()))
  last = {field: value for field, value, _ in overrides}
  unset = [field for field in last if field in placeholders and last[field] in UNSET_WORDS]
  dropped = {i for field, value, span in overrides if field in placeholders
             and (value in UNSET_WORDS or field in unset) for i in span}
  argv[:] = [arg for i, arg in enumerate(argv) if i not in dropped]
  return unset


def checked_config(holder):
  """The config of a `define_config_file` flag, with exactly the fields of ``configs/default.py``.

  A config file that drops a field (or empties a section, or sets a field to
  None) would fail deep in a run with a bare ``AttributeError`` or
  ``TypeError``; one that adds a field (``train.learning_rate`` for
  ``train.lr``) would have it silently ignored.

  Args:
    holder: the ``DEFINE_config_file`` flag holder.

  Returns:
    The config, its ``data.manual_dir`` made absolute: the run's files name
    the folder it read, wherever a later command starts; ``losses`` given as
    ``dc,tv`` split into its names (``extensions`` likewise), its
    ``extensions`` imported; the fields given ``--config.FIELD=None`` unset
    (`define_config_file`), and among the flag's ``override_values``.

  Raises:
    InputError: naming the first missing, unknown or None field (with the
      closest known name), or a config that is not a ``ConfigDict``.
  """
  from absl import flags
  import ml_collections

  from hyperrecon_jax import errors
  config = holder.value
  path = flags.FLAGS[holder.name].config_filename.partition(":")[0]
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.InputError(
        f"get_config() of {path} returned a {type(config).__name__}, not an "
        "ml_collections.ConfigDict: start from configs/default.py's get_config()")
  template = default_config()
  _compare(template, config, "config", path)
  overrides = flags.FLAGS[holder.name].override_values
  for field in _unset_fields.get(holder.name, ()):
    *sections, key = field.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[key] = None
    overrides[field] = None
  _refuse_text_in_numbers(overrides, template, holder.name)
  from hyperrecon_jax.data import locations
  with config.unlocked():
    config.data.manual_dir = locations.absolute_folder(config.data.manual_dir)
    config.data.data_dir = locations.absolute_folder(config.data.data_dir)
    # ml_collections reads --config.losses=dc,tv (no brackets) as the one name
    # 'dc,tv'; no term's or module's name holds a comma, so it can only mean the list.
    for field in ("losses", "extensions"):
      if any("," in str(name) for name in config[field]):
        config[field] = tuple(part.strip() for name in config[field]
                              for part in str(name).split(",") if part.strip())
  from hyperrecon_jax import losses
  from hyperrecon_jax.train import configuration
  # Before a multi-process run is joined: a module that does not import stops
  # this process alone (check_config imports it again, at no cost).
  configuration.import_extensions(config)
  # Registered by the config file itself; a name registered nowhere (a typo
  # of a built-in one) is named by the config check with the known terms.
  own = [n for n in config.losses if n not in losses.BUILT_IN and n in losses.TERMS]
  if own and not config.extensions:
    # A term registered by the config file alone is unknown to the commands
    # that load the run later (evaluate.py, reconstruct.py, explore.py).
    raise errors.InputError(
        f"config.losses names loss terms of your own, {own}, but config.extensions is "
        f"empty: name the module that registers them (e.g. c.extensions = ('my_terms',)), "
        f"so that every command that loads this run registers them too.")
  return config


# Fields of tuples of numbers whose default, (), does not show it.
_TUPLES_OF_NUMBER_TUPLES = ("hparams.baselines",)


def _refuse_text_in_numbers(overrides, template, flag: str = "config") -> None:
  """Refuses an override of a tuple of numbers that ml_collections kept as text.

  ml_collections parses ``--config.hparams.fixed="(0.1, nan)"`` with
  ``ast.literal_eval``, which takes no ``nan`` or ``inf``, and keeps the
  whole text as the tuple's one element: the config check would quote that
  text, not the element at fault.

  Args:
    overrides: ``{dotted field: value}`` of the ``--config.FIELD`` flags given.
    template: the default config, whose tuples of numbers say which fields
      hold numbers.
    flag: the config flag's name, as the message names the override.

  Raises:
    InputError: naming the flag and its first element that is not a finite
      number.
  """
  import math

  from hyperrecon_jax import errors
  for field, value in overrides.items():
    if (field in _TUPLES_OF_NUMBER_TUPLES and isinstance(value, tuple)
        and any(isinstance(v, str) for v in value)):
      # A text ml_collections could not parse comes back one character apiece.
      text = ("".join(value) if all(isinstance(v, str) and len(v) == 1 for v in value)
              else ", ".join(str(v) for v in value))
      raise errors.InputError(
          f"--{flag}.{field}={text}: not a tuple of tuples of finite numbers (nan, inf "
          f"or a word is not one); config.{field} holds λ, e.g. ((0.2,), (0.5,))")
    default = template
    for part in field.split("."):
      default = default.get(part) if hasattr(default, "get") else None
    if not (isinstance(default, tuple) and default
            and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default)
            and isinstance(value, tuple) and any(isinstance(v, str) for v in value)):
      continue
    text = ", ".join(str(v) for v in value)
    elements = [e.strip() for e in text.strip().strip("()[]").split(",")]
    for i, element in enumerate(elements, 1):
      try:
        finite = math.isfinite(float(element))
      except ValueError:
        finite = False
      if not finite:
        raise errors.InputError(
            f"--{flag}.{field}={text}: element {i}, {element!r}, is not a finite number; "
            f"config.{field} holds numbers, e.g. {default}")
    raise errors.InputError(f"--{flag}.{field}={text}: not a tuple of numbers; config.{field} "
                            f"holds numbers, e.g. {default}")


def closest_field(key: str, fields) -> str | None:
  """The field of ``fields`` that ``key`` most likely meant, or None.

  A close spelling (``batchsize``), the initials of ``key``'s words
  (``learning_rate`` → ``lr``), or a field whose words hold ``key``'s
  (``steps`` → ``num_steps``), in that order.
  """
  import difflib
  fields = sorted(fields)
  close = difflib.get_close_matches(key, fields, n=1)
  if close:
    return close[0]
  words = [w for w in key.lower().split("_") if w]
  initials = "".join(w[0] for w in words)
  if len(words) > 1 and initials in fields:
    return initials
  holding = [f for f in fields if set(words) <= set(f.split("_"))]
  return holding[0] if len(holding) == 1 else None


def _compare(template, node, name: str, path: str) -> None:
  """Raises ``InputError`` at the first field where ``node`` departs from ``template``."""
  import ml_collections

  from hyperrecon_jax import errors
  if not isinstance(node, ml_collections.ConfigDict):
    raise errors.InputError(f"the config of {path} sets {name} to {node!r}: it is a section "
                            f"of fields ({', '.join(sorted(template))})")
  for key, default in template.items():
    field = f"{name}.{key}"
    if key not in node and name == "config.evals":
      continue  # an evaluator left out of the report (docs/configs.md)
    if key not in node:
      raise errors.InputError(f"the config of {path} has no {field}: a config starts from "
                              "configs/default.py's get_config() and changes its fields")
    value = node[key]
    if isinstance(default, ml_collections.ConfigDict) and default:
      _compare(default, value, field, path)
    elif value is None and default is not None:
      raise errors.InputError(f"the config of {path} sets {field} to None; it needs a "
                              f"{type(default).__name__} (default {default!r})")
  for key in node:
    if key not in template:
      close = closest_field(key, template)
      hint = (f" (did you mean {close}?)" if close else
              f"; {name}'s fields: {', '.join(sorted(template))}")
      raise errors.InputError(f"the config of {path} sets {name}.{key}, which is not a "
                              f"field{hint}")


def override_error(error, argv, names=None) -> str:
  """An override that names no field, as one line naming the flag and the known fields.

  Args:
    error: ml_collections' error.
    argv: the command line.
    names: the config flags' names; None: those the command defines
      (`cli_flags.config_flag_names`).

  Returns:
    The message.
  """
  # ml_collections reports an unknown field as the repr of a KeyError.
  text = cli.one_line(str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'"))
  key = text.split()[0].strip("'\"") if text else ""
  names = names or cli_flags.config_flag_names()
  for arg in argv[1:]:
    path = arg.split("=", 1)[0]
    name = path[2:].split(".", 1)[0]
    if (not path.startswith("--") or name not in names or "." not in path
        or key not in path.split(".")[1:]):
      continue
    parts = path[len(f"--{name}."):].split(".")
    parent = parts[:parts.index(key)]
    node = default_config()
    for part in parent:
      node = node.get(part) if hasattr(node, "get") else None
    section = ".".join(["config", *parent])
    known = ((f"; its fields: {', '.join(sorted(node))}" if len(node) else "; it has no fields")
             if hasattr(node, "keys") else "")
    hint = f" ({text.split(' ', 1)[1]})" if " " in text else ""
    close = closest_field(key, node) if hasattr(node, "keys") else None
    if close and "did you mean" not in hint.lower():
      hint = f" (did you mean {close}?)"
    return f"bad override {path}: {section} has no field {key!r}{hint}{known}"
  given = [arg[2:].split(".", 1)[0] for arg in argv[1:] if arg.startswith("--") and "." in arg]
  name = next((n for n in given if n in names), names[0])
  return f"bad --{name} override: {text}"
