"""A NIfTI volume's voxels as float32 in RAS order, read slab by slab.

Reading a whole volume through nibabel holds more than the float32 volume at
its peak: a compressed file's bytes are held about twice over while they are
decompressed (up to four times for a volume that compresses well), and a
scale factor (``scl_slope``, ``scl_inter``) turns an integer volume into one
or two float64 volumes before the float32 copy is made. `read_float32` reads
the volume in slabs of the stored array's last axis (contiguous in the file),
each scaled by nibabel exactly as a whole read scales it, into one float32
volume: the voxels are those of ``np.asanyarray(img.dataobj).astype(float32)``
bit for bit, and the peak is the float32 volume and a few slabs (`read_bytes`).
"""

import numpy as np

from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import value_checks

# A slab's bytes at most, in the type the scaling gives (float64 for a
# scaled integer volume): a few planes of a large volume.
SLAB_BYTES = 16 * 2**20
# What reading a slab holds besides its arrays, at most: zlib's and the file
# reader's buffers.
BUFFER_BYTES = 2**20


def read_float32(path: str, *, slab_bytes: int | None = None) -> np.ndarray:
  """The voxels of a 3-D NIfTI file (or 4-D with one volume) as float32, in RAS order.

  Args:
    path: the file.
    slab_bytes: the most bytes of one slab in float64, the widest type
      nibabel's scaling gives a real volume (default `SLAB_BYTES`).

  Returns:
    The (X, Y, Z) volume reoriented to the closest RAS axes, as
    `nibabel.as_closest_canonical` reorients it (`ras_affine`): a view of
    the volume in the stored order, its axes flipped and transposed.

  Raises:
    DataError: voxels that are not real numbers, not finite, beyond float32's
      range or all below its smallest normal number (`value_checks.check_values`,
      counted over the whole volume), or a file that cannot be read.
  """
  nib = dependencies.require("nibabel")
  try:
    # One file handle for every slab: a compressed file reopened per slab
    # would be decompressed from its start each time.
    img = nib.load(path, keep_file_open=True)
    value_checks.check_real(img.get_data_dtype(), path)
    shape = tuple(int(n) for n in img.shape)
    volume = np.empty(shape[:3], np.float32, order="F")  # NIfTI's own order
    step = max(1, int(slab_bytes or SLAB_BYTES) // max(1, shape[0] * shape[1] * 8))
    counts = value_checks.ValueCounts(np.dtype(img.get_data_dtype()))
    for k in range(0, shape[2], step):
      slab = np.asanyarray(img.dataobj[:, :, k:k + step])
      slab = slab.reshape(slab.shape[:3])
      counts = counts.add(value_checks.value_counts(slab))
      # Values beyond float32's range turn to ±inf here: refused below.
      with np.errstate(over="ignore", invalid="ignore"):
        volume[:, :, k:k + step] = slab
      del slab
  except data_errors.DataError:
    raise
  except Exception as err:  # noqa: BLE001 (nibabel raises many types for a truncated file)
    raise data_errors.DataError(f"{path}: cannot read its voxels ({err})") from None
  value_checks.check_values(counts, path)
  return nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(img.affine))


def ras_affine(img) -> np.ndarray:
  """The affine of `read_float32`'s volume: `nibabel.as_closest_canonical`'s, from the header."""
  nib = dependencies.require("nibabel")
  ornt = nib.orientations.io_orientation(img.affine)
  return img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape)


def read_bytes(shape, *, slab_bytes: int | None = None) -> int:
  """The most bytes `read_float32` holds at once for a volume of ``shape``.

  The float32 volume, four slabs (one read, with the bytes it was made of,
  and its scaled copies: ``arr * slope`` and ``+ inter`` are two arrays) and
  `BUFFER_BYTES`. Measured with tracemalloc on 2026-12-07: at most 2.0 slabs
  above the volume with 16 MiB slabs (256×256×180, int16 with a slope and an
  intercept, compressed), 4.8 with slabs of one 64×64 plane, where the
  buffers weigh most; tests/test_data_nifti_voxels.py checks the bound.
  """
  shape = tuple(int(n) for n in shape)
  voxels = int(np.prod(shape[:3]))
  return voxels * 4 + 4 * min(int(slab_bytes or SLAB_BYTES), voxels * 8) + BUFFER_BYTES
