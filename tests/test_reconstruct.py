"""hyperrecon_jax.reconstruct and experiments/reconstruct.py: the user's own scans.

The model is the shipped one (64×64, CS-MRI 8× without noise); the volumes are
small synthetic ones written here, and the MNI152 template for the check
against the data pipeline.
"""

import errno
import json
import os
import re
import subprocess
import sys
import tempfile

import configs
import h5py
import jax.numpy as jnp
import ml_collections
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax import pretrained
from hyperrecon_jax import reconstruct as rc
from hyperrecon_jax.data import mni152
from hyperrecon_jax.data import slicing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = "mni152_csmri8x_dc_tv"


@pytest.fixture(scope="module")
def model():
  return pretrained.load(SHIPPED)


def data_config(size, **extra):
  return ml_collections.ConfigDict({"data": {
      "image_size": size, "axis": "axial", "percentile": 99.5, "min_foreground": 0.01,
      **extra}})


def non_ras_nifti(path, ras):
  """Saves a RAS volume stored as (S, L, P) axes: every axis moved and two flipped."""
  data = np.flip(np.transpose(ras, (2, 0, 1)), axis=(1, 2)).copy()
  affine = np.zeros((4, 4))
  affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 1.0, -1.0, -1.0, 1.0
  nib.save(nib.Nifti1Image(data, affine), path)
  return data, affine


def head(shape=(40, 40, 12), seed=0):
  """A RAS volume with a foreground block whose crop box is the whole plane."""
  ras = np.zeros(shape, np.float32)
  ras[4:-4, 4:-4, :] = np.random.default_rng(seed).uniform(
      0.2, 1.0, (shape[0] - 8, shape[1] - 8, shape[2]))
  return ras


def test_put_back_inverts_read_input_exactly_for_any_orientation(tmp_path):
  # The crop box is the 40×40 plane (foreground 4..35 plus the 4-voxel margin)
  # and image_size is 40: no resampling, so the round trip must be exact and
  # any orientation mistake shows as a permuted or flipped volume.
  path = str(tmp_path / "scan.nii.gz")
  data, _ = non_ras_nifti(path, head())
  scan = rc.read_input(path, data_config(40))
  assert scan.box == (0, 40, 0, 40) and scan.images.shape == (12, 40, 40)
  back = rc.put_back(scan, scan.images)
  np.testing.assert_array_equal(back, np.clip(data / scan.scale, 0, 1) * scan.scale)


def test_read_input_cuts_the_template_as_the_data_pipeline(data_dir, tmp_path):
  from hyperrecon_jax import data
  config = data_config(32, name="mni152", data_dir=data_dir)
  want = {}
  for batch in data.batches(_full_data_config(data_dir), "test", batch_size=8,
                            training=False):
    for image, s, valid in zip(batch["image"], batch["slice"], batch["valid"]):
      if valid:
        want[int(s)] = image
  scan = rc.read_input(mni152.template_paths()["t1"], config)
  got = np.stack([scan.images[s] for s in want])
  # The dataset's foreground is the brain mask (T1 > 0), ours T1 above 5 % of
  # the 99.5th percentile; on the skull-stripped template both give one box.
  np.testing.assert_allclose(got, np.stack(list(want.values())), atol=1e-6)
  assert scan.kept[list(want)].all()


def _full_data_config(data_dir):
  c = configs.default().data
  c.image_size, c.data_dir = 32, data_dir
  return c


def test_unfit_from_square_inverts_fit_to_square_on_a_smooth_image():
  # A linear ramp: linear interpolation reproduces it exactly away from the
  # border (upsampling 30 → 64 needs no anti-alias filter), so the interior
  # differs only by float32 roundoff of values ≤ 1.
  rows, cols = np.mgrid[0:20, 0:30].astype(np.float32)
  image = (rows / 19 + cols / 29) / 2
  square = slicing.fit_to_square(image, 64, order=1, spacing=(1.0, 1.0))
  back = slicing.unfit_from_square(square, image.shape)
  np.testing.assert_allclose(back[2:-2, 2:-2], image[2:-2, 2:-2], atol=1e-5)


