"""Shared pieces of the datasets: errors, settings, names, files and splits.

`DataError` and `require` (optional dependencies), the dataset and split names
and the slicing axes, reading and checking the fields of a data config, the
settings digest and file fingerprint that name a built dataset, listing input
files, and rejecting non-finite input. Which split a volume goes to is
`hyperrecon_jax.data.splits`. How a
volume is cut into square slices is `hyperrecon_jax.data.slicing`.

Nothing here imports TensorFlow Datasets, grain or a file-format library, so
these settings work with the core install.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import extras

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

DATA_DIR_ENV = "HYPERRECON_DATA_DIR"
# The start of the header description of `reconstruct.py`'s NIfTI outputs
# (`hyperrecon_jax.outputs`): a folder of scans refuses such a file
# (`data.nifti_headers`), which is the model's output, not a scan.
OUTPUT_DESCRIPTION = "hyperrecon "


class DataError(errors.InputError):
  """Missing, unreadable or malformed input data (the message says which)."""


def require(module_name: str):
  """Imports an optional dependency of the data package (`extras.require`).

  Args:
    module_name: the module to import, e.g. ``"h5py"``.

  Returns:
    The imported module.

  Raises:
    extras.MissingDependency: naming the data extra to install when the
      module is missing or does not import.
  """
  return extras.require(module_name, "data", "hyperrecon_jax.data")


def default_data_dir() -> str:
  """Where built datasets live: $HYPERRECON_DATA_DIR or a per-user cache.

  As an absolute path (`absolute_folder`): a run records it in its config,
  and a relative one would build the datasets again in the folder of each
  command started elsewhere.
  """
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    return absolute_folder(env)
  return os.path.join(
      os.path.expanduser("~"), ".cache", "hyperrecon_jax", "tensorflow_datasets")


def data_dir(data_config) -> str:
  """The configured data_dir, or the default cache when it is ''.

  Raises:
    DataError: the folder, or a folder above it, is a file (the build failed
      on its first folder with an errno line naming neither setting).
  """
  configured = field(data_config, "data_dir")
  root = os.path.expanduser(configured or default_data_dir())
  existing = os.path.abspath(root)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise DataError(f"{data_dir_setting(data_config)}: {existing} is a file, not a folder")
  return root


def data_dir_setting(data_config) -> str:
  """The setting that gave the data folder, for a message.

  The scripts fill ``config.data.data_dir`` from $HYPERRECON_DATA_DIR (the
  config's default): that value is named as the variable's, which the user set.
  """
  configured = field(data_config, "data_dir")
  if configured and configured != default_data_dir():
    return f"config.data.data_dir={configured}"
  root = os.path.expanduser(configured or default_data_dir())
  return f"the data folder {root} ({DATA_DIR_ENV} or the default cache)"


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
    raise DataError(f"data config lacks field {name!r}.") from None


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


def absolute_folder(folder):
  """A data folder (``data.manual_dir``, ``data.data_dir``) as an absolute path.

  ``~`` is expanded; '' and None are returned as they are.

  A run records its config; a relative folder in it would name another
  folder for a command started elsewhere (``evaluate.py`` from another
  directory scored that folder's volumes as the run's test split).
  """
  if not folder:
    return folder
  return os.path.abspath(os.path.expanduser(str(folder)))


def list_files(root: str, suffixes: Sequence[str]) -> list[str]:
  """Sorted paths (relative to `root`) of files ending in one of `suffixes`.

  The search is recursive and follows linked folders (a site's scans linked
  in from elsewhere), each real folder once, so a link to a folder already
  searched (or to one above it) adds nothing. Hidden files and folders (a
  name that starts with '.': ``.Trash-1000``, ``.snapshot``, an editor's
  backups) are not searched: they hold old copies, not subjects; nor is
  ``lost+found``.

  Raises:
    DataError: a matching name is a symbolic link to nothing (its target
      moved or deleted), named with its target; names end in one of
      ``suffixes`` in another case (``A.NII``), which the readers and
      writers do not take: they would be left out of the build; a folder
      cannot be listed (its volumes would be left out, and another user
      would get other splits); or a matching path is not valid UTF-8, which
      the dataset's ``name`` feature cannot store.
  """

  def unlisted(err):
    raise DataError(f"{err.filename} cannot be searched ({err.strerror}): the volumes in it "
                    "would be left out of the dataset; make it readable (or move it out of "
                    f"{root})") from err

  found, other_case, undecodable = [], [], []
  searched = set()
  for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in searched:
      dirnames[:] = []
      continue
    searched.add(real)
    # lost+found (a file system's root, readable by root alone) holds no subject.
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "lost+found")
    for fname in filenames:
      if fname.endswith(tuple(suffixes)) and not fname.startswith("."):
        path = os.path.join(dirpath, fname)
        if os.path.islink(path) and not os.path.exists(path):
          raise DataError(f"{path} is a symbolic link to {os.readlink(path)!r}, which does not "
                          "exist (moved or deleted?): restore it, or remove the link")
        rel = os.path.relpath(path, root)
        try:
          rel.encode("utf-8")
        except UnicodeEncodeError:  # os.walk decodes other bytes as surrogates
          undecodable.append(ascii(os.fsencode(rel))[1:])
        found.append(rel)
      elif fname.lower().endswith(tuple(suffixes)) and not fname.startswith("."):
        other_case.append(os.path.relpath(os.path.join(dirpath, fname), root))
  if undecodable:
    raise DataError(f"{root} holds {first_few(sorted(undecodable))}, whose path is not valid "
                    "UTF-8 (the dataset stores each volume's name as text): rename them")
  if other_case:
    raise DataError(f"{root} holds {first_few(sorted(other_case))}, whose suffix is not in lower "
                    f"case ({', '.join(suffixes)}): rename them, or they are left out")
  return sorted(found)


def first_few(names: Sequence[str]) -> str:
  """The first three of ``names`` and how many more, for a message."""
  return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# Scans in formats that the folders' readers do not take: left out of a
# folder's build, they would shrink it without a word. DICOM is not among
# them: BIDS keeps a scan's DICOM files in `sourcedata/` beside its NIfTI.
OTHER_SCAN_FORMATS = {
    ".mgz": "FreeSurfer", ".mgh": "FreeSurfer", ".nrrd": "NRRD", ".nhdr": "NRRD",
    ".mha": "MetaImage", ".mhd": "MetaImage", ".hdr": "Analyze", ".img": "Analyze",
    ".h5": "HDF5, fastMRI's", ".nii.gz": "NIfTI", ".nii": "NIfTI",
}


def check_no_other_scans(root: str, dataset: str, reads: Sequence[str]) -> None:
  """Refuses a folder that holds scans in a format its dataset does not read.

  Args:
    root: the folder.
    dataset: its dataset's name, for the message.
    reads: the suffixes the dataset reads (the rest of `OTHER_SCAN_FORMATS`
      are looked for).

  Raises:
    DataError: naming the first files of other formats and their formats.
  """
  suffixes = [s for s in OTHER_SCAN_FORMATS if s not in reads]
  others = list_files(root, suffixes)
  if others:
    formats = sorted({OTHER_SCAN_FORMATS[next(s for s in suffixes if p.endswith(s))]
                      for p in others})
    raise DataError(
        f"{dataset}: {root!r} holds {first_few(others)}, scans of another format "
        f"({', '.join(formats)}) than the {', '.join(reads)} files that {dataset} reads: they "
        "would be left out of the dataset. Convert them, or move them out of the folder.")


def fingerprint(root: str, relpaths: Sequence[str]) -> str:
  """Hash of the files' names, sizes, modification and inode change times.

  Cheap (no file is read), and it changes when a file is added, removed or
  rewritten, also in place at the same size (an uncompressed volume
  processed again) and with its modification time set back (``touch -r``,
  ``os.utime``): the change time moves on every write and cannot be set. A
  copy, or a change of the file's mode or owner, builds the dataset again,
  which costs time but no correctness.
  """
  entries = []
  for p in relpaths:
    info = os.stat(os.path.join(root, p))
    entries.append((p, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
  return digest({"files": entries})


def check_finite(values: np.ndarray, path: str, what: str = "voxels") -> None:
  """Rejects an input array with NaN or infinite values.

  Such values mean broken data (a failed reconstruction or conversion), and
  no repair is right: zeroing NaN hides the damage, and an infinity saturates
  its slices white once the volume is normalized.

  Args:
    values: the array as read from the file (real or complex).
    path: the file, named in the error.
    what: what the values are, e.g. "voxels" or "values of 'kspace'".

  Raises:
    DataError: naming the file and the number of non-finite values.
  """
  values = np.asarray(values)
  if values.dtype.kind not in "fc":  # Integers are always finite.
    return
  _check_all_finite(values.size - int(np.count_nonzero(np.isfinite(values))), values.size,
                    path, what)


def _check_all_finite(bad: int, size: int, path: str, what: str) -> None:
  if bad:
    raise DataError(f"{path}: {bad:,} of {size:,} {what} are not finite (NaN or ±Inf); "
                    "fix or remove the file.")


@dataclasses.dataclass(frozen=True)
class ValueCounts:
  """What `real_float32` checks of real values, countable part by part (`add`).

  Attributes:
    dtype: the values' type.
    size: how many values.
    not_finite: how many are NaN or ±Inf.
    beyond_float32: how many finite ones exceed float32's largest magnitude.
    peak: the largest magnitude of the finite values (0 for integers, whose
      range float32 covers).
  """
  dtype: np.dtype
  size: int = 0
  not_finite: int = 0
  beyond_float32: int = 0
  peak: float = 0.0

  def add(self, other: "ValueCounts") -> "ValueCounts":
    """The counts of both parts together, in the type that holds both."""
    return ValueCounts(np.result_type(self.dtype, other.dtype), self.size + other.size,
                       self.not_finite + other.not_finite,
                       self.beyond_float32 + other.beyond_float32, max(self.peak, other.peak))


def value_counts(values: np.ndarray) -> ValueCounts:
  """The `ValueCounts` of a real array: reductions only, no copy of its size."""
  values = np.asarray(values)
  if values.dtype.kind != "f" or values.size == 0:
    return ValueCounts(values.dtype, values.size)
  finite = np.isfinite(values)
  not_finite = values.size - int(np.count_nonzero(finite))
  if not_finite:
    # The error names the count: the other counts are not read.
    return ValueCounts(values.dtype, values.size, not_finite)
  peak = max(float(values.max()), -float(values.min()))
  limit = float(np.finfo(np.float32).max)
  beyond = (int(np.count_nonzero(np.abs(values) > limit))
            if values.dtype.itemsize > 4 and peak > limit else 0)
  return ValueCounts(values.dtype, values.size, 0, beyond, peak)


def check_real(dtype, path: str, what: str = "voxels") -> None:
  """Rejects values that are not real numbers (complex, text) before they are read."""
  dtype = np.dtype(dtype)
  if dtype.kind not in "biuf":
    raise DataError(f"{path}: its {what} are of type {dtype}; expected real numbers "
                    "(a magnitude image)")


def check_values(counts: ValueCounts, path: str, what: str = "voxels") -> None:
  """Rejects values that float32, in which the model computes, would not keep.

  Raises:
    DataError: values that are not finite, beyond float32's range, or all
      below its smallest normal number (float32 would keep few or no digits
      of them: the image would be a few grey levels, or nothing at all).
  """
  _check_all_finite(counts.not_finite, counts.size, path, what)
  limit = float(np.finfo(np.float32).max)
  if counts.beyond_float32:
    raise DataError(
        f"{path}: {counts.beyond_float32:,} of {counts.size:,} {what} are finite in its "
        f"{counts.dtype} but beyond float32's range (largest magnitude {counts.peak:.3g} > "
        f"{limit:.3g}), in which the model computes; rescale the volume")
  smallest = float(np.finfo(np.float32).smallest_normal)
  if 0 < counts.peak < smallest:
    raise DataError(
        f"{path}: the largest magnitude of its {what}, {counts.peak:.3g}, is below float32's "
        f"smallest normal number ({smallest:.3g}), in which the model computes; rescale "
        "the volume")


def real_float32(raw: np.ndarray, path: str, what: str = "voxels") -> np.ndarray:
  """An image read from a file as float32, refusing values that are not real or do not fit.

  Args:
    raw: the values as read.
    path: the file, named in the errors.
    what: what the values are, e.g. "voxels" or "values of 'reconstruction_esc'".

  Raises:
    DataError: values that are not real numbers (complex, text), not finite,
      beyond float32's range, or all below its smallest normal number
      (`check_real`, `check_values`).
  """
  check_real(raw.dtype, path, what)
  check_values(value_counts(raw), path, what)
  return raw.astype(np.float32)
