"""Which experiment configurations can work: one ``ConfigError`` sentence for each that cannot.

``check_config`` turns every impossible setting of the task, data, model,
loss, sampling, training, evaluation and the report's evaluators into one
``ConfigError`` sentence naming the field, before anything is built or
written. The evaluators' own checks (`hyperrecon_jax.evaluators.check`) run
here and again in `evaluate.py`, over its overrides; the segmenter checks its
``segmenter`` settings itself.
"""

import math

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import metrics
from hyperrecon_jax import models
from hyperrecon_jax import sampling
from hyperrecon_jax import streams
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.train.configuration import ConfigError
from hyperrecon_jax.train.configuration import import_extensions
from hyperrecon_jax.train.configuration import missing_field

TASKS = ("csmri", "denoise", "superres")
# The most λ an evaluation scores, each on every slice of its split (10,000 λ
# on 24 slices take about 5 minutes on 2 CPU cores and a 53 MB
# lambda_grid.json); as many as `reconstruct.py` takes.
MAX_EVAL_LAMBDAS = 1_000_000
MASKS = ("poisson", "cartesian_random", "cartesian_equispaced")
# The largest seed: a run's streams use seeds up to s + 4 (`streams.OFFSETS`),
# and every consumer (NumPy's generators, jax.random.key) takes a
# non-negative 32-bit signed integer.
MAX_SEED = 2 ** 31 - 1 - max(streams.OFFSETS.values())
# The smallest image side: a multiple of 8 at least as wide as the SSIM
# window that validation scores with.
MIN_IMAGE_SIZE = 8 * math.ceil(metrics.SSIM_FILTER_SIZE / 8)
# What the step computes with: float32 has no larger number (one beyond it
# rounds to ∞, or to this within half a unit in the last place).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_config(config) -> None:
  """Raises ``ConfigError`` naming the first impossible setting.

  Args:
    config: a full experiment config (``experiments/configs/default.py``'s
      fields; a missing one is a ``ConfigError`` naming it).
  """
  try:
    _check_config(config)
  except (KeyError, AttributeError) as e:
    # The library has no defaults: a config built by hand may lack a field.
    error = missing_field(e)
    if error is None:
      raise
    raise error from None


def check_data_config(config) -> None:
  """`check_config`'s checks of what a segmenter reads: the data section and ``train.seed``.

  Raises:
    ConfigError: naming the first impossible setting (or a missing field).
  """
  try:
    _check_data(config)
    _check_seed(config.train.seed, "train.seed")
  except (KeyError, AttributeError) as e:
    error = missing_field(e, "the segmenter")
    if error is None:
      raise
    raise error from None


def _check_config(config) -> None:
  # The order decides which error a config with several impossible settings
  # gets, so a few fields are checked beside another section's.
  names = _check_losses(config)
  _check_data(config)
  _check_target_structure(config, names)
  _check_model(config)
  _check_fixed_lambdas(config, len(names))
  _check_sampling(config, names)
  _check_train(config)
  _check_hparams(config.hparams)
  _check_eval(config, len(names))
  _check_task(config.task, int(config.data.image_size))
  _check_evals(config)


def _check_losses(config) -> tuple[str, ...]:
  """The loss terms and their scales; returns the terms' names."""
  import_extensions(config)
  try:
    names = losses.check_names(tuple(config.losses))
  except ValueError as e:
    hint = (f" config.extensions is now {tuple(config.get('extensions', ()))}."
            if "unknown loss term" in str(e) else "")
    raise ConfigError(f"config.losses: {e}{hint}") from None
  k = len(names)
  if k < 2:
    raise ConfigError(f"config.losses needs at least 2 terms for a "
                      f"hypernetwork, got {names}")
  scales = config.loss_scales
  if not isinstance(scales, (tuple, list)) or len(scales) != k:
    raise ConfigError(f"config.loss_scales must hold one positive number per loss "
                      f"term, {k} for {names}, got {scales!r}")
  low, high = float(np.finfo(np.float32).tiny), FLOAT32_MAX
  if not all(_is_number(s) and low <= s <= high for s in config.loss_scales):
    # An infinite scale would silently drop its term (weight 1/∞); the step
    # divides by each scale in float32, where 1e-50 is 0 and 1e300 is ∞.
    raise ConfigError(f"config.loss_scales must be positive finite numbers that float32 "
                      f"holds ({low:.3g} to {high:.3g}), got {tuple(config.loss_scales)}")
  return names


