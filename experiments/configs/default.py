r"""The default experiment: every field of a config, and the ``:quick`` variant.

CS-MRI 8× (Poisson disc) on 256×256 slices of the embedded MNI152 brain, MAE +
SSIM, HyperRecon-L. The library has no defaults of its own: it reads every
field it needs from the config and names a missing one in its error. So every
other file of this folder starts from ``default.get_config()``, changes what
its experiment needs and ends with ``default.variant(c, arg)`` (demo.py shows
how it imports this file).

  python experiments/train.py --config=experiments/configs/default.py \
      --workdir=workdirs/default

``:quick`` (``--config=experiments/configs/FILE.py:quick``) shrinks any
experiment to a few seconds on a CPU, for tests.
"""

import ml_collections

from hyperrecon_jax import data
from hyperrecon_jax.train import configuration


def get_config(arg=None) -> ml_collections.ConfigDict:
  """The complete default config, changed by ``variant(arg)``.

  Args:
    arg: the text after ``:`` in ``--config=default.py:arg`` (or None).

  Returns:
    A ``ConfigDict`` with sections ``task``, ``data``, ``model``, ``hparams``,
    ``sampling``, ``train``, ``eval``, ``evals`` and ``segmenter``, and the
    fields ``losses``, ``loss_scales``, ``extensions`` and ``term_probes``.
  """
  c = ml_collections.ConfigDict()
  # The forward operator (physics.make_operator) reads only the fields of its
  # task; the others are kept so that an override of the name is enough.
  c.task = ml_collections.ConfigDict(dict(
      name="csmri",  # 'csmri' | 'denoise' | 'superres'
      # csmri: the undersampling factor; the mask, 'poisson',
      # 'cartesian_random' or 'cartesian_equispaced', and its seed; the fully
      # sampled central fraction of a Cartesian mask; the k-space noise.
      acceleration=8.0, mask="poisson", mask_seed=0, center_fraction=0.08,
      noise_sigma=0.0,
      sigma=0.1,  # denoise: the noise
      factor=4))  # superres: the downsampling factor
  c.data = ml_collections.ConfigDict(dict(
      name="mni152",  # 'mni152' | 'fastmri_knee' | 'nifti'
      # Folder of the user's files (fastmri_knee, nifti).
      manual_dir="",
      # Where built datasets are cached: $HYPERRECON_DATA_DIR when set (read
      # when this function runs), else ~/.cache/hyperrecon_jax/
      # tensorflow_datasets; '' means the same.
      data_dir=data.default_data_dir(),
      image_size=256,  # side of the square images
      # Slicing axis of brain volumes: 'axial', 'coronal' or 'sagittal'.
      axis="axial",
      augment_flip=False,  # random left-right and up-down flips in training
      # Random intensity scale in [1 - a, 1 + a] in training.
      augment_intensity=0.0,
      # (train, validation, test) fractions of volumes (fastmri_knee, nifti)
      # or of the usable slices (mni152).
      split_fractions=(0.7, 0.1, 0.2),
      split_seed=0,  # seed of the volume split (fastmri_knee, nifti)
      gap_slices=8,  # unused slices between split blocks (mni152)
      # Slices with less foreground than this fraction of their area are
      # dropped as background (mni152, nifti).
      min_foreground=0.01,
      percentile=99.5,  # intensity percentile mapped to 1 (mni152, nifti)
      num_threads=2))  # background threads reading batches
  c.model = ml_collections.ConfigDict(dict(
      hyper_dim=128, channels=32, batch_norm=True, init_scheme="torch",
      strategy="auto", dtype="float32",
      # How the hypernetwork's projections start: 'reference' (the paper's
      # code) or 'offset' (every λ starts as one plain Unet; the hypernetwork
      # learns a λ-dependent offset to its weights).
      hyper_init="reference",
      # Convolutions generated from λ: 'all' (the paper's) or comma-separated
      # name prefixes, e.g. 'dec,head'; the others are shared by every λ.
      conditioned="all"))
  c.losses = ("mae", "ssim")
  # s_k of the paper (α_k = 1/s_k): the reference's mean test losses of MAE
  # and 1 − SSIM. experiments/baselines.py measures them for other data and
  # terms (<workdir>/baselines.json) and prints the override.
  c.loss_scales = (0.0556, 0.322)
  # Python modules (importable names, e.g. 'my_lab.terms') imported before
  # the config is checked, in every process that trains or loads the run:
  # each registers loss terms of its own (hr.losses.register_term) that
  # `losses` names.
  c.extensions = ()
  # Written by training, not set: each own term's values on a fixed probe
  # (train.term_probes), by which a run is checked when it loads.
  c.term_probes = {}
  c.hparams = ml_collections.ConfigDict(dict(
      # 'uniform' | 'endpoints' | 'log_uniform' (λ on the cube) or
      # 'dirichlet' | 'faces' (coefficients on the simplex, any K; 'faces'
      # draws a vertex, edge or face with probability endpoint_prob), see
      # hparams.sample.
      sampler="uniform", endpoint_prob=0.1, log_min=1e-3,
      alpha=1.0,  # Dirichlet concentration of 'dirichlet' and 'faces'

      # 'endpoints': when set, the endpoint probability moves linearly from
      # endpoint_prob at the first step to this at the last (annealed);
      # unset (None), it stays endpoint_prob.
      endpoint_prob_final=ml_collections.config_dict.placeholder(float),
      # λ of a plain Unet baseline (model.hyper_dim = 0) ...
      fixed=(0.5,),
      # ... or, when not empty, the λ vectors of a stack of plain Unets
      # trained together in one program (experiments/baselines.py).
      baselines=()))
  c.sampling = ml_collections.ConfigDict(dict(
      method="uhs", top_b=8,
      # DHS with BatchNorm: 'kept' normalizes over the top_b kept rows (a
      # second forward pass of them); 'batch' over the whole batch, as the
      # authors' code does (one pass; docs/results.md measures both).
      normalize="kept"))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=100_000, lr=1e-3,
      lr_decay_every=128 * 256, lr_decay_factor=0.5, seed=0,
      log_every=100, eval_every=2_000, checkpoint_every=2_000,
      # max_to_keep: newest checkpoints kept; 0 keeps every checkpoint.
      # eval_batches: validation batches per evaluation; 0 uses them all.
      max_to_keep=3, eval_batches=0, distributed=False))
  c.eval = ml_collections.ConfigDict(dict(
      grid=100, chunk=32, split="test",
      # N points of a design on the simplex instead of a grid; 0: the grid,
      # which stops at two hyperparameters.
      samples=0,
      # The gallery (diverse.png): this many most different reconstructions
      # among those within gallery_tolerance_db of the slice's best PSNR.
      gallery_size=4, gallery_tolerance_db=1.0))
  # The evaluators of experiments/evaluate.py's report and their settings
  # (hyperrecon_jax/evaluators; remove one to skip it).
  c.evals = ml_collections.ConfigDict(configuration.default_evals())
  # The tissue segmenter of experiments/segmenter.py (Dice of reconstructions):
  # features per level (0: model.channels), Adam steps and learning rate; it
  # reads data and train.batch_size / train.seed.
  c.segmenter = ml_collections.ConfigDict(dict(channels=0, steps=1000, lr=1e-3))
  return variant(c, arg)


def variant(config, arg):
  """Applies a config file's argument: none for the full run, ``quick`` for tests.

  ``quick`` keeps the experiment's task, data and losses but shrinks it to
  seconds on a CPU: 32×32 images, d = 4, 4 channels, batch 4, 4 steps.

  Args:
    config: the full config, changed in place.
    arg: the text after ``:`` in ``--config=file.py:arg`` (or None).

  Returns:
    ``config``.

  Raises:
    ConfigError: an argument other than none or ``quick``.
  """
  if arg in (None, ""):
    return config
  if arg != "quick":
    raise configuration.ConfigError(
        f"unknown config argument {arg!r}; use ':quick' or none")
  config.data.image_size = 32
  if config.model.hyper_dim:
    config.model.hyper_dim = 4
  config.model.channels = 4
  # For a few steps compile time is all that counts: 'vmap' compiles faster
  # than the CPU default 'loop' (which runs faster per step).
  config.model.strategy = "vmap"
  config.train.batch_size = 4
  config.sampling.top_b = min(config.sampling.top_b, 2)
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.checkpoint_every = 2
  config.eval.grid = 5
  config.eval.chunk = 8
  if config.eval.samples:
    config.eval.samples = max(12, len(tuple(config.losses)))
  return config