def test_reconstruct_slices_matches_per_row_coefficients(model):
  config, net, variables, _ = model
  rng = np.random.default_rng(0)
  zf = jnp.asarray(rng.normal(size=(5, 64, 64, 2)), jnp.float32)
  lambdas = np.array([[0.0], [0.3], [1.0]], np.float32)
  got = rc.reconstruct_slices(net, variables, zf, lambdas, batch=2)  # padded last batch
  for i, lam in enumerate(lambdas):
    coeffs = hparams.coefficients(jnp.tile(lam[None], (5, 1)))  # (B, K): per-row weights
    want = np.asarray(net.apply(variables, zf, coeffs))
    # One generated weight set vs one per row: the same float32 products in
    # another order; outputs are O(1), so 1e-4 is ~100 ulps of headroom.
    np.testing.assert_allclose(got[i], want, atol=1e-4)


def test_volume_writes_a_4d_nifti_on_the_input_grid(model, tmp_path):
  config, net, variables, _ = model
  path = str(tmp_path / "scan.nii")
  data, affine = non_ras_nifti(path, head((48, 56, 10)))
  scan = rc.read_input(path, config)
  result = rc.volume(config, net, variables, scan, [[0.0], [1.0]], save_input=True)
  out = str(tmp_path / "recon.nii.gz")
  written = rc.write(result, out, model=SHIPPED)
  assert written == [out, str(tmp_path / "recon.json"), str(tmp_path / "recon_zero_filled.nii.gz")]
  img = nib.load(out)
  assert img.shape == data.shape + (2,)
  np.testing.assert_array_equal(img.affine, affine)
  assert img.header["descrip"].tobytes().startswith(b"hyperrecon lam=0,1")
  squares = rc.reconstruct_slices(net, variables, rc.measure(config, scan), [[0.0], [1.0]])
  for i in range(2):
    np.testing.assert_allclose(img.get_fdata()[..., i], rc.put_back(scan, squares[i]),
                               rtol=1e-6, atol=1e-6 * scan.scale)
  # λ changes the image: λ = 1 (total variation only) is far smoother.
  assert np.abs(img.get_fdata()[..., 0] - img.get_fdata()[..., 1]).max() > 0.1 * scan.scale
  sidecar = json.load(open(str(tmp_path / "recon.json")))
  assert sidecar["lambdas"] == [[0.0], [1.0]] and sidecar["model"] == SHIPPED
  assert nib.load(written[2]).shape == data.shape


def test_h5_kspace_input_and_output(model, tmp_path):
  config, net, variables, _ = model
  rng = np.random.default_rng(1)
  image = np.zeros((3, 64, 64), np.float32)
  image[:, 12:52, 16:48] = rng.uniform(0.3, 1.0, (3, 40, 32))
  kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)),
                                       norm="ortho"), axes=(-2, -1))
  path = str(tmp_path / "file.h5")
  with h5py.File(path, "w") as f:
    f["kspace"] = kspace.astype(np.complex64)
  scan = rc.read_input(path, config)
  # 64×64 k-space into a 64×64 model: the image is the normalized magnitude.
  np.testing.assert_allclose(scan.images, image / image.max(), atol=1e-5)
  result = rc.volume(config, net, variables, scan, [[0.5]])
  rc.write(result, str(tmp_path / "out.h5"))
  with h5py.File(str(tmp_path / "out.h5"), "r") as f:
    got = f[rc.H5_DATASET][()]
    assert got.shape == (3, 64, 64)
    np.testing.assert_allclose(f.attrs["lambdas"], [[0.5]])
  np.testing.assert_allclose(got, result["recon"][0], rtol=1e-6)


@pytest.mark.parametrize("shape, pattern", [
    ((20, 20), r"shape \(20, 20\); expected a 3-D volume"),
    ((20, 20, 8, 3), r"shape \(20, 20, 8, 3\); expected a 3-D volume"),
])
def test_a_2d_or_4d_nifti_is_refused(tmp_path, shape, pattern):
  path = str(tmp_path / "bad.nii.gz")
  nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
  with pytest.raises(ValueError, match=pattern):
    rc.read_input(path, data_config(32))


