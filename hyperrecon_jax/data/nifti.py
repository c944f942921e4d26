"""Folders of NIfTI brain volumes (a manual dataset: you supply the files).

Put 3-D volumes (`.nii` or `.nii.gz`, searched recursively) in `manual_dir`,
one per subject or several of a subject named by its BIDS `sub-<label>`, e.g.
skull-stripped T1 images of the ABIDE preprocessed release
(http://preprocessed-connectomes-project.org/abide/, subject to the ABIDE
data usage agreement).

Optional label volumes (integer segmentations on the same voxel grid), found
by file name, for an image `<dir>/<stem>.nii[.gz]`:
  * `<manual_dir>/labels/<dir>/<stem>.nii[.gz]` (same relative path under a
    top-level `labels/` folder), or
  * `<dir>/<stem>_seg.nii[.gz]` (next to the image).
Files under `labels/`, files named `*_seg.nii[.gz]` and files whose names
end in BIDS's marks of masks and segmentations (`nifti_files.MASK_SUFFIXES`:
`_mask`, `_brainmask`, `_dseg`, `_probseg`, as fMRIPrep writes them beside its
`*_desc-preproc_T1w`) are never images. Either every image has a label volume
or none does; a label volume that pairs with no image, or an image with two,
is refused by name (a misnamed label would otherwise leave its image
unlabelled, or every image, without a word).

Processing: each volume is reoriented to RAS, divided by the 99.5th
percentile (`percentile`) of its positive voxels and clipped to [0, 1];
slices along `axis` with less than `min_foreground` of their area above
`slicing.FOREGROUND_THRESHOLD` (or labelled) are dropped; each slice is cropped
to the volume's foreground box and resized to fit `image_size` (voxel sizes
respected, zero padding; labels by nearest neighbour, stored as int32).
A volume or label volume with NaN or infinite voxels is broken data: the build
stops with an error naming the file instead of repairing it.

Volume ids are positions in the sorted list of relative paths (the `name`
feature). A volume whose path names a BIDS subject, `sub-<label>` as a folder
or as the start of the file name, belongs to that subject; any other volume
is a subject of its own. Subjects are assigned to splits with a permutation
seeded by `split_seed` (`splits.split_subjects`), so no subject is in two
splits.
"""

from collections.abc import Iterator
from collections.abc import Mapping
import functools
import os

import numpy as np

from hyperrecon_jax import checksums
from hyperrecon_jax.data import builder as builder_lib
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import file_lists
from hyperrecon_jax.data import nifti_files
from hyperrecon_jax.data import nifti_headers
from hyperrecon_jax.data import nifti_voxels
from hyperrecon_jax.data import slicing
from hyperrecon_jax.data import splits
from hyperrecon_jax.data import value_checks


def _load(path: str, what: str):
  """Loads a 3-D volume in RAS as (array as stored, voxel sizes)."""
  nib = dependencies.require("nibabel")
  img = nifti_headers.open_checked(path, what)
  try:
    data = np.asarray(nib.as_closest_canonical(img).dataobj)
  except Exception as err:  # noqa: BLE001 (a truncated file fails here)
    raise data_errors.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
  return data.reshape(data.shape[:3]), _voxel_sizes(img)


def _load_image(path: str):
  """Loads a 3-D image in RAS as (float32 array, voxel sizes), as `scans.read_input` does."""
  img = nifti_headers.open_checked(path, "image")
  return nifti_voxels.read_float32(path), _voxel_sizes(img)


def _voxel_sizes(img) -> tuple:
  """The voxel sizes of the affine that gave the orientation, as `scans.read_input`."""
  nib = dependencies.require("nibabel")
  return tuple(float(z) for z in nib.affines.voxel_sizes(nifti_voxels.ras_affine(img)))


