"""hyperrecon_jax.volume_memory: the memory a reconstruction takes, refused before any work.

The counts are checked against hand computations on a small synthetic scan
(`test_outputs.small_scan`); what the count bounds in a real process is
measured by benchmarks/reconstruct_memory.py (docs/performance.md), not here.
"""

import configs
import pytest
from test_outputs import small_scan

from hyperrecon_jax import volume_memory


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
  plane = 32 * 32 * 4
  maps = 4 * volume_memory.FULL_RESOLUTION_MAPS * 32 * 32 * 8 * 4  # 4 rows, float32
  want = volume_memory.MODEL_GRID_PLANES * 12 * plane + maps + volume_memory.COMPILE_BYTES
  assert volume_memory.working_memory(config, scan) == want
  # A batch larger than the scan holds the scan's 12 slices, not more.
  assert (volume_memory.working_memory(config, scan, batch=100)
          == want + (12 - 4) * maps // 4)
  # bfloat16 activations halve the feature maps, not the slices kept in float32.
  config.model.dtype = "bfloat16"
  assert volume_memory.working_memory(config, scan) == want - maps // 2
