"""Datasets of 2-D slices (TFDS ArrayRecord, no TensorFlow) and a grain pipeline.

Datasets (`config.name`):
  mni152: the MNI152 2009c T1 template inside the nilearn wheel, with 4-class
    tissue labels; split into blocks of slices with gaps (`split_ranges`).
    Works offline, nothing to download.
  fastmri_knee: fastMRI single-coil knee `.h5` files in `manual_dir`.
  nifti: a folder of NIfTI brain volumes (optional label volumes).

A data config is the ``data`` section of an experiment config; every field is
written out, and explained, in ``experiments/configs/default.py``, and the
functions here read the fields they need without defaults (a missing one is a
`DataError` naming it). Typical use::

  cfg = config.data                        # e.g. mni152 at 256 x 256
  it = hr.data.batches(cfg, "train", batch_size=32, seed=0)
  batch = next(it)   # {'image': (32, 256, 256) float32, 'volume', 'slice', 'valid', 'label'}
  state = it.get_state()                   # JSON-serializable; it.set_state(state)
  for batch in hr.data.batches(cfg, "test", batch_size=32):  # one padded pass
    ...

The heavy dependencies (tensorflow-datasets, grain, nibabel, nilearn, h5py) are
imported on first use of the functions below; install them with the ``data``
extra (``pip install -e ".[data]"`` in a source checkout,
``pip install "hyperrecon-jax[data]"`` for an installed wheel).
"""

import functools
import importlib

from hyperrecon_jax.data.config_fields import DATASETS
from hyperrecon_jax.data.config_fields import EVALUATION_ONLY
from hyperrecon_jax.data.config_fields import SPLITS
from hyperrecon_jax.data.data_errors import DataError
from hyperrecon_jax.data.locations import default_data_dir

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
    "folder_dataset": ("folders", "folder_dataset"),
    "folder_config": ("folders", "folder_config"),
    "has_labels": ("sources", "has_labels"),
    "prepare": ("sources", "prepare"),
    "make_builder": ("sources", "make_builder"),
    "Volume": ("sources", "Volume"),
    "MNI152_CLASSES": ("mni152", "CLASS_NAMES"),
}

__all__ = ["DATASETS", "SPLITS", "EVALUATION_ONLY", "DataError", "default_data_dir",
           "split_ranges", *_LAZY]


def split_ranges(data_config) -> dict:
  """The mni152 slice blocks of each split: {split: [(start, stop), ...]}.

  Args:
    data_config: a data config (its axis, gap_slices, split_fractions and
      min_foreground are used).

  Returns:
    Half-open slice-index ranges along the slicing axis (see
    `hyperrecon_jax.data.mni152`).
  """
  from hyperrecon_jax.data import config_fields
  from hyperrecon_jax.data import mni152
  get = functools.partial(config_fields.field, data_config)
  return mni152.split_ranges(get("axis"), get("gap_slices"), get("split_fractions"),
                             get("min_foreground"))


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