def read_volume(manual_dir: str, image_rel: str, label_rel: str | None, percentile: float):
  """Loads, reorients and normalizes one subject.

  Returns:
    (image float32 in [0, 1], label int32 or None, voxel sizes).

  Raises:
    DataError: naming the file, when it is unreadable, not 3-D, has NaN or
      infinite voxels, voxels beyond float32's range or all below its smallest
      normal number, or no positive voxel, or its label volume's shape differs,
      or the label volume holds fractional classes or classes beyond int32's
      range.
  """
  path = os.path.join(manual_dir, image_rel)
  # The voxels' checks (`nifti_voxels.read_float32`) are made here, not in
  # `nifti_headers.check_header`: they need the voxels, and reading every
  # volume twice would double the build time. Raising mid-build is safe: TFDS deletes its
  # temporary folder, so no dataset is left behind.
  data, spacing = _load_image(path)
  try:
    image = slicing.normalize_percentile(data, percentile)
  except data_errors.DataError as err:
    raise data_errors.DataError(f"{path}: {err}.") from err
  label = None
  if label_rel is not None:
    label_path = os.path.join(manual_dir, label_rel)
    label, _ = _load(label_path, "label volume")
    value_checks.check_finite(label, label_path)  # Float label files can hold NaN.
    if label.shape != image.shape:
      raise data_errors.DataError(
          f"{label_path}: label shape {label.shape} differs from the image "
          f"shape {image.shape} of {path}.")
    if label.dtype.kind == "f":
      # A label map resampled with linear interpolation: rounding would move
      # the boundaries between classes (2.5 → 2) without a word.
      fractional = label != np.rint(label)
      count = int(np.count_nonzero(fractional))
      if count:
        raise data_errors.DataError(
            f"{label_path}: {count:,} of {label.size:,} label voxels are not whole "
            f"numbers (e.g. {float(label[fractional][0]):g}): a label volume holds "
            "classes 0, 1, 2, …; resample labels with nearest-neighbour interpolation.")
    _check_label_range(label, label_path)
    label = label.astype(np.int32)
  return image, label, spacing


_INT32 = np.iinfo(np.int32)


def _check_label_range(label: np.ndarray, label_path: str) -> None:
  """Refuses label classes that int32, the type labels are stored in, cannot hold.

  A cast would wrap them (uint32 4294967295 → −1), merging classes or
  making them negative without a word.

  Args:
    label: the label volume as its file stores it (whole numbers).
    label_path: its file, for the message.

  Raises:
    DataError: naming the file, how many voxels are out of range and one of
      their values.
  """
  if np.can_cast(label.dtype, np.int32, "safe"):
    return
  # Two reductions over the voxels in memory: no copy of the volume unless
  # it is refused. As Python integers (the values are whole): a float32
  # compared with int32's largest rounds that to 2³¹ and would pass 2³¹.
  low, high = int(label.min()), int(label.max())
  if low >= _INT32.min and high <= _INT32.max:
    return
  # float64 holds both bounds, and every value next to them, exactly.
  beyond = (label < np.float64(_INT32.min)) | (label > np.float64(_INT32.max))
  value = high if high > _INT32.max else low
  raise data_errors.DataError(
      f"{label_path}: {int(np.count_nonzero(beyond)):,} of {label.size:,} label voxels "
      f"hold classes beyond int32's range, in which labels are stored (e.g. {value}): "
      f"number the classes from {_INT32.min:,} to {_INT32.max:,}.")


def label_values(path: str) -> np.ndarray:
  """The sorted distinct values of a label volume's file (as the build reads them)."""
  label, _ = _load(path, "label volume")
  return np.unique(np.asarray(label)).astype(np.int64)


def content_digest(manual_dir: str, image_rel: str, percentile: float) -> str:
  """The SHA-256 of a volume's normalized voxels, as a build records it."""
  return checksums.array_digest(read_volume(manual_dir, image_rel, None, percentile)[0])


