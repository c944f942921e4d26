"""hyperrecon_jax.scan_notes: the notes and warnings on how a scan was read.

Each function is checked at its thresholds on small hand-made arrays, whose
counts are written out here; `tests/test_scans.py` checks that `read_input`
carries them to `Scan.warnings` and `Scan.notes` for real files.
"""

import numpy as np

from hyperrecon_jax import scan_notes


def test_the_scale_warning_starts_below_five_voxels_above_the_percentile():
  # 1,000 positive voxels at the 99.5th percentile: 5.0 above it, the floor.
  assert scan_notes.scale_warning(1000, 99.5) == ()
  (line,) = scan_notes.scale_warning(999, 99.5)  # 4.995 above
  assert line.startswith("the intensity scale (the 99.5th percentile) rests on 4.995 of "
                         "the scan's 999 positive voxels")
  # Exactly five above is not fewer than five. 1,000 × (1 − 0.995) is
  # 5.000000000000004 in float64, above the floor either way; 10 × (1 − 0.5)
  # is 5 exactly, and 9 × 0.5 = 4.5 is below.
  assert scan_notes.scale_warning(10, 50.0) == ()
  assert scan_notes.scale_warning(9, 50.0) != ()
  # Five in decimal that float64 puts just below: 5,000 × (1 − 0.999) is
  # 4.99999999999945 and 50 × (1 − 0.9) is 4.999999999999999; the percentile a
  # user wrote is what counts.
  assert scan_notes.scale_warning(5000, 99.9) == ()
  assert scan_notes.scale_warning(50, 90.0) == ()
  assert scan_notes.scale_warning(4999, 99.9) != ()


def test_clipping_warnings_count_negative_and_bright_voxels():
  # Scale 100, so the background level is 5 (`slicing.FOREGROUND_THRESHOLD` of it).
  data = np.full(1000, 50.0)
  data[:10] = -20.0  # 10 of the 1,000 voxels above the level: 1 %, the floor
  (line,) = scan_notes.clipping_warnings(data, 100.0, positive=990)
  assert line.startswith("10 voxels (1% of those above the background) are negative, down to -20")
  data[:10] = -4.0  # within the background level: not counted
  assert scan_notes.clipping_warnings(data, 100.0, positive=990) == ()
  data[:9] = -20.0  # 9 of 1,000: under 1 %
  assert scan_notes.clipping_warnings(data, 100.0, positive=991) == ()

  bright = np.full(20000, 50.0)
  bright[:10] = 300.0  # 10 voxels above 2× the scale, the floor for 20,000 (0.05 %)
  (line,) = scan_notes.clipping_warnings(bright, 100.0, positive=20000)
  assert line.startswith("10 voxels are brighter than 2× the intensity scale (100), up to 3×")
  bright[9] = 200.0  # exactly 2× is not beyond it
  assert scan_notes.clipping_warnings(bright, 100.0, positive=20000) == ()


def test_a_scale_set_by_a_small_bright_region_is_said():
  # A region of 0.6 % of the voxels, 5× the rest, is the 99.5th percentile:
  # the scale, so no voxel lies beyond 2× it, and the rest of the scan (the
  # 99th percentile, 1) reached a fifth of the model's range without a word.
  data = np.ones(10000)
  data[:60] = 5.0
  scale = float(np.percentile(data, 99.5))
  assert scale == 5.0 and float(np.percentile(data, 99)) == 1.0
  assert scan_notes.clipping_warnings(data, scale, positive=10000) == ()
  (line,) = scan_notes.bright_region_warning(data, scale)
  assert line.startswith("the intensity scale (5) is 5× the 99th percentile of the positive "
                         "voxels (1): a bright region of under 1 % of the scan sets it, and the "
                         "rest of the scan reaches at most 0.2 of the model's range")
  # Exactly 2× the 99th percentile is not beyond it; a scan's own brightest
  # voxels (the template's 99.5th percentile is 1.009× its 99th) are far below.
  assert scan_notes.bright_region_warning(data, 2.0) == ()
  assert scan_notes.bright_region_warning(data, 2.0001) != ()