def test_nan_voxels_and_empty_volumes_are_refused(tmp_path):
  volume = head()
  volume[5, 5, 5] = np.nan
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "nan.nii.gz"))
  with pytest.raises(ValueError, match="nan.nii.gz.*NaN"):
    rc.read_input(str(tmp_path / "nan.nii.gz"), data_config(32))
  nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)),
           str(tmp_path / "zero.nii.gz"))
  with pytest.raises(ValueError, match="zero.nii.gz.*no positive voxel"):
    rc.read_input(str(tmp_path / "zero.nii.gz"), data_config(32))


@pytest.mark.parametrize("text, num, pattern", [
    ("1.5", 1, r"λ = 1.5 is outside \[0, 1\]"),
    ("-0.1,0.5", 1, r"λ = -0.1 is outside"),
    ("0.2:0.3", 1, r"'0.2:0.3' has 2 values, the model's loss has 1"),
    ("0.2", 2, r"'0.2' has 1 values, the model's loss has 2"),
    ("abc", 1, r"'abc' is not a number"),
    ("grid:x", 1, r"grid:N needs an integer"),
])
def test_bad_lambdas_name_the_problem(text, num, pattern):
  with pytest.raises(ValueError, match=pattern):
    rc.parse_lambdas(text, num)


def test_parse_lambdas_forms():
  np.testing.assert_allclose(rc.parse_lambdas("0.3", 1), [[0.3]])
  np.testing.assert_allclose(rc.parse_lambdas("0,0.5,1", 1), [[0], [0.5], [1]])
  np.testing.assert_allclose(rc.parse_lambdas("grid:3", 1), [[0], [0.5], [1]])
  np.testing.assert_allclose(rc.parse_lambdas("0.2:0.4,1:0", 2), [[0.2, 0.4], [1, 0]])


def test_outputs_are_checked_before_any_work(tmp_path):
  out = tmp_path / "recon.nii.gz"
  out.write_bytes(b"keep")
  with pytest.raises(ValueError, match="exists; give --overwrite"):
    rc.check_outputs(rc.output_paths("nifti", str(out), False), overwrite=False)
  with pytest.raises(ValueError, match="NIfTI input gives a NIfTI output"):
    rc.output_paths("nifti", str(tmp_path / "x.h5"), False)
  with pytest.raises(ValueError, match="does not exist"):
    rc.check_outputs([str(tmp_path / "missing" / "x.nii")], overwrite=False)
  with pytest.raises(ValueError, match="not a NIfTI .* or fastMRI"):
    rc.input_kind("scan.mha")
  assert out.read_bytes() == b"keep"


