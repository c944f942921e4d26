"""hyperrecon_jax.reconstruct: the user's own scans at any λ, on their own grid.

The model is the shipped one (64×64, CS-MRI 8× without noise, K = 2 loss
terms) and, for any K, an untrained 32×32 one of K = 4 terms; the volumes are
small synthetic ones written here. The command line is tests/test_cli_reconstruct.py.
"""

import json
import re

import configs
import h5py
import jax
import jax.numpy as jnp
from memory_support import allocated_peak
import nibabel as nib
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from test_scans import data_config
from test_scans import head
from test_scans import non_ras_nifti

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import outputs
from hyperrecon_jax import pretrained
from hyperrecon_jax import reconstruct as rc
from hyperrecon_jax import scans
from hyperrecon_jax import train
from hyperrecon_jax.data import slicing

SHIPPED = "mni152_csmri8x_dc_tv"
K4_LOSSES = ("dc", "tv", "wavelet", "weight_l1")


@pytest.fixture(scope="module")
def model():
  return pretrained.load(SHIPPED)


def k4_config():
  """A tiny HyperRecon config of four loss terms (three hyperparameters)."""
  config = configs.default()
  config.data.image_size = 32
  config.model.channels = 4
  config.model.hyper_dim = 4
  config.model.strategy = "vmap"
  config.losses = K4_LOSSES
  config.loss_scales = (1.0, 1.0, 2.0, 4.0)
  config.eval.chunk = 8
  return config


@pytest.fixture(scope="module")
def model_k4():
  config = k4_config()
  net = train.build_model(config)
  return config, net, train.create_state(config, net, jax.random.key(0)).variables()


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


def test_put_back_holds_one_volume_beside_what_it_returns(tmp_path):
  # NumPy reports its allocations to tracemalloc. The planes are the one
  # volume put_back needs; copies of the whole volume (scaling it, or casting
  # it to float32 again) would each add another, and a volume can take much
  # of the memory (volume_memory.check_memory counts one).
  path = str(tmp_path / "scan.nii.gz")
  non_ras_nifti(path, head((40, 40, 48)))
  scan = rc.read_input(path, data_config(40))
  volume_bytes = int(np.prod(scan.output_shape)) * 4
  back, peak = allocated_peak(lambda: rc.put_back(scan, scan.images))
  assert back.dtype == np.float32 and back.shape == scan.output_shape
  # One volume and the temporaries of resampling one plane: a 40×40 plane is
  # 1/48 of this volume, and SciPy 1.11 (setup.py's lower bound) holds a few
  # float64 planes at once (1.54 volumes with 12 planes, against 1.2 with
  # SciPy 1.16), so 48 planes keep them well inside the half-volume margin.
  assert peak < 1.5 * volume_bytes, (peak, volume_bytes)


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
  # Eq. 9: λ weights the second term, so λ = 0 is the first term (dc) alone.
  assert sidecar["coefficients"] == [[1.0, 0.0], [0.0, 1.0]]
  assert sidecar["loss_terms"] == list(config.losses)
  assert nib.load(written[2]).shape == data.shape
  # A notebook's write without the model's name records none, not an empty name.
  rc.write(result, str(tmp_path / "unnamed.nii.gz"))
  assert json.load(open(str(tmp_path / "unnamed.json")))["model"] is None


def test_a_reconstruction_that_is_not_finite_is_refused_before_anything_is_written(model,
                                                                                     tmp_path):
  # A model that diverged: one BatchNorm variance of −2 makes its folded
  # scale rsqrt(−2 + eps), NaN, and so every reconstruction. It wrote a
  # volume of NaN and exited 0, saying only that the intensity was "nan×".
  config, net, variables, _ = model
  stats = jax.tree_util.tree_map(np.asarray, variables["batch_stats"])
  stats["body"]["bn_enc0_a"]["var"] = np.full_like(stats["body"]["bn_enc0_a"]["var"], -2.0)
  broken = {**variables, "batch_stats": stats}
  path = str(tmp_path / "scan.nii")
  non_ras_nifti(path, head((48, 56, 10)))
  scan = rc.read_input(path, config)
  size = int(config.data.image_size)
  n = len(scan.slices)
  with pytest.raises(errors.InputError,
                     match=rf"the model's reconstruction at λ = 0\.25 is not finite in "
                           rf"{n * size * size:,} of {n * size * size:,} values, on {n} of {n} "
                           r"slices: the model diverged or overflows on this scan; nothing "
                           r"was written"):
    rc.volume(config, net, broken, scan, [[0.25], [1.0]])


