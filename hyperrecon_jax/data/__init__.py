"""Datasets of 2-D slices (TFDS ArrayRecord, no TensorFlow) and a grain pipeline.

Datasets (`config.name`):
  mni152: the MNI152 2009c T1 template inside the nilearn wheel, with 4-class
    tissue labels; split into blocks of slices with gaps (`split_ranges`).
    Works offline, nothing to download.
  fastmri_knee: fastMRI single-coil knee `.h5` files in `manual_dir`.
  nifti: a folder of NIfTI brain volumes (optional label volumes).

Typical use::

  cfg = hr.data.default_config()           # mni152 at 256 x 256
  it = hr.data.batches(cfg, "train", batch_size=32, seed=0)
  batch = next(it)   # {'image': (32, 256, 256) float32, 'volume', 'slice', 'valid', 'label'}
  state = it.get_state()                   # JSON-serializable; it.set_state(state)
  for batch in hr.data.batches(cfg, "test", batch_size=32):  # one padded pass
    ...

The heavy dependencies (tensorflow-datasets, grain, nibabel, nilearn, h5py) are
imported on first use of the functions below; install them with
``pip install -e ".[data]"``.
"""

import importlib

from hyperrecon_jax.data.common import DATASETS
from hyperrecon_jax.data.common import SPLITS
from hyperrecon_jax.data.common import DataError
from hyperrecon_jax.data.common import default_data_dir

# name -> (module, attribute), imported on first access.
_LAZY = {
    "batches": ("pipeline", "batches"),
    "dataset": ("pipeline", "dataset"),
    "augment": ("pipeline", "augment"),
    "iterator_state_to_json": ("pipeline", "iterator_state_to_json"),
    "iterator_state_from_json": ("pipeline", "iterator_state_from_json"),
    "load_split": ("sources", "load_split"),
    "num_examples": ("sources", "num_examples"),
    "volumes": ("sources", "volumes"),
    "has_labels": ("sources", "has_labels"),
    "prepare": ("sources", "prepare"),
    "make_builder": ("sources", "make_builder"),
    "Volume": ("sources", "Volume"),
    "MNI152_CLASSES": ("mni152", "CLASS_NAMES"),
}

__all__ = ["DATASETS", "SPLITS", "DataError", "default_config", "default_data_dir",
           "split_ranges", *_LAZY]


def default_config():
  """The data settings that training configs embed as `config.data`.

  Returns:
    An `ml_collections.ConfigDict` with fields:
      name: 'mni152' | 'fastmri_knee' | 'nifti'.
      manual_dir: folder of the user's files (fastmri_knee, nifti).
      data_dir: where built datasets are cached: $HYPERRECON_DATA_DIR when
        set (read when this function runs), else
        ~/.cache/hyperrecon_jax/tensorflow_datasets; '' means the same.
      image_size: side of the square images.
      axis: slicing axis of brain volumes: 'axial', 'coronal' or 'sagittal'.
      augment_flip: random left-right and up-down flips in training.
      augment_intensity: random intensity scale in [1 - a, 1 + a] in training.
      split_fractions: (train, validation, test) fractions of volumes
        (fastmri_knee, nifti) or of the usable slices (mni152).
      split_seed: seed of the volume split (fastmri_knee, nifti).
      gap_slices: unused slices between split blocks (mni152).
      min_foreground: slices with less foreground than this fraction of their
        area are dropped as background (mni152, nifti).
      percentile: intensity percentile mapped to 1 (mni152, nifti).
      num_threads: background threads reading batches.
  """
  import ml_collections
  return ml_collections.ConfigDict({
      "name": "mni152",
      "manual_dir": "",
      "data_dir": default_data_dir(),
      "image_size": 256,
      "axis": "axial",
      "augment_flip": False,
      "augment_intensity": 0.0,
      "split_fractions": (0.7, 0.1, 0.2),
      "split_seed": 0,
      "gap_slices": 8,
      "min_foreground": 0.01,
      "percentile": 99.5,
      "num_threads": 2,
  })


def split_ranges(data_config=None) -> dict:
  """The mni152 slice blocks of each split: {split: [(start, stop), ...]}.

  Args:
    data_config: a data config (its axis, gap_slices, split_fractions and
      min_foreground are used); default `default_config()`.

  Returns:
    Half-open slice-index ranges along the slicing axis (see
    `hyperrecon_jax.data.mni152`).
  """
  from hyperrecon_jax.data import mni152
  from hyperrecon_jax.data import sources
  cfg = sources.with_defaults(data_config if data_config is not None else {})
  return mni152.split_ranges(cfg.axis, cfg.gap_slices, cfg.split_fractions,
                             cfg.min_foreground)


def __getattr__(name):
  if name in _LAZY:
    module_name, attr = _LAZY[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = getattr(module, attr)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
