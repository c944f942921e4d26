"""fastMRI single-coil knee volumes (a manual dataset: you supply the files).

Get the data from https://fastmri.med.nyu.edu/ after accepting its licence,
unpack e.g. `knee_singlecoil_train.tar.gz`, and point `manual_dir` at the
folder of `.h5` files (searched recursively).

Each file is one volume. The target image of a slice is `reconstruction_esc`
(S, 320, 320); files without it fall back to
`reconstruction_rss`, and then to the magnitude of the centred orthonormal
inverse FFT of `kspace` (root-sum-of-squares over coils for multi-coil
k-space), centre-cropped to at most 320 x 320, when that k-space is fully
sampled: the test and challenge files' undersampled k-space would give
aliased targets and is refused (`unmeasured_columns`). Intensities are divided by the
file's `attrs['max']` (the volume maximum of the target, as fastMRI stores it;
the computed volume maximum when absent) and clipped to [0, 1]. Images are then
resized to fit `image_size` (aspect ratio kept, zero padding).

All slices are kept. Volume ids are the files' positions in sorted order of
their paths relative to `manual_dir`; the path is the `name` feature. Files go
to train / validation / test with a permutation seeded by `split_seed`
(`splits.split_volumes`), so no volume is in two splits.
"""

from collections.abc import Iterator
from collections.abc import Mapping
import functools
import os
from typing import NamedTuple

import numpy as np

from hyperrecon_jax import checksums
from hyperrecon_jax.data import builder as builder_lib
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import file_lists
from hyperrecon_jax.data import slicing
from hyperrecon_jax.data import splits
from hyperrecon_jax.data import value_checks

TARGET_KEYS = ("reconstruction_esc", "reconstruction_rss")
CROP = 320
# What reading a file into a scan's slices (`read_target`, then
# `hyperrecon_jax.scans`) holds at once, at most, beside the stored values:
# float32 image volumes (measured with tracemalloc: 3.0–3.25 on 320×320
# slices, up to 3.46 on 96×80 ones, whose slice-sized temporaries weigh
# more), and for k-space, copies of one slice of it (its shifts and
# complex128 FFT: 3.5 times a complex64 slice, 3.9 a complex128 one).
# tests/test_scans_memory.py checks the bound.
IMAGE_VOLUMES = 3.75
KSPACE_SLICES = 4.5

INSTRUCTIONS = (
    "Put fastMRI single-coil knee `.h5` files (datasets `kspace` and "
    "`reconstruction_esc`, attribute `max`) in `manual_dir`, e.g. the unpacked "
    "`knee_singlecoil_train` folder. Download them from "
    "https://fastmri.med.nyu.edu/ after accepting the fastMRI licence.")


def find_files(manual_dir: str) -> list[str]:
  """Sorted `.h5` paths relative to `manual_dir`.

  Raises:
    DataError: when the folder is missing, holds no `.h5` file, or holds
      scans of another format (`file_lists.check_no_other_scans`).
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise data_errors.DataError(
        f"fastmri_knee: manual_dir {manual_dir!r} is not a folder. {INSTRUCTIONS}")
  files = file_lists.list_files(manual_dir, (".h5",))
  file_lists.check_no_other_scans(manual_dir, "fastmri_knee", (".h5",))
  if not files:
    raise data_errors.DataError(
        f"fastmri_knee: no .h5 file in {manual_dir!r}. {INSTRUCTIONS}")
  return files


def _open(path: str):
  h5py = dependencies.require("h5py")
  try:
    return h5py.File(path, "r")
  except (OSError, KeyError, RuntimeError, ValueError) as err:
    raise data_errors.DataError(f"{path}: cannot be read as an HDF5 file ({err}).") from err


def inspect(path: str) -> tuple[str, int]:
  """Checks one file and returns (dataset key used, number of slices).

  Raises:
    DataError: naming the file, when it is unreadable, lacks the datasets or
      has the wrong shape.
  """
  with _open(path) as f:
    return _inspect_open(f, path)


def _inspect_open(f, path: str) -> tuple[str, int]:
  """`inspect` of an open file."""
  try:
    return _inspect_datasets(f, path)
  except data_errors.DataError:
    raise
  except (KeyError, RuntimeError, OSError, ValueError, TypeError) as err:
    # A file whose superblock opens but whose object headers or link table
    # are damaged fails here, in h5py's lookups.
    raise data_errors.DataError(f"{path}: cannot be read as an HDF5 file, its metadata is "
                                f"damaged ({err}).") from err


def _inspect_datasets(f, path: str) -> tuple[str, int]:
  """The checks of `inspect` on an open file; h5py's own errors pass through."""
  h5py = dependencies.require("h5py")
  for key in ("kspace",) + TARGET_KEYS:
    if key in f and not isinstance(f[key], h5py.Dataset):
      raise data_errors.DataError(f"{path}: '{key}' is an HDF5 group, not an array.")
  for key in ("kspace",) + TARGET_KEYS:
    if key in f and f[key].ndim in (3, 4) and f[key].shape[0] < 1:
      raise data_errors.DataError(f"{path}: '{key}' has shape {f[key].shape}: it holds no slice.")
  for key in TARGET_KEYS:
    if key in f:
      shape = f[key].shape
      if len(shape) != 3 or min(shape) < 1:
        raise data_errors.DataError(
            f"{path}: '{key}' has shape {shape}; expected (slices, height, width).")
      _check_planes(path, key, shape)
      return key, int(shape[0])
  if "kspace" in f:
    data = f["kspace"]
    if data.ndim not in (3, 4) or min(data.shape) < 1 or data.dtype.kind != "c":
      raise data_errors.DataError(
          f"{path}: 'kspace' has shape {data.shape} and dtype {data.dtype}; expected "
          "complex (slices, height, width) or (slices, coils, height, width).")
    _check_planes(path, "kspace", data.shape)
    return "kspace", int(data.shape[0])
  raise data_errors.DataError(
      f"{path}: has none of {', '.join(repr(k) for k in TARGET_KEYS)} and 'kspace' "
      f"(found {sorted(f.keys())}); is this a fastMRI file?")


