"""hyperrecon_jax.reconstruct and experiments/reconstruct.py: the user's own scans.

The model is the shipped one (64×64, CS-MRI 8× without noise); the volumes are
small synthetic ones written here, and the MNI152 template for the check
against the data pipeline.
"""

import json
import os
import re
import subprocess
import sys

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
