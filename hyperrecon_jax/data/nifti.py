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
end in BIDS's marks of masks and segmentations (`MASK_SUFFIXES`: `_mask`,
`_brainmask`, `_dseg`, `_probseg`, as fMRIPrep writes them beside its
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
from hyperrecon_jax.data import common
from hyperrecon_jax.data import nifti_voxels
from hyperrecon_jax.data import slicing
from hyperrecon_jax.data import splits

SUFFIXES = (".nii.gz", ".nii")
LABEL_DIR = "labels"
LABEL_SUFFIX = "_seg"
# BIDS names a binary mask `*_mask` (`desc-brain_mask`), a discrete
# segmentation `*_dseg` and a probabilistic one `*_probseg`; FreeSurfer and
# FSL write `*_brainmask`. None is an image.
MASK_SUFFIXES = ("_mask", "_brainmask", "_dseg", "_probseg")

INSTRUCTIONS = (
    "Put NIfTI volumes (.nii or .nii.gz), one per subject or named by BIDS subject "
    "(sub-<label>), in `manual_dir`, "
    "optionally with label volumes as `labels/<same path>` or "
    "`<name>_seg.nii.gz`. ABIDE preprocessed brains are available from "
    "http://preprocessed-connectomes-project.org/abide/ (ABIDE data usage "
    "agreement applies).")


def _stem(path: str) -> str:
  for suffix in SUFFIXES:
    if path.endswith(suffix):
      return path[:-len(suffix)]
  return path


def find_files(manual_dir: str, *, labels: bool = True) -> list[tuple[str, str | None]]:
  """(image, label or None) pairs of paths relative to `manual_dir`, sorted.

  Args:
    manual_dir: the folder.
    labels: pair each image with its label volume; False gives None for
      every image (a folder that is only scored, whose labels play no part).

  Raises:
    DataError: when the folder is missing, holds no image, holds scans of
      another format (`common.check_no_other_scans`), or (with ``labels``)
      only some images have labels, a label volume pairs with no image, or an
      image has two.
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise common.DataError(f"nifti: manual_dir {manual_dir!r} is not a folder. {INSTRUCTIONS}")
  everything = common.list_files(manual_dir, SUFFIXES)
  common.check_no_other_scans(manual_dir, "nifti", SUFFIXES)
  is_label = {p: p.split(os.sep)[0] == LABEL_DIR or _stem(p).endswith(LABEL_SUFFIX)
              for p in everything}
  images = [p for p in everything if not is_label[p] and not _stem(p).endswith(MASK_SUFFIXES)]
  if not images:
    raise common.DataError(f"nifti: no .nii or .nii.gz volume in {manual_dir!r}. {INSTRUCTIONS}")
  if not labels:
    return [(image, None) for image in images]
  present = set(everything)
  pairs, claimed = [], set()
  for image in images:
    stem = _stem(image)
    candidates = [os.path.join(LABEL_DIR, stem + s) for s in SUFFIXES]
    candidates += [stem + LABEL_SUFFIX + s for s in SUFFIXES]
    found = [c for c in candidates if c in present]
    if len(found) > 1:
      raise common.DataError(
          f"nifti: {image} in {manual_dir!r} has {len(found)} label volumes, "
          f"{' and '.join(found)}: keep one.")
    claimed.update(found)
    pairs.append((image, found[0] if found else None))
  orphans = [p for p in everything if is_label[p] and p not in claimed]
  if orphans:
    raise common.DataError(
        f"nifti: {manual_dir!r} holds {common.first_few(orphans)}, named as "
        f"{'a label volume' if len(orphans) == 1 else 'label volumes'} but of no image "
        f"(the label of <dir>/<stem>.nii.gz is <dir>/<stem>{LABEL_SUFFIX}.nii.gz or "
        f"{LABEL_DIR}/<dir>/<stem>.nii.gz, either suffix): rename them after their "
        "images, or remove them.")
  missing = [image for image, label in pairs if label is None]
  if missing and len(missing) < len(pairs):
    raise common.DataError(
        f"nifti: {len(missing)} of {len(pairs)} volumes in {manual_dir!r} have no "
        f"label volume (e.g. {missing[:3]}); give every volume a label or none.")
  return pairs


def _opened(path: str, what: str):
  """A NIfTI file's image, its voxels not read: oriented, 3-D and real, or a DataError."""
  nib = common.require("nibabel")
  try:
    img = nib.load(path)
    problem = slicing.orientation_problem(img.affine)
    shape, dtype = tuple(img.shape), np.dtype(img.get_data_dtype())
  except Exception as err:  # nibabel raises many types for bad files.
    raise common.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
  if problem:
    raise common.DataError(f"{path}: {problem}.")
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) != 3 or min(shape) < 1:
    raise common.DataError(f"{path}: has shape {shape}; expected a 3-D {what}.")
  if dtype.kind not in "biuf":
    # A complex image read as its real part would lose every voxel whose
    # phase turns it negative.
    raise common.DataError(f"{path}: its voxels are of type {dtype}; expected real "
                           f"numbers (a magnitude {what}).")
  return img