def settings(data_config) -> dict:
  """The settings that change the written data (the files' fingerprint included)."""
  get = functools.partial(config_fields.field, data_config)
  manual_dir = os.path.expanduser(get("manual_dir"))
  fractions = config_fields.check_fractions(get("split_fractions"), evaluation_only=True)
  # A folder that is only scored is read without its labels (see nifti_files.find_files).
  pairs = nifti_files.find_files(manual_dir, labels=fractions != config_fields.EVALUATION_ONLY)
  names = (splits.subjects([image for image, _ in pairs])
           if fractions != config_fields.EVALUATION_ONLY else [None] * len(pairs))
  # Too few volumes (or subjects) for the splits is refused here, before a
  # build is announced.
  splits.split_subjects(names, fractions, int(get("split_seed")),
                        where=os.path.abspath(manual_dir))
  files = [p for pair in pairs for p in pair if p is not None]
  out = {
      "dataset": "nifti",
      "image_size": config_fields.check_image_size(get("image_size")),
      "axis": config_fields.axis_name(get("axis")),
      "split_fractions": list(fractions),
      "split_seed": int(get("split_seed")),
      "min_foreground": float(get("min_foreground")),
      "percentile": float(get("percentile")),
      "labels": pairs[0][1] is not None,
      "files": file_lists.fingerprint(manual_dir, files),
  }
  # A folder holding a subject's volumes twice is split by subject: its own
  # build, never a dataset built split volume by volume. A folder of one
  # volume per subject keeps these settings, and its build and split.
  if len(splits.subject_groups(names)) < len(names):
    out["split_by"] = "subject"
  return out


def builder_config(data_config) -> builder_lib.SliceConfig:
  s = settings(data_config)
  return builder_lib.SliceConfig(
      name=builder_lib.settings_name(f"s{s['image_size']}_{s['axis']}", s),
      description=f"NIfTI volumes, {s['axis']} slices at {s['image_size']} px.",
      image_size=s["image_size"], label_dtype="int32" if s["labels"] else "",
      manual_dir=os.path.abspath(
          os.path.expanduser(config_fields.field(data_config, "manual_dir"))),
      settings=s)


class Nifti(builder_lib.SliceBuilder, skip_registration=True):
  """Slices of a folder of NIfTI volumes, optionally with label volumes."""

  DESCRIPTION = __doc__
  MANUAL_DOWNLOAD_INSTRUCTIONS = nifti_files.INSTRUCTIONS
  # A new version is a new build folder: a folder built by an older release
  # is cut again, not read with slices that release cut.
  VERSION = builder_lib.tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Voxel sizes from the affine that orients a volume, not the header's pixdim.",
  }

  def _plan(self) -> Mapping[str, list[builder_lib.VolumeSpec]]:
    cfg = self.builder_config
    pairs = nifti_files.find_files(cfg.manual_dir, labels=cfg.settings["labels"])
    fractions, seed = cfg.settings["split_fractions"], cfg.settings["split_seed"]
    for pair in pairs:  # Fail before writing anything if a header is bad.
      nifti_headers.check_header(cfg.manual_dir, *pair, cfg.settings["axis"],
                                 scored=tuple(fractions) == config_fields.EVALUATION_ONLY)
    if cfg.settings.get("split_by") == "subject":
      assignment = splits.split_subjects(splits.subjects([image for image, _ in pairs]),
                                         fractions, seed, where=cfg.manual_dir)
    else:
      assignment = splits.split_volumes(len(pairs), fractions, seed, where=cfg.manual_dir)
    return {split: [builder_lib.VolumeSpec(i, pairs[i][0], pairs[i],
                                           file=os.path.join(cfg.manual_dir, pairs[i][0]))
                    for i in ids]
            for split, ids in assignment.items()}

  def _slices(self, spec) -> Iterator[slicing.Slice]:
    s = self.builder_config.settings
    image, label, spacing = read_volume(
        self.builder_config.manual_dir, *spec.source, s["percentile"])
    self._record_content(spec.id, image)
    yield from slicing.volume_slices(
        image, axis=s["axis"], size=s["image_size"], min_foreground=s["min_foreground"],
        label=label, spacing=spacing)
