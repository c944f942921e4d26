"""The fields of a data config: reading them, the values they take, and their digest.

Reading a field (`field`, no defaults); the dataset and split names, the
slicing axes, the split fractions and the image size, with their checks; and
the fields each dataset's build reads (`SETTINGS_FIELDS`), whose `digest`
names a built dataset. Which split a volume goes to is
`hyperrecon_jax.data.splits`. How a volume is cut into square slices is
`hyperrecon_jax.data.slicing`.

Nothing here imports TensorFlow Datasets, grain or a file-format library, so
these settings work with the core install.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import hashlib
import json
from typing import Any

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.data import data_errors

DATASETS = ("mni152", "fastmri_knee", "nifti")
# The data fields each dataset's `settings` reads, besides its files: what
# decides its slices and their intensities, so that runs whose fields differ
# scored other data (``summarize.py`` compares runs by them). Each dataset's
# tests check its entry against the fields its `settings` reads.
SETTINGS_FIELDS = {
    "mni152": ("image_size", "axis", "gap_slices", "split_fractions", "min_foreground",
               "percentile"),
    "nifti": ("manual_dir", "image_size", "axis", "split_fractions", "split_seed",
              "min_foreground", "percentile"),
    "fastmri_knee": ("manual_dir", "image_size", "split_fractions", "split_seed"),
}
SPLITS = ("train", "validation", "test")
# split_fractions of a folder that is only scored: every volume goes to the
# test split, and the build has no train or validation split (a report on
# volumes a model never saw, `hyperrecon_jax.report.run(data=...)`).
EVALUATION_ONLY = (0.0, 0.0, 1.0)
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def field(data_config, name: str):
  """A field of a data config (a ConfigDict or a dict) that the caller reads.

  Data configs have no defaults here: ``experiments/configs/default.py``
  writes out every field.

  Raises:
    DataError: naming the field when the config lacks it.
  """
  try:
    return data_config[name]
  except KeyError:
    raise data_errors.DataError(f"data config lacks field {name!r}.") from None


def check_name(name: str) -> str:
  """Returns `name` if it is a known dataset, else raises ValueError."""
  if name not in DATASETS:
    raise errors.InputError(
        f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
  return name


def check_split(split: str) -> str:
  """Returns `split` if it is a known split, else raises ValueError."""
  if split not in SPLITS:
    raise errors.InputError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}.")
  return split


def axis_index(axis) -> int:
  """Maps 'sagittal' | 'coronal' | 'axial' (or 0, 1, 2) to an array axis.

  Volumes are reoriented to RAS before slicing, so axis 0 runs left to right,
  1 posterior to anterior and 2 inferior to superior.
  """
  if isinstance(axis, str) and axis in AXES:
    return AXES[axis]
  if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= axis <= 2:
    return int(axis)
  raise errors.InputError(
      f"Unknown slicing axis {axis!r}; valid: {', '.join(AXES)} (or 0, 1, 2).")


def axis_name(axis) -> str:
  return {v: k for k, v in AXES.items()}[axis_index(axis)]


def check_fractions(fractions: Sequence[float], *,
                    evaluation_only: bool = False) -> tuple[float, float, float]:
  """Validates (train, validation, test) fractions: positive, summing to one.

  Every split is used (training learns from train and validates on
  validation, evaluation scores test), and TFDS writes no empty split.

  Args:
    fractions: the (train, validation, test) fractions.
    evaluation_only: also accept `EVALUATION_ONLY` (a dataset split by
      volume whose every volume is scored).
  """
  try:
    fractions = tuple(float(f) for f in fractions)
  except (TypeError, ValueError):
    fractions = None
  if evaluation_only and fractions == EVALUATION_ONLY:
    return fractions
  if (fractions is None or len(fractions) != 3 or not min(fractions) > 0
      or abs(sum(fractions) - 1) > 1e-6):
    also = (f", or {EVALUATION_ONLY} for a folder that is only evaluated"
            if evaluation_only else "")
    raise errors.InputError(
        "split_fractions must be three positive numbers (train, validation, test) "
        f"that sum to 1, since training validates and evaluation tests{also}; got "
        f"{fractions if fractions is not None else 'something else'}.")
  return fractions


def written_splits(fractions: Sequence[float]) -> tuple[str, ...]:
  """The splits a build with these (checked) fractions writes."""
  if tuple(float(f) for f in fractions) == EVALUATION_ONLY:
    return ("test",)
  return SPLITS


def check_image_size(size) -> int:
  if int(size) != size or size < 8:
    raise errors.InputError(f"image_size must be an integer >= 8; got {size!r}.")
  return int(size)


def digest(settings: Mapping[str, Any]) -> str:
  """Short stable hash of the settings that change a built dataset."""
  text = json.dumps(settings, sort_keys=True, default=list)
  return hashlib.sha1(text.encode()).hexdigest()[:10]
