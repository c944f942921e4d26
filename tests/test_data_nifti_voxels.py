"""Tests of hyperrecon_jax/data/nifti_voxels.py: a NIfTI volume read slab by slab."""

import re

from memory_support import allocated_peak
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import nifti_voxels
from hyperrecon_jax.data import value_checks

SHAPE = (24, 20, 13)
# Two planes of SHAPE in float64 per slab: seven slabs, the last of one plane.
SLAB = 2 * SHAPE[0] * SHAPE[1] * 8
NON_RAS = np.array([[0.0, -1.1, 0, 3], [0, 0, 0.9, 2], [-1.2, 0, 0, 1], [0, 0, 0, 1]])


def _save(path, data, affine=None, slope=None, inter=0.0):
  img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
  if slope is not None:
    img.header.set_slope_inter(slope, inter)
  nib.save(img, str(path))
  return str(path)


def _nibabel_float32(path):
  """What reading the whole volume through nibabel gives, as float32: the reference."""
  img = nib.as_closest_canonical(nib.load(path))
  data = np.asanyarray(img.dataobj)
  return data.reshape(data.shape[:3]).astype(np.float32), img.affine


def _volume(dtype, seed=0, shape=SHAPE):
  rng = np.random.default_rng(seed)
  if np.dtype(dtype).kind == "f":
    return rng.uniform(-50, 3000, shape).astype(dtype)
  info = np.iinfo(dtype)
  return rng.integers(max(info.min, -3000), min(info.max, 3000), shape, endpoint=True,
                      dtype=dtype)


@pytest.mark.parametrize("dtype, slope, inter", [
    ("float32", None, 0.0), ("float64", None, 0.0), ("int16", None, 0.0), ("uint8", None, 0.0),
    ("int32", None, 0.0), ("int16", 0.37, 0.0), ("int16", 0.37, 11.3), ("uint8", 1.7, -4.0),
    ("float32", 2.5, 1.0)])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("oriented", ["ras", "non_ras"])
def test_the_voxels_are_nibabel_s_whole_read_bit_for_bit(tmp_path, dtype, slope, inter, suffix,
                                                         oriented):
  # Scaled by nibabel one slab at a time: the same elementwise operations in
  # the same types as one read of the whole volume, so equality is exact.
  path = _save(tmp_path / f"v{suffix}", _volume(dtype),
               NON_RAS if oriented == "non_ras" else None, slope, inter)
  expected, affine = _nibabel_float32(path)
  got = nifti_voxels.read_float32(path, slab_bytes=SLAB)
  assert got.dtype == np.float32 and got.shape == expected.shape
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(nifti_voxels.ras_affine(nib.load(path)), affine)


def test_a_4d_file_of_one_volume_and_a_plane_larger_than_a_slab_are_read(tmp_path):
  data = _volume("float32")
  path = _save(tmp_path / "v4.nii.gz", data[..., None])
  got = nifti_voxels.read_float32(path, slab_bytes=1)  # one plane per slab
  np.testing.assert_array_equal(got, data)


def _with(data, where, value):
  data = data.copy()
  for index in where:
    data[index] = value
  return data


# Voxels in the first and in the last slab: the counts are the whole volume's.
FIRST_AND_LAST = [(0, 0, 0), (5, 7, 12), (3, 3, 12)]


@pytest.mark.parametrize("case, message", [
    ("nan", r"v\.nii\.gz: 3 of 6,240 voxels are not finite \(NaN or ±Inf\); fix or remove "
            r"the file\.$"),
    ("beyond", r"v\.nii\.gz: 3 of 6,240 voxels are finite in its float64 but beyond float32's "
               r"range \(largest magnitude 1e\+39 > 3\.4e\+38\)"),
    ("faint", r"v\.nii\.gz: the largest magnitude of its voxels, 1e-39, is below float32's "
              r"smallest normal number"),
])
def test_each_check_counts_every_slab(tmp_path, case, message):
  data = {"nan": _with(_volume("float32"), FIRST_AND_LAST, np.nan),
          "beyond": _with(_volume("float64"), FIRST_AND_LAST, 1e39),
          # Zero everywhere but a faint voxel in the last slab: no slab alone
          # decides that the volume is too faint.
          "faint": _with(np.zeros(SHAPE), [(5, 7, 12)], 1e-39)}[case]
  path = _save(tmp_path / "v.nii.gz", data)
  with pytest.raises(data_errors.DataError, match=message):
    nifti_voxels.read_float32(path, slab_bytes=SLAB)
  # The same message as the check of the whole array at once.
  with pytest.raises(data_errors.DataError, match=message):
    value_checks.real_float32(np.asanyarray(nib.load(path).dataobj), path)


def test_complex_voxels_are_refused_before_they_are_read(tmp_path):
  path = _save(tmp_path / "c.nii.gz", _volume("float32").astype(np.complex64))
  # Anchored: the refusal is not wrapped into a read error that quotes it.
  with pytest.raises(data_errors.DataError, match=rf"^{re.escape(path)}: its voxels are of type "
                                             r"complex64; expected real numbers \(a magnitude "
                                             r"image\)$"):
    nifti_voxels.read_float32(path)


def test_a_truncated_file_is_named(tmp_path):
  path = _save(tmp_path / "t.nii", _volume("float32"))
  with open(path, "r+b") as f:
    f.truncate(352 + 1000)  # the header and a fifth of the first plane
  with pytest.raises(data_errors.DataError, match=r"t\.nii: cannot read its voxels"):
    nifti_voxels.read_float32(path)


@pytest.mark.parametrize("dtype, slope, inter, suffix", [
    ("int16", 3.0, 5.0, ".nii.gz"), ("int16", 3.0, 5.0, ".nii"), ("float64", None, 0.0, ".nii.gz"),
    ("float32", None, 0.0, ".nii.gz")])
def test_reading_holds_the_float32_volume_and_a_few_slabs(tmp_path, dtype, slope, inter, suffix):
  # Reading the whole volume through nibabel held two float64 volumes beside
  # the float32 one for a scaled integer volume (5.0 float32 volumes with an
  # intercept), and a compressed file's bytes about twice over while they
  # were decompressed (4.2 for float64). Zeros around a block: a volume that
  # compresses well, as a brain's background does.
  shape = (128, 128, 64)  # 4 MiB in float32: the buffers weigh little beside it
  data = np.zeros(shape, dtype)
  data[16:-16, 16:-16, 8:-8] = _volume(dtype, shape=(96, 96, 48))
  path = _save(tmp_path / f"v{suffix}", data, None, slope, inter)
  slab = 4 * shape[0] * shape[1] * 8
  volume, peak = allocated_peak(lambda: nifti_voxels.read_float32(path, slab_bytes=slab))
  assert peak <= nifti_voxels.read_bytes(shape, slab_bytes=slab), (peak, volume.nbytes)
  # The bound itself: the volume, four slabs and the buffers.
  assert nifti_voxels.read_bytes(shape, slab_bytes=slab) == (
      volume.nbytes + 4 * slab + nifti_voxels.BUFFER_BYTES)
