"""hyperrecon_jax.scans: the memory reading a NIfTI or fastMRI file takes, and its refusal."""

from memory_support import allocated_peak
import nibabel as nib
import numpy as np
import pytest
from test_scans import data_config
from test_scans import head
from test_scans import non_ras_nifti

from hyperrecon_jax import memory
from hyperrecon_jax import scans
from hyperrecon_jax.data import nifti_voxels


@pytest.mark.parametrize("dtype, slope, inter, suffix, oriented", [
    ("float32", None, 0.0, ".nii", "ras"), ("float32", None, 0.0, ".nii.gz", "non_ras"),
    ("float64", None, 0.0, ".nii.gz", "ras"), ("int16", 3.0, 5.0, ".nii.gz", "ras"),
    ("int16", 3.0, 0.0, ".nii", "ras")])
def test_reading_holds_about_two_copies_of_the_volume(tmp_path, monkeypatch, dtype, slope, inter,
                                                      suffix, oriented):
  # NumPy reports its allocations to tracemalloc. A volume positive
  # everywhere (a noise floor, as a scanner's background has) is the case
  # where the percentiles' copies are whole volumes: the float32 voxels and
  # the normalized volume are the two copies reading needs; a copy made to
  # take a percentile, or |voxels| for a warning, while both are held would
  # make it three or four. Reading a whole file through nibabel held more:
  # 3.0–4.0 float32 volumes for int16 voxels with a scale factor (float64
  # volumes), 4.2 for compressed float64 voxels, 3.4 for compressed float32
  # voxels not stored in RAS order (the reoriented image kept the voxels read).
  # 96 planes: the temporaries of resizing one plane stay small beside the
  # volume whatever the SciPy version (setup.py's lower bound holds more).
  shape = (64, 64, 96)
  monkeypatch.setattr(nifti_voxels, "SLAB_BYTES", 4 * 64 * 64 * 8)  # four planes in float64
  ras = head(shape) + np.random.default_rng(1).uniform(0.001, 0.01, shape).astype(np.float32)
  path = str(tmp_path / f"scan{suffix}")
  stored = (ras * 1000).astype(dtype)
  if oriented == "non_ras":
    non_ras_nifti(path, stored)
  else:
    img = nib.Nifti1Image(stored, np.eye(4))
    if slope is not None:
      img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
  peak = allocated_peak(lambda: scans.read_input(path, data_config(32)))[1]
  # Two volumes, the masks of the foreground and of the positive voxels (a
  # quarter of a volume each), and slice-sized temporaries.
  assert peak < 2.5 * ras.nbytes, peak / ras.nbytes
  assert peak <= scans.read_memory(shape)


def test_a_volume_too_large_to_read_is_refused_from_its_header(tmp_path):
  path = str(tmp_path / "large.nii")
  nib.save(nib.Nifti1Image(head((40, 40, 12)), np.eye(4)), path)
  with open(path, "r+b") as f:
    f.truncate(352 + 100)  # no voxels to read: the refusal comes first
  need = scans.read_memory((40, 40, 12))
  with pytest.raises(ValueError, match=(
      rf"large\.nii: reading its 40×40×12 voxels as float32 needs {memory.byte_size(need)} of "
      rf"memory, more than the {memory.byte_size(int(0.8 * need))} allowed \(80% of the "
      rf"{memory.byte_size(need)} available\); free memory, or crop or resample the volume "
      "first")):
    scans.read_input(path, data_config(32), available=need)
  with pytest.raises(ValueError, match=r"large\.nii: cannot read its voxels"):
    scans.read_input(path, data_config(32), available=int(need / 0.8) + 1)


def test_the_count_is_the_larger_of_reading_and_normalizing():
  # 1,000 voxels: the slabs and buffers of reading count more than the
  # normalizing's 2.5 volumes; 64 M voxels (16 MiB slabs): the other way.
  assert scans.read_memory((10, 10, 10)) == 4_000 + 4 * 8_000 + 2**20
  assert scans.read_memory((512, 512, 256)) == int(2.5 * 512 * 512 * 256 * 4)


def _h5(path, key, values):
  import h5py
  with h5py.File(path, "w") as f:
    f.create_dataset(key, data=values)


def _kspace(shape, dtype, seed=3):
  """Fully sampled k-space (centred, as fastMRI stores it) of a positive image."""
  image = np.random.default_rng(seed).uniform(0.1, 1.0, shape).astype(np.float32)
  return np.fft.fftshift(np.fft.fft2(image, norm="ortho"), axes=(-2, -1)).astype(dtype)


@pytest.mark.parametrize("key, make", [
    ("reconstruction_esc", lambda: np.random.default_rng(2).uniform(1e-6, 1e-4, (24, 96, 80))
     .astype(np.float32)),
    ("reconstruction_esc", lambda: np.random.default_rng(2).uniform(1e-6, 1e-4, (24, 96, 80))),
    ("kspace", lambda: _kspace((12, 96, 80), np.complex64)),
    ("kspace", lambda: _kspace((6, 4, 96, 80), np.complex64)),
    ("kspace", lambda: _kspace((6, 4, 96, 80), np.complex128)),
], ids=["float32", "float64", "single_coil", "multicoil", "multicoil_complex128"])
def test_reading_an_h5_file_holds_no_more_than_its_count(tmp_path, key, make):
  from hyperrecon_jax.data import fastmri
  path = str(tmp_path / "scan.h5")
  values = make()
  _h5(path, key, values)
  got_key, shape, need = fastmri.read_bytes(path)
  assert (got_key, shape) == (key, values.shape)
  peak = allocated_peak(lambda: scans.read_input(path, data_config(32)))[1]
  # Measured 1.06–1.57 times below the count: a count too generous would
  # refuse files that fit.
  assert peak <= need < 2 * peak, need / peak


def test_an_h5_file_too_large_to_read_is_refused_before_any_value_is_read(tmp_path,
                                                                          monkeypatch):
  from hyperrecon_jax.data import fastmri
  path = str(tmp_path / "knee.h5")
  _h5(path, "kspace", _kspace((2, 3, 40, 32), np.complex64))
  _, _, need = fastmri.read_bytes(path)
  # k-space's image (2 × 40 × 32 float32, under the 320 × 320 crop), 3.75
  # times, and 4.5 complex64 slices of 3 × 40 × 32 values.
  assert need == int(3.75 * 2 * 40 * 32 * 4 + 4.5 * 3 * 40 * 32 * 8)

  def read_target(*args, **kwargs):
    raise AssertionError("read before the count")

  monkeypatch.setattr(fastmri, "read_target", read_target)
  with pytest.raises(ValueError, match=(
      rf"knee\.h5: reading its 2×3×40×32 values of 'kspace' needs {memory.byte_size(need)} "
      rf"of memory, more than the {memory.byte_size(int(0.8 * need))} allowed \(80% of the "
      rf"{memory.byte_size(need)} available\)")):
    scans.read_input(path, data_config(32), available=need)