def _load(path: str, what: str):
  """Loads a 3-D volume in RAS as (array as stored, voxel sizes)."""
  nib = common.require("nibabel")
  img = _opened(path, what)
  try:
    data = np.asarray(nib.as_closest_canonical(img).dataobj)
  except Exception as err:  # noqa: BLE001 (a truncated file fails here)
    raise common.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
  return data.reshape(data.shape[:3]), _voxel_sizes(img)


def _load_image(path: str):
  """Loads a 3-D image in RAS as (float32 array, voxel sizes), as `scans.read_input` does."""
  img = _opened(path, "image")
  return nifti_voxels.read_float32(path), _voxel_sizes(img)


def _voxel_sizes(img) -> tuple:
  """The voxel sizes of the affine that gave the orientation, as `scans.read_input`."""
  nib = common.require("nibabel")
  return tuple(float(z) for z in nib.affines.voxel_sizes(nifti_voxels.ras_affine(img)))


def _check_header(manual_dir: str, image_rel: str, label_rel: str | None, axis, *,
                  scored: bool = False):
  """Checks the headers (not the voxels) of an image and its label volume.

  ``scored``: the folder is only scored (`common.EVALUATION_ONLY`), cut along
  the model's own axis, which its message then names as such.

  Raises:
    DataError: naming the file, when a header cannot be read, a volume is
      not 3-D, its planes along ``axis`` are narrower than
      `slicing.MIN_PLANE` voxels, or the label volume is not on the image's
      voxel grid.
  """
  nib = common.require("nibabel")
  shapes, axes, orientations, affines = [], [], [], []
  for rel, what in ((image_rel, "image"), (label_rel, "label volume")):
    if rel is None:
      continue
    path = os.path.join(manual_dir, rel)
    try:
      header = nib.load(path)
      problem = slicing.orientation_problem(header.affine)
      if not problem:
        shape, codes = tuple(header.shape), "".join(nib.aff2axcodes(header.affine))
        orientation = nib.orientations.io_orientation(header.affine)
      description = bytes(np.asarray(header.header["descrip"]).item()).decode("latin-1")
    except Exception as err:  # nibabel raises many types for bad files.
      raise common.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
    if description.startswith(common.OUTPUT_DESCRIPTION):
      # Written beside its input (--output=site/a_recon.nii.gz), it would be
      # trained on or scored as one more subject's scan.
      raise common.DataError(
          f"{path}: reconstruct.py's output (its header says {description.strip()!r}), "
          "not a scan: move it out of the folder, which must hold scans only.")
    if problem:
      raise common.DataError(f"{path}: {problem}.")
    if len(shape) == 4 and shape[3] == 1:
      shape = shape[:3]
    if len(shape) != 3:
      raise common.DataError(f"{path}: has shape {shape}; expected a 3-D {what}.")
    shapes.append(shape)
    axes.append(codes)
    orientations.append(orientation)
    affines.append(np.asarray(header.affine, np.float64))
  _check_planes(os.path.join(manual_dir, image_rel),
                slicing.ras_shape(shapes[0], orientations[0]), axis, scored=scored)
  if len(shapes) < 2:
    return
  label_path, image_path = (os.path.join(manual_dir, r) for r in (label_rel, image_rel))
  if shapes[0] != shapes[1]:
    raise common.DataError(
        f"{label_path}: label shape {shapes[1]} differs from the image shape {shapes[0]} "
        f"of {image_path}.")
  # Each volume is turned to RAS by its own header. A label on the image's
  # voxels but with a differently oriented header would come out mirrored or
  # transposed against the image, with no error.
  if axes[0] != axes[1]:
    raise common.DataError(
        f"{label_path}: its voxel axes point {axes[1]}, those of the image {image_path} "
        f"{axes[0]}; a label must be on the image's voxel grid: save it with the image's "
        "header (affine).")
  _check_same_affine(image_path, affines[0], label_path, affines[1])