def _check_planes(path: str, key: str, shape) -> None:
  """Refuses images narrower than `slicing.MIN_PLANE` pixels."""
  if min(shape[-2:]) < slicing.MIN_PLANE:
    raise data_errors.DataError(
        f"{path}: '{key}' has shape {tuple(shape)}: its images are narrower than "
        f"{slicing.MIN_PLANE} pixels, too small to be an image for the model.")


def read_bytes(path: str) -> tuple[str, tuple, int]:
  """The dataset a file is read from, its shape, and the most bytes reading it holds.

  From the dataset's shape and type alone, before any value is read. The
  bytes are those of reading it into a scan's slices (`read_target`, then
  `hyperrecon_jax.scans`): for a target, the larger of its stored values with
  2.25 float32 volumes and `IMAGE_VOLUMES` volumes; for k-space,
  `IMAGE_VOLUMES` volumes of its image (cropped to `CROP`) and
  `KSPACE_SLICES` slices of it.

  Raises:
    DataError: as `inspect`.
  """
  with _open(path) as f:  # opened once: its checks, then the chosen dataset's shape
    key, _ = _inspect_open(f, path)
    shape, dtype = tuple(int(n) for n in f[key].shape), f[key].dtype
  itemsize = np.dtype(dtype).itemsize
  if key != "kspace":
    volume = 4 * int(np.prod(shape))
    return key, shape, int(max(itemsize * volume // 4 + 2.25 * volume,
                               IMAGE_VOLUMES * volume))
  h, w = shape[-2:]
  image = 4 * shape[0] * min(CROP, h) * min(CROP, w)
  one_slice = itemsize * int(np.prod(shape[1:]))
  return key, shape, int(IMAGE_VOLUMES * image + KSPACE_SLICES * one_slice)


def measured_columns(kspace: np.ndarray) -> np.ndarray:
  """Which k-space columns (the last axis) hold a non-zero value in any slice and coil."""
  return np.any(kspace != 0, axis=tuple(range(kspace.ndim - 1)))


def unmeasured_columns(measured: np.ndarray) -> tuple[int, int]:
  """The k-space columns never measured, between the first and last measured one.

  A fully sampled fastMRI file measures every phase-encoding column (the last
  axis) between the zero padding at its edges; the test and challenge files
  hold undersampled k-space, whose skipped columns are exact zeros in every
  slice and coil.

  Args:
    measured: the `measured_columns` of the k-space (gathered slice by slice
      with ``|``, or of the whole k-space at once).

  Returns:
    (skipped, span): how many columns are zero throughout, between the first and
    the last column holding a non-zero value, and how many columns that span
    has (0, 0 for all-zero k-space).
  """
  where = np.flatnonzero(measured)
  if where.size == 0:
    return 0, 0
  span = measured[where[0]:where[-1] + 1]
  return int(span.size - np.count_nonzero(span)), int(span.size)


