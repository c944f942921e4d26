"""A report's settings flags (``evaluate.py``): ``--config.eval.*``, ``--grid`` and the rest."""

import sys

import cli
import cli_config


def define_report_settings():
  """``--config.eval.*`` and ``--config.evals.*``: a report's settings, over the model's own.

  The flag's values are the default config's (``configs/default.py``) and only
  those given on the command line replace the stored config's
  (`report_overrides`), e.g. ``--config.eval.samples=1000`` or
  ``--config.evals.baselines.workdir=DIR``; their types are checked as the
  flags are parsed.

  Returns:
    The flag holder.
  """
  import ml_collections
  from ml_collections import config_flags
  full = cli_config.default_config()
  template = ml_collections.ConfigDict({"eval": full.eval, "evals": full.evals})
  try:
    # A config-dict flag reads its overrides from sys.argv as it is defined.
    holder = config_flags.DEFINE_config_dict(
        "config", template, "A report's settings: --config.eval.FIELD (grid, samples, split, "
        "chunk, gallery_size, gallery_tolerance_db) and --config.evals.EVALUATOR.FIELD "
        "(lambda_set.segmenter, baselines.workdir, dhs_replay.batches, "
        "figures.panel_lambdas); the model's config gives the rest.")
    cli.key_flags(holder)
    return holder
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    print(f"error: bad --config override: {cli.one_line(text)}; a report's settings are "
          "--config.eval.FIELD and --config.evals.EVALUATOR.FIELD", file=sys.stderr)
    sys.exit(2)


def define_report_shorthands():
  """``--grid``, ``--samples``, ``--split``, ``--baselines``: the usual report settings.

  Each sets one field of `define_report_settings` (``--grid=G`` is
  ``--config.eval.grid=G``); giving a field both ways is an error
  (`report_overrides`).

  Returns:
    ``{dotted field: flag holder}``.
  """
  from absl import flags
  holders = {
      "eval.grid": flags.DEFINE_integer(
          "grid", None, "λ values per hyperparameter (--config.eval.grid)."),
      "eval.samples": flags.DEFINE_integer(
          "samples", None, "N points of a design on the simplex instead of a grid, for any "
          "number of loss terms (--config.eval.samples)."),
      "eval.split": flags.DEFINE_string(
          "split", None, "train, validation or test (--config.eval.split)."),
      "evals.baselines.workdir": cli.define_path(
          "baselines", None, "A run of per-λ Unets (experiments/baselines.py) to score beside "
          "the model (--config.evals.baselines.workdir)."),
  }
  cli.key_flags(*holders.values())
  return holders


def report_overrides(holder, shorthands=None) -> dict:
  """The report settings given on the command line, ``{dotted field: value}``.

  Args:
    holder: from `define_report_settings`.
    shorthands: from `define_report_shorthands`, if the script has them.

  Raises:
    InputError: a setting given both as a shorthand and as ``--config.FIELD``.
  """
  from absl import flags

  from hyperrecon_jax import errors
  overrides = dict(flags.FLAGS[holder.name].override_values)
  for field, flag in (shorthands or {}).items():
    if flag.value is None:
      continue
    if field in overrides:
      raise errors.InputError(f"--{flag.name} and --config.{field} set the same setting: "
                              "give one of them")
    overrides[field] = flag.value
  return overrides


def report_settings(holder, overrides):
  """The settings of `define_report_settings` with ``overrides`` applied, to check them.

  The overrides are the holder's own and the shorthands', whose flags have
  their fields' types, so applying them cannot fail.
  """
  settings = holder.value.copy_and_resolve_references()
  settings.update_from_flattened_dict(overrides)
  return settings
