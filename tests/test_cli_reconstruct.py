"""experiments/reconstruct.py (and evaluate.py's --baselines) as a user runs them.

Each test runs the script in a subprocess on a small synthetic volume: with the
shipped 64×64 model (K = 2 loss terms) a thin stack, a single slice, an integer
scan, a fastMRI file; with the shipped 256×256 model four brain slices it
never saw; with an untrained 32×32 model of K = 4 terms a design on the
simplex; and the mistakes that must be one ``error:`` line before any
model work.
"""

import json
import os
import re
import subprocess
import sys

from cli_support import assert_one_error_line
import configs
import h5py
import loop_support
import nibabel as nib
import numpy as np
import pytest
from test_outputs import unwritable_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = "mni152_csmri8x_dc_tv"
SHIPPED_256 = "mni152_csmri8x_dc_tv_256"


@pytest.fixture(scope="module")
def env(compilation_cache):
  out = dict(os.environ)
  out["JAX_PLATFORMS"] = "cpu"
  out["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
  # The processes compile as a user's would, except for conftest's faster
  # compilation (the same HLO programs).
  out["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                              if "xla_backend_optimization_level" in f)
  return out


def run(env, name, *args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", f"{name}.py"),
                         *args], env=env, capture_output=True, text=True, timeout=timeout,
                        cwd=REPO, check=False)


def reconstruct(env, *args):
  return run(env, "reconstruct", f"--pretrained={SHIPPED}", *args)


def disk_volume(shape, axes, seed=0):
  """A volume whose planes along ``axes`` hold a disk of intensities 200..1000."""
  volume = np.zeros(shape, np.float32)
  a, b = (shape[i] for i in axes)
  rows, cols = np.mgrid[0:a, 0:b]
  disk = (rows - a / 2) ** 2 + (cols - b / 2) ** 2 < (0.4 * min(a, b)) ** 2
  planes = np.moveaxis(volume, axes, (0, 1))
  planes[disk] = np.random.default_rng(seed).uniform(200, 1000, (disk.sum(),) + planes.shape[2:])
  return volume


@pytest.fixture(scope="module")
def workdir_k4(tmp_path_factory):
  """An untrained 32×32 HyperRecon of K = 4 loss terms, as a training run's folder."""
  config = configs.default()
  config.data.image_size = 32
  config.model.channels = 4
  config.model.hyper_dim = 4
  config.model.strategy = "vmap"
  config.losses = ("dc", "tv", "wavelet", "weight_l1")
  config.loss_scales = (1.0, 1.0, 2.0, 4.0)
  config.eval.chunk = 8
  return loop_support.save_untrained(config, str(tmp_path_factory.mktemp("k4")))


def foreground_ratio(path_in, path_out):
  data = nib.load(path_in).get_fdata()
  out = nib.load(path_out).get_fdata()
  foreground = data > 0
  return out[foreground].mean() / data[foreground].mean()


def test_a_thin_volume_is_reconstructed_along_its_thin_axis_in_its_own_type(env, tmp_path):
  # Three slices along R-L, int16 as scanners write: the model's axial planes
  # would be 3×48 strips (reconstructed to near-nothing), so the 48×48
  # sagittal planes are used and the output keeps the input's int16.
  path, out = str(tmp_path / "thin.nii.gz"), str(tmp_path / "recon.nii.gz")
  nib.save(nib.Nifti1Image(disk_volume((3, 48, 48), (1, 2)).astype(np.int16), np.eye(4)), path)
  proc = reconstruct(env, f"--input={path}", f"--output={out}", "--lam=0.5", "--dtype=input")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "3 sagittal slices (3 with foreground)" in proc.stderr, proc.stderr
  assert re.search(r"note: slicing sagittal .* not the model's axial: the volume's axial "
                   r"planes would be 3×48-voxel strips", proc.stderr), proc.stderr
  assert re.search(r"note: the model reconstructs at 64×64: .* put back on the input's "
                   r"3×48×48 grid", proc.stderr), proc.stderr
  assert "output: 3×48×48 int16" in proc.stderr and "warning:" not in proc.stderr
  img = nib.load(out)
  assert img.shape == (3, 48, 48) and img.get_data_dtype() == np.int16
  assert 0.8 < foreground_ratio(path, out) < 1.25
  assert json.load(open(tmp_path / "recon.json"))["dtype"] == "int16"


def test_a_single_slice_volume_is_reconstructed(env, tmp_path):
  path, out = str(tmp_path / "one.nii"), str(tmp_path / "recon.nii")
  nib.save(nib.Nifti1Image(disk_volume((40, 48, 1), (0, 1)), np.eye(4)), path)
  proc = reconstruct(env, f"--input={path}", f"--output={out}", "--lam=0.5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "1 axial slice (1 with foreground), 1 λ value of the loss" in proc.stderr, proc.stderr
  assert nib.load(out).shape == (40, 48, 1)
  assert nib.load(out).get_data_dtype() == np.float32  # the default
  assert 0.8 < foreground_ratio(path, out) < 1.25


def test_a_fastmri_file_in_float16(env, tmp_path):
  path, out = str(tmp_path / "file.h5"), str(tmp_path / "recon.h5")
  with h5py.File(path, "w") as f:
    f["reconstruction_esc"] = disk_volume((2, 64, 64), (1, 2)) * 1e-3
  proc = reconstruct(env, f"--input={path}", f"--output={out}", "--lam=0,1",
                     "--dtype=float16")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "note: the model reconstructs at 64×64" in proc.stderr
  with h5py.File(out, "r") as f:
    assert f["reconstruction_hyperrecon"].dtype == np.float16
    assert f["reconstruction_hyperrecon"].shape == (2, 2, 64, 64)


def psnr_on_grid(truth, image):
  return 10 * np.log10(truth.max() ** 2 / np.mean((image - truth) ** 2))


def test_the_256_model_reconstructs_brain_slices_it_never_saw(env, tmp_path):
  # Axial slices 80–83 of the MNI152 template, inside its test block [78, 102)
  # (8 mm or more from every training slice), as a 1 mm scan of 197×233×4
  # voxels: the model works at 256×256 and puts the result back on that grid.
  from hyperrecon_jax.data import mni152
  template = nib.load(mni152.template_paths()["t1"])
  affine = template.affine.copy()
  affine[:3, 3] += 80 * affine[:3, 2]
  path, out = str(tmp_path / "brain.nii.gz"), str(tmp_path / "recon.nii.gz")
  nib.save(nib.Nifti1Image(np.asarray(template.dataobj)[:, :, 80:84], affine), path)
  proc = run(env, "reconstruct", f"--pretrained={SHIPPED_256}", f"--input={path}",
             f"--output={out}", "--lam=0,0.1,1", "--save_input")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "4 axial slices (4 with foreground)" in proc.stderr, proc.stderr
  assert re.search(r"note: the model reconstructs at 256×256: each slice's \d+×\d+-voxel "
                   r"foreground box is resized to fit; a reconstruction written out is put "
                   r"back on the input's 197×233×4 grid", proc.stderr), proc.stderr
  truth = nib.load(path).get_fdata()
  recon = nib.load(out).get_fdata()
  zero_filled = nib.load(str(tmp_path / "recon_zero_filled.nii.gz")).get_fdata()
  assert recon.shape == (197, 233, 4, 3) and zero_filled.shape == truth.shape
  psnr = [psnr_on_grid(truth, recon[..., i]) for i in range(3)]
  baseline = psnr_on_grid(truth, zero_filled)
  # Measured (2026-12-04): zero-filled 24.75 dB; λ = 0 / 0.1 / 1: 27.23 / 27.38 /
  # 19.94 dB. Float32 summation order moves a PSNR by < 0.01 dB (test_pretrained's
  # CHECK_TOLERANCE), so the margins below (1.5 dB of the 2.6 gained, 5 dB of the
  # 7.4 that λ = 1's flat image loses) can fail only if the model or the
  # resampling onto the scan's grid changes.
  assert psnr[1] > baseline + 1.5 and psnr[0] > baseline + 1.5, (baseline, psnr)
  assert psnr[2] < psnr[1] - 5, psnr
  # Over the brain alone (voxels above 5 % of the maximum) the gain is smaller:
  # 22.96 → 24.54 dB at λ = 0.1 (2026-12-04), checked with 1.0 dB of the 1.58.
  brain = truth > 0.05 * truth.max()
  on_brain = [psnr_on_grid(truth[brain], volume[brain])
              for volume in (zero_filled, recon[..., 1])]
  assert on_brain[1] > on_brain[0] + 1.0, on_brain
  # The scores on the model's grid, in the terminal and the sidecar: zero-filled
  # 23.92 dB; λ = 0 / 0.1 / 1: 27.00 / 27.25 / 19.03 dB (2026-12-05), checked
  # with the margins above.
  assert re.search(r"scores against the scan, on the model's 256×256 slices \(4 slices with "
                   r"foreground\): zero-filled input PSNR [\d.]+ dB, SSIM [\d.]+; best PSNR "
                   r"[\d.]+ dB at λ = 0\.1", proc.stderr), proc.stderr
  with open(tmp_path / "recon.json") as f:
    scores = json.load(f)["scores"]
  psnr = scores["mean"]["psnr"]
  assert psnr[1] > scores["zero_filled"]["psnr"] + 1.5 and psnr[2] < psnr[1] - 5, scores
  assert scores["best"]["psnr"]["lambda"] == [0.1], scores


def test_writes_once_and_refuses_to_overwrite(env, tmp_path):
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image(disk_volume((48, 48, 6), (0, 1)), np.eye(4)), path)
  out = str(tmp_path / "recon.nii.gz")
  args = [f"--input={path}", f"--output={out}"]
  proc = reconstruct(env, *args, "--lam=grid:3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert nib.load(out).shape == (48, 48, 6, 3)
  before = open(out, "rb").read()
  assert_one_error_line(reconstruct(env, *args, "--lam=0.5"),
                        r"recon.nii.gz exists; give --overwrite")
  other = str(tmp_path / "other.nii.gz")
  assert_one_error_line(reconstruct(env, f"--input={path}", f"--output={other}", "--lam=2"),
                        r"the λ values of --lam=2 must lie in \[0, 1\]")
  assert open(out, "rb").read() == before
  assert not os.path.exists(other)
  # Overwritten without --save_input, an earlier zero-filled volume stays (it
  # is the user's) and is named as another run's.
  proc = reconstruct(env, *args, "--lam=0.5", "--save_input", "--overwrite")
  assert proc.returncode == 0 and "earlier run" not in proc.stderr, proc.stderr[-3000:]
  proc = reconstruct(env, *args, "--lam=0.5", "--overwrite")
  assert proc.returncode == 0, proc.stderr[-3000:]
  partner = str(tmp_path / "recon_zero_filled.nii.gz")
  assert os.path.exists(partner)
  assert f"note: {partner} is from an earlier run: this one wrote no zero-filled input" in \
      proc.stderr
  assert json.load(open(tmp_path / "recon.json"))["zero_filled"] is None


def test_a_model_of_four_terms_over_a_design_on_the_simplex(env, workdir_k4, tmp_path):
  path, out = str(tmp_path / "scan.nii.gz"), str(tmp_path / "design.nii.gz")
  nib.save(nib.Nifti1Image(disk_volume((40, 40, 3), (0, 1)), np.eye(4)), path)
  proc = run(env, "reconstruct", f"--workdir={workdir_k4}", f"--input={path}",
             f"--output={out}", "--samples=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "6 λ values of the loss dc + tv + wavelet + weight_l1" in proc.stderr, proc.stderr
  assert nib.load(out).shape == (40, 40, 3, 6)
  sidecar = json.load(open(tmp_path / "design.json"))
  coeffs = np.asarray(sidecar["coefficients"])
  assert coeffs.shape == (6, 4) and sidecar["loss_terms"] == ["dc", "tv", "wavelet", "weight_l1"]
  np.testing.assert_allclose(coeffs[:4], np.eye(4), atol=1e-6)  # the vertices first
  np.testing.assert_allclose(coeffs.sum(axis=1), 1.0, atol=1e-6)
  assert np.asarray(sidecar["lambdas"]).shape == (6, 3)


@pytest.mark.parametrize("args, pattern", [
    (["--lam=0.5:0.5:0.5", "--coeffs=0.25:0.25:0.25:0.25"],
     r"give exactly one of --lam \(λ values\), --coeffs \(coefficient vectors\) and "
     r"--samples"),
    (["--coeffs=0.25:0.25:0.25:0.25,0.5:0.5"],
     r"--coeffs=0.25:0.25:0.25:0.25,0.5:0.5: '0.5:0.5' has 2 values, the model's loss has 4 "
     r"terms \(write 4 coefficients as a:b:c:d\)"),
])
def test_lambda_flag_mistakes_are_one_error_line(env, workdir_k4, tmp_path, args, pattern):
  path, out = str(tmp_path / "scan.nii.gz"), str(tmp_path / "recon.nii.gz")
  nib.save(nib.Nifti1Image(disk_volume((40, 40, 3), (0, 1)), np.eye(4)), path)
  proc = run(env, "reconstruct", f"--workdir={workdir_k4}", f"--input={path}",
             f"--output={out}", *args)
  assert_one_error_line(proc, pattern)
  assert not os.path.exists(out)


@pytest.mark.parametrize("case", ["memory", "float64", "read_only", "float16_nifti"])
def test_mistakes_are_one_error_line_before_any_model_work(env, tmp_path, case):
  path = str(tmp_path / "scan.nii.gz")
  volume = disk_volume((64, 64, 40), (0, 1))
  out = str(tmp_path / "recon.nii.gz")
  args = ["--lam=0.5"]
  if case == "memory":
    # 10⁶ λ × 64×64×40 voxels × 4 bytes = 610 GiB, and the work beside them.
    args, pattern = ["--lam=grid:1000000"], (
        r"1,000,000 λ value\(s\) × 64×64×40 voxels × 4 bytes, two float32 volumes being put "
        r"back and written, and [\d.]+ MiB of the model's work need 610\.9 GiB of memory, more "
        r"than the .* allowed \(80% of the .* available\); give at most [\d,]+ λ values")
  elif case == "float64":
    volume = volume.astype(np.float64)
    volume[30, 30, 20] = 1e39
    pattern = (r"scan.nii.gz: 1 of 163,840 voxels are finite in its float64 but beyond "
               r"float32's range \(largest magnitude 1e\+39")
  elif case == "read_only":
    folder = unwritable_folder(tmp_path)
    out = os.path.join(folder, "recon.nii.gz")
    pattern = rf"recon.nii.gz: cannot write in the folder {re.escape(folder)} \("
  else:
    args.append("--dtype=float16")
    pattern = r"--dtype=float16: NIfTI has no float16 type .*give --dtype=int16"
  nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
  proc = reconstruct(env, f"--input={path}", f"--output={out}", *args)
  line = assert_one_error_line(proc, pattern)
  assert "slices (" not in proc.stderr and ".partial" not in line, proc.stderr
  assert not os.path.exists(out)


def test_a_stack_of_unets_is_named_as_what_it_is(env, workdir_k4, tmp_path):
  """It was called "a plain Unet (one λ)"; and a folder given as the input is named."""
  from hyperrecon_jax import train
  from hyperrecon_jax.train import baselines
  config, _, _, _ = train.load_trained(workdir_k4)
  stack = loop_support.save_untrained(
      baselines.stack_config(config, [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0)]), str(tmp_path / "stack"))
  path, out = str(tmp_path / "scan.nii.gz"), str(tmp_path / "recon.nii.gz")
  nib.save(nib.Nifti1Image(disk_volume((40, 40, 3), (0, 1)), np.eye(4)), path)
  proc = run(env, "reconstruct", f"--workdir={stack}", f"--input={path}", f"--output={out}",
             "--lam=0.5:0.5:0.5")
  assert_one_error_line(proc, r"stack is a stack of 2 per-λ Unets \(experiments/baselines\.py\), "
                              r"each trained at its own λ: reconstruct needs a HyperRecon model")
  os.mkdir(tmp_path / "folder.nii.gz")
  proc = run(env, "reconstruct", f"--workdir={stack}", f"--input={tmp_path / 'folder.nii.gz'}",
             f"--output={out}", "--lam=0.5:0.5:0.5")
  assert_one_error_line(proc, r"folder\.nii\.gz is a folder; give one scan file")
  assert not os.path.exists(out)


def test_evaluate_names_a_missing_baselines_folder(env, tmp_path):
  missing = str(tmp_path / "missing")
  flag = f"--config.evals.baselines.workdir={missing}"
  # --baselines is short for the field, and errors name the field.
  proc = run(env, "evaluate", f"--pretrained={SHIPPED}", f"--out={tmp_path / 'r'}",
             f"--baselines={missing}")
  assert_one_error_line(proc, rf"{re.escape(flag[2:])}: no such folder")
  os.mkdir(missing)
  proc = run(env, "evaluate", f"--pretrained={SHIPPED}", f"--out={tmp_path / 'r'}", flag)
  assert_one_error_line(proc, rf"{re.escape(flag[2:])} holds no checkpoint: train "
                              r"the per-λ Unets first \(experiments/baselines.py")
  assert not (tmp_path / "r").exists()