def test_the_memory_check_counts_the_batch_the_volume_is_run_with(model, tmp_path):
  config, net, variables, _ = model  # 64×64, 16 channels, float32, eval.chunk 32
  path = str(tmp_path / "scan.nii")
  non_ras_nifti(path, head((48, 56, 10)))
  scan = rc.read_input(path, config)
  # By hand, one λ: three float32 volumes of 26,880 voxels (322,560 bytes), 7
  # planes of 64² per slice (1,146,880), 512 MiB to compile, and per row of a
  # batch 3 maps of 64² × 16 channels (786,432): 539,126,784 bytes at batch 1
  # and 546,204,672 at batch 10. 80 % of 675,000,000 is 540,000,000.
  with pytest.raises(errors.InputError, match=r"and 521 MiB of the model's work need 521 MiB "
                                              r"of memory, more than the 515 MiB allowed"):
    rc.volume(config, net, variables, scan, [[0.5]], batch=10, available=675_000_000)
  result = rc.volume(config, net, variables, scan, [[0.5]], batch=1, available=675_000_000)
  assert result["recon"].shape == (1,) + scan.output_shape


def test_scores_are_each_reconstruction_against_the_scan_on_the_model_grid(model, tmp_path):
  config, net, variables, _ = model
  path = str(tmp_path / "scan.nii")
  ras = head((48, 56, 12))
  ras[..., :2] = 0  # two empty slices, which are not scored
  non_ras_nifti(path, ras)
  scan = rc.read_input(path, config)
  lambdas = np.array([[0.0], [0.1], [1.0]], np.float32)
  result = rc.volume(config, net, variables, scan, lambdas)
  scores = result["scores"]
  # Recomputed here: the model-grid reconstructions of the kept slices against
  # the scan's slices, PSNR and SSIM by scikit-image.
  kept = np.flatnonzero(scan.kept)
  assert kept.size == 10 and len(scan.slices) == 12 and scores["slices"] == 10
  zf = rc.measure(config, scan)
  squares = rc.reconstruct_slices(net, variables, zf, lambdas)
  truth = scan.images[kept].astype(np.float64)

  def means(images):
    images = np.asarray(images, np.float64)[kept]
    return (np.mean([sk_psnr(t, x, data_range=1.0) for t, x in zip(truth, images)]),
            np.mean([sk_ssim(t, x, gaussian_weights=True, sigma=1.5,
                             use_sample_covariance=False, data_range=1.0)
                     for t, x in zip(truth, images)]))

  # PSNR of float32 images to 1e-4 dB and SSIM to 1e-4, as tests/test_metrics.py
  # holds the metrics against scikit-image.
  for i in range(len(lambdas)):
    psnr, ssim = means(squares[i])
    assert scores["mean"]["psnr"][i] == pytest.approx(psnr, abs=1e-4)
    assert scores["mean"]["ssim"][i] == pytest.approx(ssim, abs=1e-4)
  psnr, ssim = means(np.sqrt(np.sum(np.square(np.asarray(zf)), axis=-1)))
  assert scores["zero_filled"]["psnr"] == pytest.approx(psnr, abs=1e-4)
  assert scores["zero_filled"]["ssim"] == pytest.approx(ssim, abs=1e-4)
  best = int(np.argmax(scores["mean"]["psnr"]))
  assert scores["best"]["psnr"] == {"index": best, "lambda": [[0.0], [0.1], [1.0]][best],
                                    "value": scores["mean"]["psnr"][best]}
  assert scores["best"]["hfen"]["index"] == int(np.argmin(scores["mean"]["hfen"]))
  out = str(tmp_path / "recon.nii.gz")
  rc.write(result, out, model=SHIPPED)
  with open(tmp_path / "recon.json") as f:
    assert json.load(f)["scores"] == json.loads(json.dumps(scores))


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
  # A NIfTI model: the file is scaled as a fastMRI dataset is, and a note says so.
  assert config.data.name != "fastmri_knee"
  assert any(n.startswith("the model learned from NIfTI volumes scaled by its 99.5th "
                          "percentile") for n in scan.notes), scan.notes
  result = rc.volume(config, net, variables, scan, [[0.5]])
  rc.write(result, str(tmp_path / "out.h5"))
  with h5py.File(str(tmp_path / "out.h5"), "r") as f:
    got = f[outputs.H5_DATASET][()]
    assert got.shape == (3, 64, 64)
    np.testing.assert_allclose(f.attrs["lambdas"], [[0.5]])
    np.testing.assert_allclose(f.attrs["coefficients"], [[0.5, 0.5]])
  np.testing.assert_allclose(got, result["recon"][0], rtol=1e-6)


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
  h5_path = str(tmp_path / "file.h5")
  with h5py.File(h5_path, "w") as f:
    f["reconstruction_esc"] = head((64, 64, 2)).transpose(2, 0, 1) * 100
  result = rc.volume(config, net, variables, rc.read_input(h5_path, config), [[0.5]],
                     dtype="float16")
  assert result["recon"].dtype == np.float16
  rc.write(result, str(tmp_path / "half.h5"))
  with h5py.File(str(tmp_path / "half.h5"), "r") as f:
    assert f[outputs.H5_DATASET].dtype == np.float16
    assert f[outputs.H5_DATASET].shape == (2, 64, 64)