def _check_target_structure(config, names: tuple[str, ...]) -> None:
  """Refuses HFEN as a loss term on data that keeps all-zero slices.

  The term divides by the target's Laplacian of Gaussian (`losses.hfen`),
  which is 0 on an all-zero slice: the first batch holding one makes the
  loss infinite, and the run stops at step 1 as if it had diverged.
  ``data.min_foreground`` > 0 drops such slices from MNI152 and NIfTI folders.
  """
  if ("hfen" in names and config.data.name in ("mni152", "nifti")
      and config.data.min_foreground == 0):
    raise ConfigError("config.losses holds 'hfen', which is infinite on a target slice "
                      "without structure (its Laplacian of Gaussian is 0, e.g. an all-zero "
                      "slice), and config.data.min_foreground=0 keeps the background slices: "
                      "set config.data.min_foreground above 0 (the default is 0.01)")


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
  # A config file may set an int field to True (ml_collections lets a bool
  # in), which trained as 1.
  return isinstance(value, int) and not isinstance(value, bool)


def _check_data(config) -> None:
  """The task's name and the size of the images the Unet reads."""
  if config.task.name not in TASKS:
    raise ConfigError(f"config.task.name must be one of {TASKS}, got "
                      f"{config.task.name!r}")
  size = config.data.image_size
  if not isinstance(size, int) or isinstance(size, bool) or size < MIN_IMAGE_SIZE or size % 8:
    raise ConfigError(f"config.data.image_size must be a multiple of 8 (the Unet pools 3 "
                      f"times) of at least {MIN_IMAGE_SIZE} (validation's SSIM needs "
                      f"{metrics.SSIM_FILTER_SIZE}×{metrics.SSIM_FILTER_SIZE}), got {size}")
  # Folders: free text that no list of choices checks; a number would fail
  # only where a path is made of it, in os.path, without the field's name.
  for field in ("manual_dir", "data_dir"):
    _require(isinstance(config.data[field], str),
             f"config.data.{field} must be a string (a folder, or '')", config.data[field])
  percentile = config.data.percentile
  if not (_is_number(percentile) and 0 < percentile <= 100):
    raise ConfigError(f"config.data.percentile must lie in (0, 100], got {percentile!r}")
  foreground = config.data.min_foreground
  if not (_is_number(foreground) and 0 <= foreground < 1):
    raise ConfigError(f"config.data.min_foreground must lie in [0, 1), got {foreground!r}")
  try:
    # Training learns from train and validates on validation: no
    # evaluation-only build (data.EVALUATION_ONLY).
    config_fields.check_fractions(config.data.split_fractions)
  except errors.InputError as e:
    raise ConfigError(f"config.data.{e}") from None
  _require(config.data.name in config_fields.DATASETS,
           f"config.data.name must be one of {config_fields.DATASETS}", config.data.name)
  axis = config.data.axis
  # A config built in Python may give the array axis (0, 1, 2); the field
  # is a string, and the command line's '1' is not an axis.
  if not (axis in config_fields.AXES or _is_integer(axis) and 0 <= axis <= 2):
    names = {str(v): k for k, v in config_fields.AXES.items()}
    index = axis.strip() if isinstance(axis, str) else None
    hint = (f" (array axis {index} is {names[index]!r}: give the name)"
            if index in names else "")
    raise ConfigError(f"config.data.axis must be one of {tuple(config_fields.AXES)}, got "
                      f"{axis!r}{hint}")
  threads = config.data.num_threads
  _require(isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0,
           "config.data.num_threads must be an integer ≥ 0 (0 reads on the caller's thread)",
           threads)
  _check_seed(config.data.split_seed, "data.split_seed")
  gap = config.data.gap_slices
  _require(isinstance(gap, int) and not isinstance(gap, bool) and gap >= 0,
           "config.data.gap_slices must be an integer ≥ 0", gap)
  # A factor of 1 − a < 0 would turn an image negative (then clipped to black).
  _require(_is_number(config.data.augment_intensity) and 0 <= config.data.augment_intensity < 1,
           "config.data.augment_intensity must lie in [0, 1)", config.data.augment_intensity)


