"""The full experiment configuration: stored configs, their extensions, their model in words.

The configs themselves are files: ``experiments/configs/default.py`` writes out
every field, and the other experiment files start from it and change what they
need. ``from_stored`` reads the config of a stored run, also one written by an
older version, and imports the modules that register its own loss terms. Which
settings are possible: `hyperrecon_jax.train.config_checks`. What a run is
bound to: `hyperrecon_jax.train.run_fields`.
"""

import copy
import functools
import importlib
import re
import sys

import ml_collections

from hyperrecon_jax import errors


def default_evals() -> dict:
  """The evaluators of a report and their settings (`hyperrecon_jax.evaluators`).

  ``lambda_set.segmenter``: the folder of a segmenter (``experiments/segmenter.py``)
  of this data, to score every reconstruction's Dice too ('' for none).
  ``baselines.workdir``: a run of per-λ Unets (``experiments/baselines.py``) to
  score beside the model ('' for none). ``dhs_replay.batches``: train batches
  replayed for a DHS run's histogram. ``figures.panel_lambdas``: λ shown in
  ``slices.png``.
  """
  return {"lambda_set": {"segmenter": ""}, "baselines": {"workdir": ""}, "objective": {},
          "loss_terms": {}, "split_gallery": {}, "dhs_replay": {"batches": 100},
          "figures": {"panel_lambdas": 5}}


# Fields added to the config after runs had been stored without them, each with
# the value that reproduces how those runs were trained (`from_stored`).
ADDED_FIELDS = (
    # The stacks of plain Unets: every earlier run trained one network.
    ("hparams.baselines", ()),
    # The annealed endpoint probability: earlier runs kept endpoint_prob.
    ("hparams.endpoint_prob_final", None),
    # The offset initialization and partial conditioning: earlier runs
    # generated every convolution from the reference's initialization.
    ("model.hyper_init", "reference"),
    ("model.conditioned", "all"),
    # Samplers on the simplex and evaluation over a design: earlier runs
    # sampled λ on the cube and were evaluated on grids.
    ("hparams.alpha", 1.0),
    ("eval.samples", 0),
    ("eval.gallery_size", 4),
    ("eval.gallery_tolerance_db", 1.0),
    # Reports chosen by config: earlier runs were evaluated by every evaluator.
    ("evals", default_evals()),
    # DHS's normalization batch: earlier runs normalized over the kept rows.
    ("sampling.normalize", "kept"),
    # Modules registering loss terms of a user's own: earlier runs had none.
    ("extensions", ()),
    # Own terms' values on a probe, checked on load: earlier runs recorded none.
    ("term_probes", {}),
    # The tissue segmenter's settings (segmentation.settings): configs written
    # before it have none, so a shipped model's config starts one with
    # default.py's.
    ("segmenter", ml_collections.ConfigDict(dict(channels=0, steps=1000, lr=1e-3))),
)


class ConfigError(errors.InputError):
  """A configuration that cannot work, with a message saying why."""


def missing_field(e: Exception, reader: str = "the library") -> "ConfigError | None":
  """The `ConfigError` naming a field a config lacks, if ``e`` is ml_collections' KeyError.

  A ``ConfigDict`` raises ``KeyError`` for a missing item and an
  ``AttributeError`` (from that ``KeyError``) for a missing attribute; any
  other exception gives None.
  """
  if isinstance(e, AttributeError) and isinstance(e.__context__, KeyError):
    field = str(e).strip("'\"")
  elif isinstance(e, KeyError):
    field = str(e).strip("'\"").split("'")[0]
  else:
    return None
  tb = e.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  if tb is None or "ml_collections" not in tb.tb_frame.f_code.co_filename:
    return None
  return ConfigError(f"the config lacks a field {reader} reads ({field}); start from "
                     "experiments/configs/default.py's get_config() (in the repository) "
                     "or a shipped model's config (hyperrecon_jax.pretrained.load(NAME)[0]), "
                     "which have every field")