def test_the_outside_box_warning_counts_foreground_beyond_the_box():
  # Axis 2 slices of 20×20; `slicing.orient` turns a plane, so the box is
  # taken in the oriented plane: a box over all of it leaves nothing out.
  foreground = np.zeros((20, 20, 4), bool)
  foreground[5:15, 5:15, :] = True
  assert scan_notes.outside_box_warning(foreground, 2, (0, 20, 0, 20)) == ()
  # A box of the oriented planes' rows and columns 0–9: 100 − 25 voxels of each
  # slice's 10×10 block lie outside, in every slice.
  (line,) = scan_notes.outside_box_warning(foreground, 2, (0, 10, 0, 10))
  assert line.startswith("300 foreground voxels in 4 slice(s) (RAS slices 0–3) lie outside")
  # Four voxels outside are fewer than five: a speck, not worth a warning.
  speck = np.zeros((20, 20, 4), bool)
  speck[0:2, 0:2, 3] = True
  speck[8:12, 8:12, :] = True
  assert scan_notes.outside_box_warning(speck, 2, (8, 12, 8, 12)) == ()
  speck[0:2, 0:3, 3] = True  # six
  (line,) = scan_notes.outside_box_warning(speck, 2, (8, 12, 8, 12))
  assert line.startswith("6 foreground voxels in 1 slice(s) (RAS slices 3–3)")


def test_the_outside_box_warning_takes_a_share_of_a_large_foreground():
  # Two 120×120 slices (axis 2), each with a 100×100 block inside a centred box
  # (the same after `slicing.orient` turns the plane): 20,000 voxels. From
  # 10,000 foreground voxels on, `OUTSIDE_SHARE` (0.05 %) of them is more than
  # the floor of five: 10 outside of 20,010 (0.05 % is 10.005) is a speck,
  # 11 of 20,011 is not.
  foreground = np.zeros((120, 120, 2), bool)
  foreground[10:110, 10:110, :] = True
  box = (10, 110, 10, 110)
  assert scan_notes.outside_box_warning(foreground, 2, box) == ()
  foreground[0, 0:10, 1] = True
  assert scan_notes.outside_box_warning(foreground, 2, box) == ()
  foreground[0, 10, 1] = True
  (line,) = scan_notes.outside_box_warning(foreground, 2, box)
  assert line.startswith("11 foreground voxels in 1 slice(s) (RAS slices 1–1) lie outside")


def test_the_resolution_note_says_how_much_detail_is_lost():
  note = scan_notes.resolution_note(64, (192, 160), (197, 233, 189), "foreground box", "voxel")
  assert note == ("the model reconstructs at 64×64: each slice's 192×160-voxel foreground box "
                  "is resized to fit, 3.0× coarser: detail finer than 3.0 voxels is lost; a "
                  "reconstruction written out is put back on the input's 197×233×189 grid")
  # Within 5 % of the grid, no loss is claimed.
  assert "coarser" not in scan_notes.resolution_note(64, (67, 60), (67, 60), "image", "pixel")


def test_the_resolution_note_counts_the_finer_side_of_anisotropic_voxels():
  # 50 rows of 3 mm and 88 columns of 1 mm: the 150 mm side fills 64 pixels, so
  # the 88 columns shrink to 88 · 64 / 150 = 37.5 pixels, 150 / 64 = 2.34× coarser.
  note = scan_notes.resolution_note(64, (50, 88), (100, 50, 9), "foreground box", "voxel",
                                    (3.0, 1.0))
  assert "2.3× coarser: detail finer than 2.3 voxels" in note
  # The same box with isotropic voxels: 88 / 64 = 1.375.
  assert "1.4× coarser" in scan_notes.resolution_note(64, (50, 88), (100, 50, 9),
                                                      "foreground box", "voxel")


def test_a_volume_of_few_distinct_values_is_said_to_be_a_mask_or_labels():
  rng = np.random.default_rng(0)
  mask = np.zeros((30, 30, 10), np.float32)
  mask[5:25, 5:25] = 1.0
  (line,) = scan_notes.few_values_warning(mask)
  assert line.startswith("the volume holds only 2 distinct values (0, 1): a mask or a "
                         "segmentation rather than a scan?")
  labels = rng.integers(0, 45, (30, 30, 10)).astype(np.int16)  # FreeSurfer's aseg: ~45
  (line,) = scan_notes.few_values_warning(labels)
  assert "only 45 distinct values (0, 1, 2, 3, 4, …)" in line
  assert scan_notes.few_values_warning(
      rng.integers(0, scan_notes.FEW_VALUES + 1, (30, 30, 10)).astype(np.float32)) == ()
  # An 8-bit scan uses far more than FEW_VALUES of its 256 levels.
  assert scan_notes.few_values_warning(rng.integers(0, 256, (30, 30, 10)).astype(np.uint8)) == ()


def test_values_the_spread_sample_misses_are_counted_in_the_whole_volume():
  # Every voxel the evenly spread sample reads is 0; the others hold a scan's
  # many values, which the count of the whole volume finds.
  volume = np.random.default_rng(1).uniform(1, 2, scan_notes._SAMPLE * 4).astype(np.float32)
  volume[::4] = 0.0
  assert np.unique(volume[::4]).size == 1
  assert scan_notes.few_values_warning(volume.reshape(64, 64, -1)) == ()