def test_intensity_that_cannot_be_trusted_is_said(tmp_path):
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image(head() * 1000, np.eye(4)), path)
  scan = scans.read_input(path, data_config(32))
  good = rc.put_back(scan, scan.images)
  assert rc.intensity_warnings(scan, [[0.0], [0.5]], np.stack([good, 0.9 * good])) == []
  (line,) = rc.intensity_warnings(scan, [[0.0], [0.5]], np.stack([0.05 * good, 0.3 * good]))
  # put_back(images) is the input blurred by the 40 → 32 → 40 resizing: ratios ≈ 1.
  assert re.match(r"at every λ .* is 0\.0\d+× to 0\.\d+× the input's \(outside \[0.5, 2\]\): "
                  r"the output's intensity cannot be trusted", line), line
  assert line.endswith("(see the notes on slicing and resolution)")
  # A bright block of 0.8 % of the voxels sets the scale: the line points to
  # the warning that names it (it sent the user to slicing and resolution).
  bright = head() * 1000
  bright[:4, :4, :6] = 5 * bright.max()
  bright_path = str(tmp_path / "bright.nii.gz")
  nib.save(nib.Nifti1Image(bright, np.eye(4)), bright_path)
  scan = scans.read_input(bright_path, data_config(32))
  assert [w[:21] for w in scan.warnings] == ["the intensity scale ("]
  good = rc.put_back(scan, scan.images)
  (line,) = rc.intensity_warnings(scan, [[0.0]], good[None] * 0.05)
  assert line.endswith("(see the warnings above and the notes on slicing and resolution)")
  (line,) = rc.intensity_warnings(scan, [[0.0], [1.0]], np.stack([good, 0.2 * good]))
  assert re.match(r"at λ = 1 the reconstruction's mean intensity in the foreground is "
                  r"0\.\d+× the input's \(outside \[0.5, 2\], unlike at the other", line), line


# --- λ from the command line ------------------------------------------------------------