# float32's relative spacing: a header stores its affine in float32 numbers.
_EPS32 = float(np.finfo(np.float32).eps)


def _affine_tolerance(affine: np.ndarray) -> float:
  """How far (mm) two headers' affines of one voxel grid can differ, in any of their numbers.

  A header stores the affine either as float32 rows (the sform) or as a
  float32 quaternion, voxel sizes and offset (the qform), and one grid
  saved by two tools may come back through either. nibabel rebuilds the
  quaternion's first number as ``sqrt(1 − b² − c² − d²)`` in float32: its
  square is off by up to 3 ε (ε = 2⁻²³, as nibabel's own threshold allows), so
  the number by up to ``sqrt(3 ε)`` where it is near 0, and a rotation entry,
  which it enters with a factor of at most 2, by ``2 sqrt(3 ε)`` (1.2e-3): 1.0e-3
  measured near a half turn. Twice that, times the largest voxel size, bounds
  the linear part; an offset is stored as one float32 number, within ε of it.

  Args:
    affine: the image's 4×4 affine.

  Returns:
    The tolerance in mm.
  """
  zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  return float(4 * np.sqrt(3 * _EPS32) * zooms.max() + 2 * _EPS32 * np.abs(affine[:3, 3]).max())


def _check_same_affine(image_path: str, image: np.ndarray, label_path: str,
                       label: np.ndarray) -> None:
  """Refuses a label whose affine is not its image's: the label of another scan.

  Args:
    image_path: the image's file, for the message.
    image: its 4×4 affine.
    label_path: the label volume's file, for the message.
    label: its 4×4 affine.

  Raises:
    DataError: naming both files, their voxel sizes and origins, and the
      largest difference against the tolerance.
  """
  tolerance = _affine_tolerance(image)
  difference = float(np.abs(image[:3] - label[:3]).max())
  if difference <= tolerance:
    return
  def grid(affine):
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return (f"voxel sizes ({', '.join(f'{z:.6g}' for z in zooms)}) mm, origin "
            f"({', '.join(f'{t:.6g}' for t in affine[:3, 3])}) mm")
  raise common.DataError(
      f"{label_path}: its affine (voxel-to-world matrix) differs from that of the image "
      f"{image_path} by up to {difference:.3g} mm, more than float32 storage explains "
      f"({tolerance:.3g} mm): the label's {grid(label)}, the image's {grid(image)}; a label "
      "of another scan? A label must be on the image's voxel grid: save it with the image's "
      "header (affine).")


