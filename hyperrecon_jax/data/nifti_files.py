"""Which files a folder of NIfTI volumes holds, and how its images and labels pair.

A folder's `.nii` and `.nii.gz` files (searched recursively) are images,
label volumes or masks, told apart by their names alone: files under the
top-level `LABEL_DIR`, or whose names end in `LABEL_SUFFIX`, are label
volumes; files whose names end in one of BIDS's marks of masks and
segmentations (`MASK_SUFFIXES`) are neither; the rest are images. Each image
pairs with at most one label volume, and either every image has one or none
does (`find_files`). No header or voxel is read here: the headers are
checked by `nifti_headers`, the voxels read by `nifti`.
"""

import os

from hyperrecon_jax import checksums
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import file_lists

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
      another format (`file_lists.check_no_other_scans`), or (with ``labels``)
      only some images have labels, a label volume pairs with no image, or an
      image has two.
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise data_errors.DataError(f"nifti: manual_dir {manual_dir!r} is not a folder. {INSTRUCTIONS}")
  everything = file_lists.list_files(manual_dir, SUFFIXES)
  file_lists.check_no_other_scans(manual_dir, "nifti", SUFFIXES)
  is_label = {p: p.split(os.sep)[0] == LABEL_DIR or _stem(p).endswith(LABEL_SUFFIX)
              for p in everything}
  images = [p for p in everything if not is_label[p] and not _stem(p).endswith(MASK_SUFFIXES)]
  if not images:
    raise data_errors.DataError(
        f"nifti: no .nii or .nii.gz volume in {manual_dir!r}. {INSTRUCTIONS}")
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
      raise data_errors.DataError(
          f"nifti: {image} in {manual_dir!r} has {len(found)} label volumes, "
          f"{' and '.join(found)}: keep one.")
    claimed.update(found)
    pairs.append((image, found[0] if found else None))
  orphans = [p for p in everything if is_label[p] and p not in claimed]
  if orphans:
    raise data_errors.DataError(
        f"nifti: {manual_dir!r} holds {file_lists.first_few(orphans)}, named as "
        f"{'a label volume' if len(orphans) == 1 else 'label volumes'} but of no image "
        f"(the label of <dir>/<stem>.nii.gz is <dir>/<stem>{LABEL_SUFFIX}.nii.gz or "
        f"{LABEL_DIR}/<dir>/<stem>.nii.gz, either suffix): rename them after their "
        "images, or remove them.")
  missing = [image for image, label in pairs if label is None]
  if missing and len(missing) < len(pairs):
    raise data_errors.DataError(
        f"nifti: {len(missing)} of {len(pairs)} volumes in {manual_dir!r} have no "
        f"label volume (e.g. {missing[:3]}); give every volume a label or none.")
  return pairs


def label_digests(manual_dir: str) -> dict[str, str]:
  """{image: SHA-256 of its label file's bytes} of every labelled volume of a folder.

  A segmenter records them, so that its classes cannot be renumbered under it
  (`segmenter_files.check_data`).
  """
  manual_dir = os.path.expanduser(manual_dir)
  return {image: checksums.file_digest(os.path.join(manual_dir, label))
          for image, label in find_files(manual_dir) if label is not None}

