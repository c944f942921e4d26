"""hyperrecon_jax.volume_memory: the memory a reconstruction takes, refused before any work.

The counts are checked against hand computations on a small synthetic scan
(`test_outputs.small_scan`); what the count bounds in a real process is
measured by benchmarks/reconstruct_memory.py (docs/performance.md), not here.
"""

import configs
import pytest
from test_outputs import small_scan
from test_scans import data_config
from test_scans import h5_file
from test_scans import head

from hyperrecon_jax import scans
from hyperrecon_jax import volume_memory


def small_h5_scan(tmp_path):
  """A fastMRI-style ``.h5`` scan of 12 slices of 40×40: 19,200 values, as `small_scan`."""
  path = h5_file(tmp_path / "scan.h5", reconstruction_esc=head().transpose(2, 0, 1) * 100)
  return scans.read_input(path, data_config(32))


def test_an_output_too_large_for_memory_is_refused_with_what_fits(tmp_path):
  scan = small_scan(tmp_path)  # 19,200 voxels: 75 KiB a float32 volume
  per_volume = 19_200 * 4
  assert volume_memory.check_memory(scan, 10, available=2**30) == 12 * per_volume
  with pytest.raises(ValueError, match=r"scan.nii.gz: 100,000 λ value\(s\) × 40×40×12 voxels "
                                       r"× 4 bytes, two float32 volumes being put back and "
                                       r"written, and 0 KiB of the model's work need 7.2 GiB of "
                                       r"memory, more than the 819 MiB allowed \(80% of the 1.0 "
                                       r"GiB available\); give at most 11,182 λ values per run"):
    volume_memory.check_memory(scan, 100_000, available=2**30)
  fit = (int(0.8 * 2**30) - 2 * per_volume) // per_volume
  assert fit == 11_182 and volume_memory.check_memory(scan, fit, available=2**30) <= 0.8 * 2**30
  with pytest.raises(ValueError, match="even one λ does not fit"):
    volume_memory.check_memory(scan, 1, available=per_volume)


def test_the_model_s_work_takes_its_share_of_the_memory(tmp_path):
  scan = small_scan(tmp_path)
  per_volume = 19_200 * 4
  working = 100 * 2**20
  assert (volume_memory.check_memory(scan, 10, working=working, available=2**30)
          == 12 * per_volume + working)
  # What fits is what the work leaves: (0.8 · 2³⁰ − 2 volumes − 100 MiB) // a volume.
  fit = (int(0.8 * 2**30) - 2 * per_volume - working) // per_volume
  assert fit == 9_817
  volume_memory.check_memory(scan, fit, working=working, available=2**30)
  with pytest.raises(ValueError, match=r"and 100 MiB of the model's work need .* give at most "
                                       r"9,817 λ"):
    volume_memory.check_memory(scan, fit + 1, working=working, available=2**30)
  with pytest.raises(ValueError, match=r"scan.nii.gz: 9,817 λ value\(s\) and the zero-filled "
                                       r"input × .* give at most 9,816 λ"):
    volume_memory.check_memory(scan, fit, save_input=True, working=working, available=2**30)
  with pytest.raises(ValueError, match="even one λ does not fit"):
    volume_memory.check_memory(scan, 1, working=2**30, available=2**30)


def test_the_model_s_work_grows_with_the_slices_the_batch_and_the_width(tmp_path):
  scan = small_scan(tmp_path)  # 12 slices
  config = configs.default()
  config.data.image_size = 32
  config.model.channels = 8
  config.eval.chunk = 4
  # By hand, from the counts the module documents: 7 float32 planes per slice
  # (7 · 12 · 32² · 4 = 344,064), 3 feature maps of 8 channels per row
  # (4 · 3 · 32² · 8 · 4 = 393,216) and 512 MiB for compiling.
  maps = 393_216
  want = 537_608_192  # 344,064 + 393,216 + 536,870,912
  assert volume_memory.working_memory(config, scan) == want
  # A batch larger than the scan holds the scan's 12 slices, not more.
  assert (volume_memory.working_memory(config, scan, batch=100)
          == want + (12 - 4) * maps // 4)
  # bfloat16 activations halve the feature maps, not the slices kept in float32.
  config.model.dtype = "bfloat16"
  assert volume_memory.working_memory(config, scan) == want - maps // 2


def test_when_one_lambda_fits_the_message_says_so(tmp_path):
  scan = small_scan(tmp_path)  # a float32 volume: 76,800 bytes
  # 80 % of 336,000 bytes is 268,800 = 3.5 volumes: two fixed volumes and one
  # output fit, two outputs (4 volumes, 307,200 bytes) do not.
  assert volume_memory.check_memory(scan, 1, available=336_000) == 230_400
  with pytest.raises(ValueError, match=r"need 300 KiB of memory, more than the 262 KiB allowed "
                                       r".*; give at most 1 λ value per run$"):
    volume_memory.check_memory(scan, 2, available=336_000)


def test_an_h5_output_is_pointed_to_float16_and_a_nifti_one_is_not(tmp_path):
  nifti = small_scan(tmp_path)
  h5 = small_h5_scan(tmp_path)
  assert h5.output_shape == (12, 40, 40) and nifti.output_shape == (40, 40, 12)
  with pytest.raises(ValueError, match=r"give at most 11,182 λ values per run$"):
    volume_memory.check_memory(nifti, 100_000, available=2**30)
  with pytest.raises(ValueError, match=r"scan\.h5: .* give at most 11,182 λ values per run or "
                                       r"--dtype=float16$"):
    volume_memory.check_memory(h5, 100_000, available=2**30)
  # float16 is already 2 bytes a value: nothing smaller to point to. What fits:
  # (858,993,459 allowed − 153,600 for two float32 volumes) // 38,400.
  with pytest.raises(ValueError, match=r"× 2 bytes, .* give at most 22,365 λ values per run$"):
    volume_memory.check_memory(h5, 100_000, "float16", available=2**30)


def test_the_volumes_being_put_back_and_written_are_float32_whatever_the_output(tmp_path):
  scan = small_h5_scan(tmp_path)  # 19,200 values
  # 10 float16 outputs (10 · 19,200 · 2 = 384,000) and the two float32 volumes
  # put_back and the writer hold (2 · 19,200 · 4 = 153,600).
  assert volume_memory.check_memory(scan, 10, "float16", available=2**30) == 537_600