def _check_planes(path: str, ras_shape, axis, *, scored: bool = False) -> None:
  """Refuses a volume whose planes along ``axis`` are narrower than `slicing.MIN_PLANE`.

  ``scored``: a folder only scored is cut along the model's axis, which its
  user cannot change: the message does not offer it.
  """
  h, w = slicing.plane_sides(ras_shape, axis)
  if min(h, w) < slicing.MIN_PLANE:
    name = common.axis_name(axis)
    advice = (f"Leave it out of the folder: it is cut along the model's {name} planes, as "
              "the model was trained (reconstruct.py --input=FILE cuts such a volume along "
              "its thin axis)" if scored else
              "Remove the file, or slice along another axis (config.data.axis)")
    raise common.DataError(
        f"{path}: has RAS shape {ras_shape}, so its {name} planes are "
        f"{h}×{w} voxels, narrower than {slicing.MIN_PLANE}: each would "
        f"be a strip stretched over the whole image. {advice}.")


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
  # `_check_header`: they need the voxels, and reading every volume twice
  # would double the build time. Raising mid-build is safe: TFDS deletes its
  # temporary folder, so no dataset is left behind.
  data, spacing = _load_image(path)
  try:
    image = slicing.normalize_percentile(data, percentile)
  except common.DataError as err:
    raise common.DataError(f"{path}: {err}.") from err
  label = None
  if label_rel is not None:
    label_path = os.path.join(manual_dir, label_rel)
    label, _ = _load(label_path, "label volume")
    common.check_finite(label, label_path)  # Float label files can hold NaN.
    if label.shape != image.shape:
      raise common.DataError(
          f"{label_path}: label shape {label.shape} differs from the image "
          f"shape {image.shape} of {path}.")
    if label.dtype.kind == "f":
      # A label map resampled with linear interpolation: rounding would move
      # the boundaries between classes (2.5 → 2) without a word.
      fractional = label != np.rint(label)
      count = int(np.count_nonzero(fractional))
      if count:
        raise common.DataError(
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
  raise common.DataError(
      f"{label_path}: {int(np.count_nonzero(beyond)):,} of {label.size:,} label voxels "
      f"hold classes beyond int32's range, in which labels are stored (e.g. {value}): "
      f"number the classes from {_INT32.min:,} to {_INT32.max:,}.")


def label_values(path: str) -> np.ndarray:
  """The sorted distinct values of a label volume's file (as the build reads them)."""
  label, _ = _load(path, "label volume")
  return np.unique(np.asarray(label)).astype(np.int64)


def label_digests(manual_dir: str) -> dict[str, str]:
  """{image: SHA-256 of its label file's bytes} of every labelled volume of a folder.

  A segmenter records them, so that its classes cannot be renumbered under it
  (`segmenter_files.check_data`).
  """
  manual_dir = os.path.expanduser(manual_dir)
  return {image: checksums.file_digest(os.path.join(manual_dir, label))
          for image, label in find_files(manual_dir) if label is not None}


def content_digest(manual_dir: str, image_rel: str, percentile: float) -> str:
  """The SHA-256 of a volume's normalized voxels, as a build records it."""
  return checksums.array_digest(read_volume(manual_dir, image_rel, None, percentile)[0])


def settings(data_config) -> dict:
  """The settings that change the written data (the files' fingerprint included)."""
  get = functools.partial(common.field, data_config)
  manual_dir = os.path.expanduser(get("manual_dir"))
  fractions = common.check_fractions(get("split_fractions"), evaluation_only=True)
  # A folder that is only scored is read without its labels (see find_files).
  pairs = find_files(manual_dir, labels=fractions != common.EVALUATION_ONLY)
  names = (splits.subjects([image for image, _ in pairs])
           if fractions != common.EVALUATION_ONLY else [None] * len(pairs))
  # Too few volumes (or subjects) for the splits is refused here, before a
  # build is announced.
  splits.split_subjects(names, fractions, int(get("split_seed")),
                        where=os.path.abspath(manual_dir))
  files = [p for pair in pairs for p in pair if p is not None]
  out = {
      "dataset": "nifti",
      "image_size": common.check_image_size(get("image_size")),
      "axis": common.axis_name(get("axis")),
      "split_fractions": list(fractions),
      "split_seed": int(get("split_seed")),
      "min_foreground": float(get("min_foreground")),
      "percentile": float(get("percentile")),
      "labels": pairs[0][1] is not None,
      "files": common.fingerprint(manual_dir, files),
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
      manual_dir=os.path.abspath(os.path.expanduser(common.field(data_config, "manual_dir"))),
      settings=s)


class Nifti(builder_lib.SliceBuilder, skip_registration=True):
  """Slices of a folder of NIfTI volumes, optionally with label volumes."""

  DESCRIPTION = __doc__
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
  # A new version is a new build folder: a folder built by an older release
  # is cut again, not read with slices that release cut.
  VERSION = builder_lib.tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "Voxel sizes from the affine that orients a volume, not the header's pixdim.",
  }

  def _plan(self) -> Mapping[str, list[builder_lib.VolumeSpec]]:
    cfg = self.builder_config
    pairs = find_files(cfg.manual_dir, labels=cfg.settings["labels"])
    fractions, seed = cfg.settings["split_fractions"], cfg.settings["split_seed"]
    for pair in pairs:  # Fail before writing anything if a header is bad.
      _check_header(cfg.manual_dir, *pair, cfg.settings["axis"],
                    scored=tuple(fractions) == common.EVALUATION_ONLY)
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