def run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "reconstruct.py"),
                         *args], env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def test_cli_writes_once_and_refuses_to_overwrite(tmp_path):
  path = str(tmp_path / "scan.nii.gz")
  non_ras_nifti(path, head((48, 48, 6)))
  out = str(tmp_path / "recon.nii.gz")
  args = [f"--pretrained={SHIPPED}", f"--input={path}", f"--output={out}"]
  proc = run_cli(*args, "--lam=grid:3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert nib.load(out).shape == (6, 48, 48, 3)
  before = open(out, "rb").read()
  for extra, pattern in [("--lam=0.5", r"recon.nii.gz exists; give --overwrite"),
                         ("--lam=2", r"outside \[0, 1\]")]:
    if "outside" in pattern:
      args[-1] = f"--output={tmp_path / 'other.nii.gz'}"
    proc = run_cli(*args, extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr
  assert open(out, "rb").read() == before
  assert not os.path.exists(tmp_path / "other.nii.gz")


# --- volumes the configured plane does not suit ----------------------------------------


def test_a_thin_volume_is_sliced_along_its_thin_axis(tmp_path):
  # Three slices along R-L: the model's axial planes would be 3×40 strips, so
  # the three 40×40 sagittal planes are reconstructed, and the note says so.
  path = str(tmp_path / "thin.nii.gz")
  ras = head((40, 40, 3)).transpose(2, 0, 1).copy()  # (3, 40, 40), RAS
  nib.save(nib.Nifti1Image(ras, np.eye(4)), path)
  scan = rc.read_input(path, data_config(40))
  assert scan.axis == 0 and scan.images.shape == (3, 40, 40)
  assert any(re.search(r"slicing sagittal .*not the model's axial.*3×40-voxel strips", note)
             for note in scan.notes), scan.notes
  np.testing.assert_allclose(rc.put_back(scan, scan.images), np.clip(ras, 0, scan.scale),
                             atol=1e-6)
  with pytest.raises(ValueError, match=r"axial planes are 3×40 voxels.*--axis=sagittal"):
    rc.read_input(path, data_config(40), axis="axial")
  assert rc.read_input(path, data_config(40), axis="sagittal").axis == 0


def test_a_single_slice_volume_is_one_slice_and_a_strip_is_refused(tmp_path):
  path = str(tmp_path / "one.nii.gz")
  nib.save(nib.Nifti1Image(head((40, 48, 1)), np.eye(4)), path)
  scan = rc.read_input(path, data_config(32))
  assert scan.axis == 2 and scan.images.shape == (1, 32, 32) and scan.kept.all()
  assert rc.put_back(scan, scan.images).shape == (40, 48, 1)
  nib.save(nib.Nifti1Image(head((40, 48, 3))[:, :4], np.eye(4)), str(tmp_path / "strip.nii"))
  with pytest.raises(ValueError, match=r"RAS shape \(40, 4, 3\), so every plane is narrower"):
    rc.read_input(str(tmp_path / "strip.nii"), data_config(32))


def test_voxels_beyond_float32_are_named_as_such(tmp_path):
  volume = head().astype(np.float64)
  volume[5, 5, 5] = 1e39  # finite in float64, inf in float32
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "big.nii.gz"))
  with pytest.raises(ValueError, match=r"big.nii.gz: 1 of 19,200 voxels are finite in its "
                                       r"float64 but beyond float32's range \(largest "
                                       r"magnitude 1e\+39"):
    rc.read_input(str(tmp_path / "big.nii.gz"), data_config(32))


# --- the output's size, type and intensity ----------------------------------------------


def small_scan(tmp_path, dtype=np.float32, shape=(40, 40, 12)):
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image((head(shape) * 1000).astype(dtype), np.eye(4)), path)
  return rc.read_input(path, data_config(32))


def test_an_output_too_large_for_memory_is_refused_with_what_fits(tmp_path):
  scan = small_scan(tmp_path)  # 19,200 voxels: 75 KiB a float32 volume
  per_volume = 19_200 * 4
  assert rc.check_memory(scan, 10, available=2**30) == 12 * per_volume
  with pytest.raises(ValueError, match=r"scan.nii.gz: 100,000 λ value\(s\) × 40×40×12 voxels "
                                       r"× 4 bytes need 7.2 GiB of memory, more than the "
                                       r"819 MiB allowed \(80% of the 1.0 GiB available\); "
                                       r"give at most 11,182 λ values per run"):
    rc.check_memory(scan, 100_000, available=2**30)
  fit = (int(0.8 * 2**30) - 2 * per_volume) // per_volume
  assert fit == 11_182 and rc.check_memory(scan, fit, available=2**30) <= 0.8 * 2**30
  with pytest.raises(ValueError, match="even one λ does not fit"):
    rc.check_memory(scan, 1, available=per_volume)


def test_a_huge_grid_is_refused_before_it_is_built():
  with pytest.raises(ValueError, match=r"grid:100000 gives 100000\^2 = 10,000,000,000 λ"):
    rc.parse_lambdas("grid:100000", 2)