def _check_model(config) -> None:
  """The hypernetwork's fields (a plain Unet, hyper_dim=0, reads none)."""
  if not _is_integer(config.model.hyper_dim) or config.model.hyper_dim < 0:
    raise ConfigError(f"config.model.hyper_dim must be an integer ≥ 0, got "
                      f"{config.model.hyper_dim}")
  _require(config.model.init_scheme in models.layers.INITS,
           f"config.model.init_scheme must be one of {models.layers.INITS}",
           config.model.init_scheme)
  _require(config.model.strategy in models.STRATEGIES,
           f"config.model.strategy must be one of {models.STRATEGIES}", config.model.strategy)
  # Read as comma-separated prefixes: a number would be named as a prefix.
  _require(isinstance(config.model.conditioned, str),
           "config.model.conditioned must be a string ('all' or comma-separated prefixes of "
           "Unet convolutions)", config.model.conditioned)
  if config.model.hyper_dim:
    if config.model.hyper_init not in models.HYPER_INITS:
      raise ConfigError(f"config.model.hyper_init must be one of "
                        f"{models.HYPER_INITS}, got {config.model.hyper_init!r}")
    try:
      models.conditioned_specs(config.model.channels, config.model.conditioned)
    except errors.InputError as e:
      raise ConfigError(f"config.model.{e}") from None


def _check_fixed_lambdas(config, k: int) -> None:
  """The λ a plain Unet (hparams.fixed) or a stack of them (hparams.baselines) trains at."""
  for lam in config.hparams.baselines:
    # A flat tuple, (0.2, 0.5), would fail in tuple() below without the field.
    if not isinstance(lam, (tuple, list)):
      raise ConfigError(f"config.hparams.baselines must be a tuple of λ, each a tuple of "
                        f"{k - 1} value{'s' * (k != 2)} in [0, 1] (e.g. ((0.2,), (0.5,))), got "
                        f"{tuple(config.hparams.baselines)}")
  stack = tuple(tuple(lam) for lam in config.hparams.baselines)
  fixed = tuple(config.hparams.fixed)
  # Checked for every run: each is bound to it on resume, so a typo stored in
  # a HyperRecon run (which does not read it) would refuse every resume
  # without that typo.
  if not all(_is_number(v) and 0.0 <= v <= 1.0 for v in fixed):
    raise ConfigError(f"config.hparams.fixed must lie in [0, 1], got {fixed}")
  # A stack's Unets train at its own λ: hparams.fixed is the single Unet's.
  if config.model.hyper_dim == 0 and not stack and len(fixed) != k - 1:
    raise ConfigError(f"a plain Unet (model.hyper_dim=0) trains at fixed λ: "
                      f"config.hparams.fixed needs {k - 1} values in [0, 1], "
                      f"got {fixed}")
  if stack:
    if config.model.hyper_dim:
      raise ConfigError("config.hparams.baselines lists plain Unets: it needs "
                        "config.model.hyper_dim=0")
    for lam in stack:
      if len(lam) != k - 1 or not all(_is_number(v) and 0.0 <= v <= 1.0 for v in lam):
        raise ConfigError(f"config.hparams.baselines: each λ needs {k - 1} "
                          f"values in [0, 1], got {lam}")
    if len(set(stack)) != len(stack):
      raise ConfigError(f"config.hparams.baselines repeats a λ: {stack}")
    # A stack answers each λ with the Unet of its float32 coefficients: a
    # second Unet of one weighting would be trained and never used.
    seen = {}
    for lam in stack:
      stored = tuple(float(v) for v in np.asarray(lam, np.float32))
      key = hparams.weighting(stored)
      if key in seen:
        earlier = seen[key]
        why = ("are one λ in float32, the precision the Unets train at"
               if tuple(float(v) for v in np.asarray(earlier, np.float32)) == stored
               else "weight the loss alike (where λ_k = 1 the later λ do not count)")
        raise ConfigError(f"config.hparams.baselines: λ = {earlier} and {lam} {why}, so one "
                          "Unet would answer for both; keep one of them")
      seen[key] = lam
  if config.model.hyper_dim == 0 and config.sampling.method != "uhs":
    # DHS ranks rows of different λ; at one fixed λ it would only drop the
    # images with the highest data-consistency loss from every batch.
    what = "baselines train" if stack else "a plain Unet (model.hyper_dim=0) trains"
    raise ConfigError(f"{what} at fixed λ: config.sampling.method must be 'uhs', got "
                      f"{config.sampling.method!r}")