def undersampled_message(path: str, measured: np.ndarray,
                         why: str = "Its image would be aliased") -> str | None:
  """Why a file's k-space cannot stand for its image, or None when it is fully sampled.

  Args:
    path: the file, named in the message.
    measured: the `measured_columns` of its k-space.
    why: what undersampled k-space would do to the caller's result.
  """
  skipped, span = unmeasured_columns(measured)
  if not skipped:
    return None
  return (f"{path}: its 'kspace' is already undersampled: {skipped:,} of the {span:,} "
          "columns between its first and last measured one are zero in every slice (a "
          f"fastMRI test or challenge file?). {why}; use a fully sampled file (fastMRI's "
          "train or val sets) or one with 'reconstruction_esc' or 'reconstruction_rss'.")


def kspace_to_image(kspace: np.ndarray) -> np.ndarray:
  """Magnitude image of centred k-space (RSS over coils), centre-cropped."""
  axes = (-2, -1)
  image = np.fft.fftshift(
      np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"),
      axes=axes)
  image = np.abs(image)
  if image.ndim == 4:
    image = np.sqrt(np.sum(image ** 2, axis=1))
  h, w = image.shape[-2:]
  ch, cw = min(CROP, h), min(CROP, w)
  top, left = (h - ch) // 2, (w - cw) // 2
  return image[:, top:top + ch, left:left + cw]


class Target(NamedTuple):
  """A file's target volume as the model sees it."""
  volume: np.ndarray  # (S, H, W) float32 divided by the scale, not yet clipped to [0, 1]
  scale: float  # the intensity that maps to 1
  key: str  # the dataset read: a target, or 'kspace'
  dtype: np.dtype  # that dataset's type


def read_target(path: str, why: str = "Its image would be aliased") -> Target:
  """The normalized target volume of one file, as the dataset build reads it.

  The same for a build (`read_volume`) and for one scan
  (`hyperrecon_jax.scans`), so the two score a file alike.

  Args:
    path: the file.
    why: what undersampled k-space would do to the caller's result (its
      message, `undersampled_message`).

  Raises:
    DataError: naming the file, when it is unreadable, all zero, holds NaN
      or infinite values (in the target, k-space or attribute 'max'), a
      target that is not real numbers (complex, text), or an attribute 'max'
      below the target's largest value (the attribute does not describe it).
  """
  key, _ = inspect(path)
  try:
    with _open(path) as f:
      if key == "kspace":
        image, dtype = _kspace_image(f, path, why)
      else:
        raw = np.asarray(f[key][()])
        # Only targets are scaled by the stored maximum (see the module doc).
        stored = f.attrs.get("max")
  except data_errors.DataError:
    raise
  except (OSError, KeyError, RuntimeError, ValueError, TypeError) as err:
    raise data_errors.DataError(f"{path}: cannot read '{key}' ({err}).") from err
  if key == "kspace":
    volume = value_checks.real_float32(image, path, "pixels of the image of 'kspace'")
    scale = float(volume.max())
  else:
    # In a target a NaN or infinity would be zeroed or saturated white
    # without a trace.
    value_checks.check_finite(raw, path, f"values of '{key}'")
    stored_max = 0.0 if stored is None else _stored_max(stored, path)
    dtype = raw.dtype
    # A complex target cast to float would keep its real part: part of a
    # phase-rotated image would turn black without a word.
    volume = value_checks.real_float32(raw, path, f"values of '{key}'")
    peak = float(volume.max())
    # fastMRI stores the target's volume maximum; a file rescaled after it
    # was written would have most of its image clipped to white.
    if stored_max > 0 and peak > stored_max * (1 + 1e-5):
      raise data_errors.DataError(
          f"{path}: attribute 'max' is {stored_max:g}, below the largest value of "
          f"'{key}', {peak:g}: it does not describe this image (rescaled after it was "
          "written?), and dividing by it would clip the image. Fix or delete the attribute.")
    scale = stored_max or peak
  if not scale > 0:
    raise data_errors.DataError(f"{path}: the '{key}' volume has no intensity scale: its largest "
                                f"value is {scale:g}, not positive.")
  return Target(volume / scale, scale, key, dtype)