def test_output_dtypes(model, tmp_path):
  config, net, variables, _ = model
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image((head((48, 48, 2)) * 1000).astype(np.int16), np.eye(4)), path)
  scan = rc.read_input(path, config)
  assert scan.input_dtype == "int16"
  result = rc.volume(config, net, variables, scan, [[0.0], [0.5]], dtype="input")
  assert result["recon"].dtype == np.float32 and result["dtype"] == "int16"
  rc.write(result, str(tmp_path / "out.nii.gz"))
  img = nib.load(str(tmp_path / "out.nii.gz"))
  assert img.get_data_dtype() == np.int16 and img.shape == (48, 48, 2, 2)
  # Scaled to the output's range: rounding costs 1/65535 of that range.
  span = result["recon"].max() - result["recon"].min()
  np.testing.assert_allclose(img.get_fdata(), np.moveaxis(result["recon"], 0, -1),
                             atol=span / 65535 * 1.01)
  assert json.load(open(tmp_path / "out.json"))["dtype"] == "int16"
  with pytest.raises(ValueError, match=r"NIfTI has no float16 type.*--dtype=int16"):
    rc.output_dtype(scan, "float16")
  h5_path = str(tmp_path / "file.h5")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 100
  h5_scan = rc.read_input(h5_path, config)
  result = rc.volume(config, net, variables, h5_scan, [[0.5]], dtype="float16")
  assert result["recon"].dtype == np.float16
  rc.write(result, str(tmp_path / "half.h5"))
  with h5py.File(str(tmp_path / "half.h5"), "r") as f:
    assert f[rc.H5_DATASET].dtype == np.float16 and f[rc.H5_DATASET].shape == (2, 64, 64)
  with pytest.raises(ValueError, match=r"an .h5 output holds no scale factor"):
    rc.output_dtype(h5_scan, "int16")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 1e5
  with pytest.raises(ValueError, match=r"float16 keeps 3 digits only .* span 1e\+03 to 2e\+05"):
    rc.output_dtype(rc.read_input(h5_path, config), "float16")


def test_intensity_that_cannot_be_trusted_is_said(tmp_path):
  scan = small_scan(tmp_path)
  assert scan.warnings == () and scan.reference > 0
  good = rc.put_back(scan, scan.images)
  assert rc.intensity_warnings(scan, [[0.0], [0.5]], np.stack([good, 0.9 * good])) == []
  (line,) = rc.intensity_warnings(scan, [[0.0], [0.5]], np.stack([0.05 * good, 0.3 * good]))
  # put_back(images) is the input blurred by the 40 → 32 → 40 resizing: ratios ≈ 1.
  assert re.match(r"at every λ .* is 0\.0\d+× to 0\.\d+× the input's \(outside \[0.5, 2\]\): "
                  r"the output's intensity cannot be trusted", line), line
  (line,) = rc.intensity_warnings(scan, [[0.0], [1.0]], np.stack([good, 0.2 * good]))
  assert re.match(r"at λ = 1 the reconstruction's mean intensity in the foreground is "
                  r"0\.\d+× the input's \(outside \[0.5, 2\], unlike at the other", line), line
  # A scale that rests on a few voxels: 200 positive voxels, 1 above the 99.5th percentile.
  volume = np.zeros((20, 20, 2), np.float32)
  volume[5:15, 5:15, :] = np.random.default_rng(0).uniform(1, 2, (10, 10, 2))
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "few.nii.gz"))
  (line,) = rc.read_input(str(tmp_path / "few.nii.gz"), data_config(16)).warnings
  assert "rests on 1.0 of the scan's 200 positive voxels" in line


def unwritable_folder(tmp_path):
  """A folder this user cannot create files in, or skips the test."""
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(0o555)
  for candidate in (str(folder), "/sys"):
    try:
      fd, probe = tempfile.mkstemp(dir=candidate)
    except OSError:
      return candidate
    os.close(fd)
    os.remove(probe)  # root ignores the permission bits
  pytest.skip("no folder here is read-only for this user")


def test_an_unwritable_output_folder_is_refused_up_front(tmp_path):
  folder = unwritable_folder(tmp_path)
  out = os.path.join(folder, "recon.nii.gz")
  with pytest.raises(ValueError, match=rf"recon.nii.gz: cannot write in the folder {folder} \("):
    rc.check_outputs(rc.output_paths("nifti", out, False), overwrite=False)


def test_a_failed_write_names_the_output_not_its_temporary_file(tmp_path):
  from hyperrecon_jax import outputs
  path = str(tmp_path / "recon.nii.gz")

  def full_disk(tmp):
    open(tmp, "wb").close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

  with pytest.raises(OSError, match=rf"^{path}: cannot be written in {tmp_path} \(No space") as e:
    outputs._atomic(path, full_disk)
  assert ".partial" not in str(e.value) and os.listdir(tmp_path) == []