def _check_sampling(config, names: tuple[str, ...]) -> None:
  """How λ are drawn (hparams.sampler) and which draws train (sampling)."""
  if config.hparams.sampler not in hparams.SAMPLERS:
    raise ConfigError(f"config.hparams.sampler must be one of "
                      f"{hparams.SAMPLERS}, got {config.hparams.sampler!r}")
  try:
    sampling.check_method(config.sampling.method, config.sampling.top_b,
                          config.train.batch_size, names)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.sampling.normalize not in sampling.NORMALIZE:
    raise ConfigError(f"config.sampling.normalize must be one of {sampling.NORMALIZE}, got "
                      f"{config.sampling.normalize!r}")


def _check_train(config) -> None:
  """The training loop's fields, between the model's dtype and its width."""
  if config.model.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"config.model.dtype must be 'float32' or 'bfloat16', "
                      f"got {config.model.dtype!r}")
  for field in ("batch_size", "num_steps", "log_every", "eval_every",
                "checkpoint_every", "lr_decay_every"):
    _require(_is_integer(config.train[field]) and config.train[field] >= 1,
             f"config.train.{field} must be an integer ≥ 1", config.train[field])
  # The state's step counter is an int32 (jax's default integer).
  _require(config.train.num_steps < 2**31, "config.train.num_steps must be < 2**31",
           config.train.num_steps)
  for field in ("max_to_keep", "eval_batches"):
    _require(_is_integer(config.train[field]) and config.train[field] >= 0,
             f"config.train.{field} must be an integer ≥ 0 (0: all)", config.train[field])
  _require(math.isfinite(config.train.lr) and 0 < config.train.lr <= FLOAT32_MAX,
           "config.train.lr must be a positive finite number", config.train.lr)
  _require(0 < config.train.lr_decay_factor <= 1,
           "config.train.lr_decay_factor must lie in (0, 1]",
           config.train.lr_decay_factor)
  _require(_is_integer(config.model.channels) and config.model.channels >= 1,
           "config.model.channels must be an integer ≥ 1", config.model.channels)
  _check_seed(config.train.seed, "train.seed")


def _check_hparams(hp) -> None:
  """The λ samplers' endpoint probability, its annealing and log_min."""
  _require(0 <= hp.endpoint_prob <= 1, "config.hparams.endpoint_prob must lie in [0, 1]",
           hp.endpoint_prob)
  final = hp.endpoint_prob_final
  if final is not None:
    _require(0 <= final <= 1, "config.hparams.endpoint_prob_final must lie in [0, 1]", final)
    _require(hp.sampler == "endpoints",
             "config.hparams.endpoint_prob_final anneals the 'endpoints' sampler; "
             "config.hparams.sampler", hp.sampler)
  _require(0 < hp.log_min < 1, "config.hparams.log_min must lie in (0, 1)", hp.log_min)


def _check_eval(config, k: int) -> None:
  """The evaluation's fields, with hparams.alpha before eval.chunk."""
  _require(config.eval.grid >= 2, "config.eval.grid must be ≥ 2 (λ values per axis, both "
           "ends included)", config.eval.grid)
  _require(config.eval.samples == 0 or config.eval.samples >= k,
           f"config.eval.samples must be 0 (a grid) or ≥ the {k} vertices of the simplex",
           config.eval.samples)
  check_eval_size(config.eval, k - 1)
  _require(config.eval.split in config_fields.SPLITS,
           f"config.eval.split must be one of {config_fields.SPLITS}", config.eval.split)
  _require(config.eval.gallery_size >= 1, "config.eval.gallery_size must be ≥ 1",
           config.eval.gallery_size)
  _require(math.isfinite(config.eval.gallery_tolerance_db)
           and config.eval.gallery_tolerance_db >= 0,
           "config.eval.gallery_tolerance_db must be ≥ 0", config.eval.gallery_tolerance_db)
  _require(math.isfinite(config.hparams.alpha) and config.hparams.alpha > 0,
           "config.hparams.alpha must be > 0", config.hparams.alpha)
  _require(config.eval.chunk >= 1, "config.eval.chunk must be ≥ 1",
           config.eval.chunk)