def _kspace_image(f, path: str, why: str) -> tuple[np.ndarray, np.dtype]:
  """The image (`kspace_to_image`) of an open file's fully sampled k-space, and its type.

  One slice at a time: multi-coil k-space read whole, with its FFT's copies,
  held about four times the file's k-space at once.

  Raises:
    DataError: k-space holding NaN or infinite values (one spreads over its
      whole slice in the FFT), or undersampled k-space (`undersampled_message`).
  """
  data = f["kspace"]
  measured = np.zeros(data.shape[-1], bool)
  not_finite = 0
  images = []
  for index in range(data.shape[0]):
    kspace = np.asarray(data[index])
    not_finite += kspace.size - int(np.count_nonzero(np.isfinite(kspace)))
    measured |= measured_columns(kspace)
    if not not_finite:
      # A copy of the crop: a view would keep the whole uncropped image.
      images.append(kspace_to_image(kspace[None])[0].copy())
    del kspace
  value_checks.check_values(value_checks.ValueCounts(data.dtype, int(data.size), not_finite), path,
                            "values of 'kspace'")
  problem = undersampled_message(path, measured, why)
  if problem:
    raise data_errors.DataError(problem)
  return np.stack(images), data.dtype


def _stored_max(value, path: str) -> float:
  """A file's attribute 'max', checked: one finite positive number.

  Raises:
    DataError: naming the file and the attribute's value otherwise.
  """
  array = np.asarray(value)
  if array.shape != () or array.dtype.kind not in "iuf":
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "…"
    raise data_errors.DataError(
        f"{path}: attribute 'max' is {shown}, not a number (fastMRI stores the target's "
        "largest value there); fix or delete the attribute.")
  stored_max = float(array)
  if not np.isfinite(stored_max):
    raise data_errors.DataError(
        f"{path}: attribute 'max' is {stored_max}, not a finite number; fix it "
        "or remove the file.")
  if stored_max <= 0:
    # The target would be divided by it: a 0 written in place of a missing
    # value is as wrong as a negative one.
    raise data_errors.DataError(
        f"{path}: attribute 'max' is {stored_max:g}, not positive, so it cannot be the "
        "target's largest value; fix or delete the attribute.")
  return stored_max


def read_volume(path: str) -> np.ndarray:
  """The normalized target volume (S, H, W) float32 in [0, 1] of one file (`read_target`)."""
  return np.clip(read_target(path).volume, 0.0, 1.0)


def content_digest(path: str) -> str:
  """The SHA-256 of a file's normalized volume, as a build records it."""
  return checksums.array_digest(read_volume(path))


def settings(data_config) -> dict:
  """The settings that change the written data (the files' fingerprint included)."""
  get = functools.partial(config_fields.field, data_config)
  manual_dir = os.path.expanduser(get("manual_dir"))
  files = find_files(manual_dir)
  fractions = config_fields.check_fractions(get("split_fractions"), evaluation_only=True)
  # Too few volumes for the splits is refused here, before a build is announced.
  splits.split_volumes(len(files), fractions, int(get("split_seed")),
                       where=os.path.abspath(manual_dir))
  return {
      "dataset": "fastmri_knee",
      "image_size": config_fields.check_image_size(get("image_size")),
      "split_fractions": list(fractions),
      "split_seed": int(get("split_seed")),
      "files": file_lists.fingerprint(manual_dir, files),
  }


def builder_config(data_config) -> builder_lib.SliceConfig:
  s = settings(data_config)
  return builder_lib.SliceConfig(
      name=builder_lib.settings_name(f"s{s['image_size']}", s),
      description=f"fastMRI single-coil knee at {s['image_size']} px.",
      image_size=s["image_size"],
      manual_dir=os.path.abspath(
          os.path.expanduser(config_fields.field(data_config, "manual_dir"))),
      settings=s)


class FastmriKnee(builder_lib.SliceBuilder, skip_registration=True):
  """fastMRI single-coil knee slices (targets of `reconstruction_esc`)."""

  HOMEPAGE = "https://fastmri.med.nyu.edu/"
  DESCRIPTION = __doc__
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _plan(self) -> Mapping[str, list[builder_lib.VolumeSpec]]:
    cfg = self.builder_config
    files = find_files(cfg.manual_dir)
    for rel in files:  # Fail before writing anything if a file is bad.
      inspect(os.path.join(cfg.manual_dir, rel))
    assignment = splits.split_volumes(
        len(files), cfg.settings["split_fractions"], cfg.settings["split_seed"],
        where=cfg.manual_dir)
    paths = [os.path.join(cfg.manual_dir, rel) for rel in files]
    return {split: [builder_lib.VolumeSpec(i, files[i], paths[i], file=paths[i]) for i in ids]
            for split, ids in assignment.items()}

  def _slices(self, spec) -> Iterator[slicing.Slice]:
    size = self.builder_config.image_size
    volume = read_volume(spec.source)
    self._record_content(spec.id, volume)
    for k, image in enumerate(volume):
      yield slicing.Slice(k, np.clip(slicing.fit_to_square(image, size, order=1), 0.0, 1.0))