def names_missing_fields(fn):
  """``fn(config, ...)`` with a field its config lacks raised as a `ConfigError` naming it."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except (KeyError, AttributeError) as e:
      error = missing_field(e)
      if error is None:
        raise
      raise error from None
  return wrapper


def from_stored(stored) -> ml_collections.ConfigDict:
  """The config of a stored run: a workdir's or a shipped model's config dict.

  A config written by an older version lacks the fields added since; they get
  the values of `ADDED_FIELDS`, which reproduce how that run was trained. The
  modules of its ``extensions`` are imported, so its own loss terms are
  registered (`import_extensions`).

  Args:
    stored: the config as a dict, e.g. from JSON.

  Returns:
    A ``ConfigDict``.

  Raises:
    ConfigError: a module of ``extensions`` does not import, none of them
      registers a loss term of the run, or a term of the run computes other
      values than when it was trained (`term_probes.check`): a module that
      changed since training.
  """
  config = ml_collections.ConfigDict(stored)
  for dotted, value in ADDED_FIELDS:
    *sections, name = dotted.split(".")
    node = config
    for section in sections:
      node = node.get(section) if isinstance(node, ml_collections.ConfigDict) else None
    # A config without the section is no config of any version: left for the
    # reader of the section to name.
    if isinstance(node, ml_collections.ConfigDict) and name not in node:
      node[name] = copy.deepcopy(value)
  import_extensions(config)
  _check_registered(config)
  from hyperrecon_jax.train import term_probes
  term_probes.check(config)
  return config


def _check_registered(config) -> None:
  """Refuses a stored run whose loss terms its extensions did not register.

  Said when the run loads, as a module that does not import is, rather than
  by the first reader of the terms, after its work (an evaluation's objective).
  """
  from hyperrecon_jax import losses
  names = config.get("losses")
  if not isinstance(names, (tuple, list)):
    return  # not a config of any version: left for the config check to name
  unknown = [n for n in names if isinstance(n, str) and n not in losses.TERMS]
  if unknown:
    modules = tuple(config.get("extensions", ()))
    files = [getattr(sys.modules.get(m), "__file__", None) for m in modules]
    where = "".join(f", {m!r} from {f}" for m, f in zip(modules, files) if f)
    raise ConfigError(
        f"the run's loss term(s) {unknown} of config.losses {tuple(names)} are registered by "
        f"none of its modules: config.extensions {modules} imported{where}, but did not "
        f"register them (hr.losses.register_term); make importable the module that registered "
        f"them when the run was trained (known terms: {sorted(losses.TERMS)})")


def import_extensions(config) -> None:
  """Imports the modules of ``config.extensions``, which register the run's own loss terms.

  Importing is idempotent (a module already imported is not run again), so
  every reader of a config may call this.

  Raises:
    ConfigError: ``extensions`` is not a sequence of module names, or one
      does not import (named, with the error it raised).
  """
  modules = config.get("extensions", ())
  if isinstance(modules, str) or not isinstance(modules, (tuple, list)) or not all(
      isinstance(m, str) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", m)
      for m in modules):
    raise ConfigError(f"config.extensions must be a sequence of Python module names "
                      f"(e.g. ('my_lab.terms',)), got {modules!r}")
  files = [m for m in modules if m.endswith(".py")]
  if files:  # a valid dotted name, whose import error would speak of packages
    raise ConfigError(
        f"config.extensions names modules, not files: give {files[0][:-3]!r} for "
        f"{files[0]!r}, with its folder on PYTHONPATH")
  for name in modules:
    try:
      importlib.import_module(name)
    except Exception as e:  # any error of the user's module is theirs to see, by name
      raise ConfigError(
          f"config.extensions: importing {name!r} failed ({type(e).__name__}: {e}); the "
          f"module registers this run's own loss terms and must be importable (its folder "
          f"on PYTHONPATH) in every process that trains or loads the run") from None


# What every stored config of any version has; a config.json without one of
# them was written by another program.
SECTIONS = ("data", "task", "losses", "loss_scales", "model", "hparams", "train")


def missing_sections(stored) -> list[str]:
  """The `SECTIONS` a stored config dict lacks (all of them if it is no dict)."""
  if not isinstance(stored, dict):
    return list(SECTIONS)
  return [s for s in SECTIONS if s not in stored]


def describe_model(config) -> str:
  """What a config's model is, in words: HyperRecon, a plain Unet or a stack of them."""
  if config.model.hyper_dim:
    return "a HyperRecon model"
  stack = tuple(config.hparams.baselines)
  if stack:
    return (f"a stack of {len(stack)} per-λ Unets (experiments/baselines.py), each trained "
            "at its own λ")
  lam = ", ".join(f"{v:g}" for v in config.hparams.fixed)
  return f"a plain Unet trained at one λ = ({lam})"


def num_coeffs(config) -> int:
  """K, the number of loss terms (and of coefficients the hypernetwork reads)."""
  return len(tuple(config.losses))


def num_lambdas(config) -> int:
  """K − 1, the number of hyperparameters λ of a config's loss."""
  return num_coeffs(config) - 1