def check_report_design(config) -> None:
  """Refuses to train a model whose report would be refused: four or more
  terms without ``eval.samples`` (grids stop at two hyperparameters), or a
  plain Unet with one (it has one λ).

  For training only: a HyperRecon model of four or more terms trained so is
  still scored by a design given to ``evaluate.py --samples`` or the explorer.
  """
  k = len(config.losses)
  if not config.model.hyper_dim and not config.hparams.baselines:
    _require(config.eval.samples == 0, "a plain Unet has one λ, the one it trains at: "
             "config.eval.samples must be 0", config.eval.samples)
  if config.model.hyper_dim and k > 3:
    _require(config.eval.samples > 0, f"config.eval.samples must be > 0 for {k} loss terms "
             f"({k - 1} hyperparameters; grids stop at two): the size of the report's design "
             "on the simplex", config.eval.samples)


def _check_evals(config) -> None:
  """The report's evaluators and their settings, so that a run does not learn for hours
  to have its report refused (`evaluate.py` checks them again, with its own overrides)."""
  if config.get("evals") is None:
    return  # a config of before the evaluators were chosen: every one of them
  from hyperrecon_jax import evaluators  # they import this module
  try:
    # A report needs lambda_set, and evaluate.py's overrides can change an
    # evaluator's settings but not add one the stored config lacks.
    evaluators.check(config)
  except errors.InputError as e:
    raise ConfigError(str(e)) from None


def check_eval_size(eval_config, num_lambdas: int) -> None:
  """Refuses an evaluation of more than `MAX_EVAL_LAMBDAS` λ (``eval.samples``, or the grid).

  Args:
    eval_config: ``config.eval``.
    num_lambdas: the model's hyperparameters (a grid spans at most two).
  """
  samples, grid = eval_config.samples, eval_config.grid
  if samples > MAX_EVAL_LAMBDAS:
    raise ConfigError(f"config.eval.samples={samples:,}: more than {MAX_EVAL_LAMBDAS:,} λ, "
                      "each scored on every slice of the split")
  size = grid ** min(num_lambdas, 2)
  if not samples and size > MAX_EVAL_LAMBDAS:
    raise ConfigError(f"config.eval.grid={grid:,} gives {size:,} λ, more than "
                      f"{MAX_EVAL_LAMBDAS:,}, each scored on every slice of the split")


def _check_seed(value, field: str) -> None:
  # A negative seed failed in NumPy's generator only when the data or the
  # mask was built, without the field's name.
  _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED,
           f"config.{field} must be an integer from 0 to {MAX_SEED:,}", value)


def _require(ok: bool, message: str, value) -> None:
  if not ok:
    raise ConfigError(f"{message}, got {value!r}")


def _check_task(task, size: int) -> None:
  """The task's own fields (only those its operator reads)."""
  if task.name == "csmri":
    _require(math.isfinite(task.acceleration) and task.acceleration > 1,
             "config.task.acceleration must be > 1", task.acceleration)
    _require(task.mask in MASKS, f"config.task.mask must be one of {MASKS}",
             task.mask)
    _check_seed(task.mask_seed, "task.mask_seed")
    if task.mask != "poisson":  # read by the Cartesian masks only
      _require(0 < task.center_fraction < 1,
               "config.task.center_fraction must lie in (0, 1)",
               task.center_fraction)
    _require(_is_number(task.noise_sigma) and 0 <= task.noise_sigma <= FLOAT32_MAX,
             "config.task.noise_sigma must be a finite number ≥ 0", task.noise_sigma)
  elif task.name == "denoise":
    # σ = 0 makes the input the ground truth: no task to learn, and its PSNR is
    # infinite, which leaves every slice out of the statistics.
    _require(_is_number(task.sigma) and 0 < task.sigma <= FLOAT32_MAX,
             "config.task.sigma must be a finite number > 0 (the noise's standard deviation)",
             task.sigma)
  elif task.name == "superres":
    _require(isinstance(task.factor, int) and task.factor >= 2,
             "config.task.factor must be an integer ≥ 2", task.factor)
    _require(size % task.factor == 0,
             f"config.data.image_size={size} must be divisible by "
             "config.task.factor", task.factor)