@pytest.mark.parametrize("text, num, pattern", [
    ("1.5", 1, r"^the λ values of --lam=1.5 must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
    ("-0.1,0.5", 1, r"--lam=-0.1,0.5 must lie in \[0, 1\], got values in \[-0.1, 0.5\]"),
    ("0.2:0.3", 1, r"'0.2:0.3' has 2 values, the model's loss has 1"),
    ("0.2", 2, r"'0.2' has 1 value, the model's loss has 2 .*write 2 values as a:b"),
    ("0.5", 3, r"'0.5' has 1 value, the model's loss has 3 .*write 3 values as a:b:c"),
    ("abc", 1, r"'abc' is not a number"),
    ("grid:x", 1, r"grid:N needs a whole number N"),
    ("grid:100000", 2, r"grid:100000 gives 100000\^2 = 10,000,000,000 λ"),  # not built
    ("grid:5", 3, r"--lam=grid:5: grids stop at two hyperparameters and this model has 3 "
                  r"\(4 loss terms\); give --samples=N .* 3 values, e.g. --lam=0.5:0.5:0.5$"),
])
def test_bad_lambdas_name_the_problem(text, num, pattern):
  with pytest.raises(ValueError, match=pattern):
    rc.parse_lambdas(text, num)


@pytest.mark.parametrize("flag, text, pattern", [
    ("coeffs", "0.25:0.25:0.25:0.25,0.5:0.5",
     r"^--coeffs=0.25:0.25:0.25:0.25,0.5:0.5: '0.5:0.5' has 2 values, the model's loss has 4 "
     r"terms \(write 4 coefficients as a:b:c:d\)"),
    ("coeffs", "0.5:0.5:0.5:0", r"'0.5:0.5:0.5:0' sums to 1.5; coefficients must sum to 1"),
    ("coeffs", "1:-0.5:0.5:0", r"'1:-0.5:0.5:0' has a negative coefficient"),
    ("samples", "3", r"^--samples=3: .*num ≥ num_coeffs \(the 4 vertices come first\)"),
    ("samples", "2000000", r"^--samples=2000000 gives 2,000,000 λ values, more than 1,000,000"),
    # int() read these as 10 and 16; --lam=samples:1_0 was refused.
    ("samples", "1_0", r"^--samples=1_0: N needs a whole number N written in digits 0-9"),
    ("samples", "0x10", r"^--samples=0x10: N needs a whole number N written in digits 0-9"),
])
def test_bad_coefficients_and_designs_name_the_problem(flag, text, pattern):
  with pytest.raises(ValueError, match=pattern):
    rc.parse_lambdas(text, 3, flag=flag)


def test_lambdas_of_one_loss_weighting_are_noted():
  # grid:3 of three terms: λ = (1, 0), (1, 0.5), (1, 1) all weight the first
  # term alone, three volumes of one reconstruction.
  assert rc.repeated_weightings(rc.parse_lambdas("grid:3", 2)) == (
      "the 9 λ hold 7 distinct loss weightings (where λ_k = 1 the later λ do not count): the "
      "volumes at λ = 1:0.5, 1:1 repeat an earlier one")
  assert rc.repeated_weightings(rc.parse_lambdas("grid:5", 1)) is None
  # Given twice: no talk of λ_k = 1.
  assert rc.repeated_weightings(rc.parse_lambdas("0.5,0.2,0.5", 1)) == (
      "the 3 λ hold 2 distinct loss weightings: the volumes at λ = 0.5 repeat an earlier one")
  assert rc.repeated_weightings(rc.parse_lambdas("6", 3, flag="samples")) is None


def test_lambda_forms():
  np.testing.assert_allclose(rc.parse_lambdas("0.3", 1), [[0.3]])
  np.testing.assert_allclose(rc.parse_lambdas("0,0.5,1", 1), [[0], [0.5], [1]])
  np.testing.assert_allclose(rc.parse_lambdas("grid:3", 1), [[0], [0.5], [1]])
  np.testing.assert_allclose(rc.parse_lambdas("0.2:0.4,1:0", 2), [[0.2, 0.4], [1, 0]])
  # c = (0.2, 0.4, 0.1, 0.3) is λ = (0.2, 0.4 / 0.8, 0.1 / 0.4) by stick-breaking.
  np.testing.assert_allclose(rc.parse_lambdas("0.2:0.4:0.1:0.3", 3, flag="coeffs"),
                             [[0.2, 0.5, 0.25]], atol=1e-6)
  design = rc.parse_lambdas("6", 3, flag="samples")
  assert design.shape == (6, 3) and design.dtype == np.float32
  np.testing.assert_allclose(hparams.coefficients(design)[:4], np.eye(4), atol=1e-6)
  with pytest.raises(ValueError, match=r"λ values of shape \(1, 2\): the model has 1 "):
    rc.as_lambdas([[0.5, 0.5]], 1)
  with pytest.raises(ValueError, match="flag='grid': expected one of lam, coeffs, samples"):
    rc.parse_lambdas("3", 1, flag="grid")


def test_a_model_of_four_terms_reconstructs_at_vectors_and_coefficients(model_k4, tmp_path):
  config, net, variables = model_k4
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image(head((40, 40, 4)) * 1000, np.eye(4)), path)
  scan = rc.read_input(path, config)
  by_lam = rc.parse_lambdas("0.2:0.5:0.25,1:0:0", 3)
  by_coeffs = rc.parse_lambdas("0.2:0.4:0.1:0.3,1:0:0:0", 3, flag="coeffs")
  np.testing.assert_allclose(by_coeffs, by_lam, atol=1e-6)
  result = rc.volume(config, net, variables, scan, by_coeffs)
  assert result["recon"].shape == (2, 40, 40, 4) and result["loss_terms"] == K4_LOSSES
  np.testing.assert_allclose(result["coeffs"], [[0.2, 0.4, 0.1, 0.3], [1, 0, 0, 0]],
                             atol=1e-6)
  # The coefficients, not λ, are the network's input: the same point gives
  # the same reconstruction whichever way it was written.
  again = rc.volume(config, net, variables, scan, by_lam)
  np.testing.assert_allclose(again["recon"], result["recon"], rtol=1e-5,
                             atol=1e-5 * scan.scale)
  rc.write(result, str(tmp_path / "out.nii.gz"))
  assert nib.load(str(tmp_path / "out.nii.gz")).shape == (40, 40, 4, 2)
  sidecar = json.load(open(tmp_path / "out.json"))
  assert sidecar["loss_terms"] == list(K4_LOSSES)
  # To 7 digits: the coefficients as typed, without the conversions' roundoff.
  assert sidecar["coefficients"] == [[0.2, 0.4, 0.1, 0.3], [1.0, 0.0, 0.0, 0.0]]
  np.testing.assert_allclose(sidecar["lambdas"], result["lambdas"], rtol=1e-6)
  with pytest.raises(ValueError, match=r"λ values of shape \(1, 1\): the model has 3 "):
    rc.volume(config, net, variables, scan, [[0.5]])
