"""The headers of a folder's NIfTI files, checked before their voxels are read.

A build checks every image's and label volume's header before it writes
anything (`check_header`): readable, oriented, 3-D, not a reconstruction
written by `reconstruct.py`, planes along the slicing axis at least
`slicing.MIN_PLANE` voxels wide, and a label volume on its image's voxel grid
(same shape, axes and affine, within what float32 storage explains). Reading
a file's voxels starts from its header checked again (`open_checked`), which
also refuses voxels that are not real numbers.
"""

import os

import numpy as np

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import slicing

# The start of the header description of `reconstruct.py`'s NIfTI outputs
# (`hyperrecon_jax.outputs`): a folder of scans refuses such a file
# (`check_header`), which is the model's output, not a scan.
OUTPUT_DESCRIPTION = "hyperrecon "

def open_checked(path: str, what: str):
  """A NIfTI file's image, its voxels not read: oriented, 3-D and real, or a DataError."""
  nib = dependencies.require("nibabel")
  try:
    img = nib.load(path)
    problem = slicing.orientation_problem(img.affine)
    shape, dtype = tuple(img.shape), np.dtype(img.get_data_dtype())
  except Exception as err:  # nibabel raises many types for bad files.
    raise data_errors.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
  if problem:
    raise data_errors.DataError(f"{path}: {problem}.")
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) != 3 or min(shape) < 1:
    raise data_errors.DataError(f"{path}: has shape {shape}; expected a 3-D {what}.")
  if dtype.kind not in "biuf":
    # A complex image read as its real part would lose every voxel whose
    # phase turns it negative.
    raise data_errors.DataError(f"{path}: its voxels are of type {dtype}; expected real "
                                f"numbers (a magnitude {what}).")
  return img


def check_header(manual_dir: str, image_rel: str, label_rel: str | None, axis, *,
                 scored: bool = False):
  """Checks the headers (not the voxels) of an image and its label volume.

  ``scored``: the folder is only scored (`config_fields.EVALUATION_ONLY`), cut along
  the model's own axis, which its message then names as such.

  Raises:
    DataError: naming the file, when a header cannot be read, a volume is
      not 3-D, its planes along ``axis`` are narrower than
      `slicing.MIN_PLANE` voxels, or the label volume is not on the image's
      voxel grid.
  """
  nib = dependencies.require("nibabel")
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
      raise data_errors.DataError(f"{path}: cannot be read as a NIfTI {what} ({err}).") from err
    if description.startswith(OUTPUT_DESCRIPTION):
      # Written beside its input (--output=site/a_recon.nii.gz), it would be
      # trained on or scored as one more subject's scan.
      raise data_errors.DataError(
          f"{path}: reconstruct.py's output (its header says {description.strip()!r}), "
          "not a scan: move it out of the folder, which must hold scans only.")
    if problem:
      raise data_errors.DataError(f"{path}: {problem}.")
    if len(shape) == 4 and shape[3] == 1:
      shape = shape[:3]
    if len(shape) != 3:
      raise data_errors.DataError(f"{path}: has shape {shape}; expected a 3-D {what}.")
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
    raise data_errors.DataError(
        f"{label_path}: label shape {shapes[1]} differs from the image shape {shapes[0]} "
        f"of {image_path}.")
  # Each volume is turned to RAS by its own header. A label on the image's
  # voxels but with a differently oriented header would come out mirrored or
  # transposed against the image, with no error.
  if axes[0] != axes[1]:
    raise data_errors.DataError(
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
  raise data_errors.DataError(
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
    name = config_fields.axis_name(axis)
    advice = (f"Leave it out of the folder: it is cut along the model's {name} planes, as "
              "the model was trained (reconstruct.py --input=FILE cuts such a volume along "
              "its thin axis)" if scored else
              "Remove the file, or slice along another axis (config.data.axis)")
    raise data_errors.DataError(
        f"{path}: has RAS shape {ras_shape}, so its {name} planes are "
        f"{h}×{w} voxels, narrower than {slicing.MIN_PLANE}: each would "
        f"be a strip stretched over the whole image. {advice}.")

