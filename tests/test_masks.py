"""Tests for hyperrecon_jax.masks."""

import hashlib
import re

import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import masks


def _ring_fraction(mask, r0, r1):
  h, w = mask.shape
  y, x = np.mgrid[:h, :w]
  r = np.hypot(y - h // 2, x - w // 2)
  return mask[(r >= r0) & (r < r1)].mean()


@pytest.mark.parametrize("shape", [(256, 256), (64, 64)])
@pytest.mark.parametrize("accel", [4.0, 8.0])
def test_poisson_acceleration_within_5_percent(shape, accel):
  mask = masks.poisson_disc(shape, accel, seed=0)
  assert mask.shape == shape and mask.dtype == np.float32
  assert set(np.unique(mask)) <= {0.0, 1.0}
  got = masks.acceleration(mask)
  assert abs(got - accel) <= 0.05 * accel, got


# Sizes of 32 and more: with at least ~100 samples one sample moves the
# acceleration by < 1%, so the bisection can land within the default 2%.
@pytest.mark.parametrize("shape,accel", [((256, 256), 8), ((256, 256), 4), ((64, 64), 8),
                                         ((64, 48), 4), ((65, 37), 5), ((128, 128), 4)])
def test_poisson_acceleration_within_the_default_rtol(shape, accel):
  got = masks.acceleration(masks.poisson_disc(shape, accel, seed=0))
  assert abs(got - accel) <= 0.02 * accel, got


# (H, W), acceleration, seed -> number of samples, first 16 hex digits of the
# SHA-256 of np.packbits(mask): the masks of the shipped models (8×, mask_seed 0).
_PINNED_POISSON = {
    ((256, 256), 8, 0): (8158, "08b57d9591d35f13"),
    ((64, 64), 8, 0): (510, "920dfcd6ef459ebc"),
}


@pytest.mark.parametrize("key", list(_PINNED_POISSON))
def test_poisson_masks_of_shipped_models_and_trained_runs_do_not_change(key):
  # A workdir stores no mask: a trained run and the shipped models are
  # evaluated on the mask `poisson_disc` draws again from the config. A
  # change to the radius search, its tolerance or the visiting order gives
  # them other measurements than they were trained on, without a word; so
  # would a NumPy whose seeded permutation draws another order.
  shape, accel, seed = key
  mask = masks.poisson_disc(shape, accel, seed=seed)
  digest = hashlib.sha256(np.packbits(mask.astype(bool)).tobytes()).hexdigest()[:16]
  assert (int(mask.sum()), digest) == _PINNED_POISSON[key]


def test_poisson_non_square():
  mask = masks.poisson_disc((64, 48), 4, seed=1)
  assert mask.shape == (64, 48)
  assert abs(masks.acceleration(mask) - 4) <= 0.2
  assert mask[32, 24] == 1


def test_poisson_paper_size():
  # The paper's 256×256 at 8×; its build time is a benchmark, not a test.
  mask = masks.poisson_disc((256, 256), 8, seed=12345)
  assert abs(masks.acceleration(mask) - 8) <= 0.05 * 8
  assert mask[128, 128] == 1


def test_poisson_deterministic_by_seed():
  a = masks.poisson_disc((64, 64), 4, seed=3)
  b = masks.poisson_disc((64, 64), 4, seed=3)
  c = masks.poisson_disc((64, 64), 4, seed=4)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()


def test_poisson_returns_copies():
  a = masks.poisson_disc((64, 64), 4, seed=5)
  a[:] = 0
  assert masks.poisson_disc((64, 64), 4, seed=5).sum() > 0


@pytest.mark.parametrize("shape,side", [((256, 256), 20), ((64, 64), 5)])
def test_poisson_calibration_fully_sampled(shape, side):
  mask = masks.poisson_disc(shape, 8)
  h, w = shape
  lo_h, lo_w = h // 2 - side // 2, w // 2 - side // 2
  assert mask[lo_h:lo_h + side, lo_w:lo_w + side].all()
  assert mask[h // 2, w // 2] == 1  # DC in the middle.


def test_poisson_custom_calib_and_corners():
  mask = masks.poisson_disc((64, 64), 4, calib=(10, 10))
  assert mask[27:37, 27:37].all()
  # crop_corner: nothing outside the inscribed ellipse.
  assert mask[0, 0] == 0 and mask[-1, -1] == 0 and mask[0, -1] == 0


@pytest.mark.parametrize("shape", [(63, 63), (65, 37)])  # odd calibration sides (5; 5 and 3)
def test_poisson_density_is_centred_on_dc_on_odd_sides(shape):
  # The distance that sets the exclusion radius was measured from n / 2, half
  # a pixel off the DC index n // 2 on an odd side: frequency -k fell farther
  # out than +k (at 63: the column -31 never sampled, +31 5.5 times in 16
  # masks; 473 samples on the -k side against 494 on the +k side).
  calib = masks._default_calib(shape)
  r = masks._calib_distance(shape, calib)
  np.testing.assert_array_equal(r, r[::-1, ::-1])  # index i ↔ n - 1 - i: -k ↔ +k about n // 2
  box = np.zeros(shape, bool)
  box[masks._calib_slices(shape, calib)] = True
  np.testing.assert_array_equal(r == 0, box)  # zero exactly on the calibration box


def test_poisson_density_on_even_sides_is_sigpy_s():
  # sigpy.mri.poisson's distance, measured from n / 2: the DC index on an even side.
  shape, calib = (64, 48), (5, 4)
  y, x = np.mgrid[:64, :48].astype(np.float64)
  dx = np.maximum(np.abs(x - 24) - 2, 0)
  dy = np.maximum(np.abs(y - 32) - 2.5, 0)
  np.testing.assert_allclose(masks._calib_distance(shape, calib),
                             np.hypot(dx / dx.max(), dy / dy.max()), rtol=0, atol=1e-15)


def test_poisson_density_decreases_outward():
  mask = masks.poisson_disc((256, 256), 8)
  fractions = [_ring_fraction(mask, r0, r1) for r0, r1 in [(12, 30), (30, 60), (60, 90), (90, 125)]]
  assert all(a > b for a, b in zip(fractions, fractions[1:])), fractions


def test_poisson_samples_are_spread_out():
  # Far from the centre the exclusion radius exceeds 1, so no two samples are
  # horizontal or vertical neighbours there.
  mask = masks.poisson_disc((256, 256), 8)
  y, x = np.mgrid[:256, :256]
  outer = np.hypot(y - 128, x - 128) > 100
  pairs = (mask[:, 1:] * mask[:, :-1])[outer[:, 1:]].sum() + (mask[1:] * mask[:-1])[outer[1:]].sum()
  assert pairs == 0


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("accel", [4, 8])
def test_cartesian(kind, accel):
  mask = masks.cartesian((64, 256), accel, kind=kind, center_fraction=0.08, seed=0)
  assert mask.shape == (64, 256) and mask.dtype == np.float32
  # Full columns: every column all 0 or all 1.
  assert np.all(mask == mask[:1])
  cols = mask[0].astype(bool)
  assert abs(masks.acceleration(mask) - accel) <= 0.05 * accel
  num_low = round(256 * 0.08)
  pad = (256 - num_low + 1) // 2
  assert cols[pad:pad + num_low].all() and cols[128]
  np.testing.assert_array_equal(mask, masks.cartesian((64, 256), accel, kind=kind, seed=0))
  assert (mask != masks.cartesian((64, 256), accel, kind=kind, seed=1)).any()


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_cartesian_samples_the_nearest_whole_number_of_columns(kind):
  # 64 / 6 = 10.67 columns: 11, the nearest, not 10 (the real acceleration
  # 5.82 against 6.4).
  mask = masks.cartesian((4, 64), 6, kind=kind, center_fraction=0.08, seed=0)
  assert int(mask[0].sum()) == 11


def test_cartesian_random_samples_exactly_the_requested_number_of_distinct_columns():
  # 64 / 2 = 32 columns, 5 of them the centre block: 27 more drawn from the
  # other 59. Drawn with replacement, a repeat (almost certain at these
  # numbers) would leave fewer columns and a higher real acceleration.
  for seed in range(4):
    mask = masks.cartesian((2, 64), 2, kind="random", center_fraction=0.08, seed=seed)
    assert int(mask[0].sum()) == 32, seed


# Columns of the (4, 64) masks at 4×, center_fraction 0.08, seed 0.
_PINNED_CARTESIAN = {
    "random": [0, 2, 4, 9, 14, 16, 26, 30, 31, 32, 33, 34, 36, 43, 46, 52],
    "equispaced": [3, 8, 14, 19, 24, 30, 31, 32, 33, 34, 35, 40, 45, 51, 56, 62],
}


@pytest.mark.parametrize("kind", list(_PINNED_CARTESIAN))
def test_cartesian_masks_of_trained_runs_do_not_change(kind):
  # As for the Poisson-disc masks: a workdir stores no mask, a trained run is
  # evaluated on the mask drawn again from its config. Rounding the
  # equispaced positions instead of flooring them, for one, keeps every
  # property above and moves columns.
  mask = masks.cartesian((4, 64), 4, kind=kind, center_fraction=0.08, seed=0)
  assert np.flatnonzero(mask[0]).tolist() == _PINNED_CARTESIAN[kind]


@pytest.mark.parametrize("w,center_fraction,block", [
    (64, 0.08, range(30, 35)),  # 5 columns: 2 either side of DC 32.
    (64, 0.0625, range(30, 34)),  # 4 columns: 2 below DC 32, 1 above.
    (63, 0.0635, range(30, 34)),  # 4 columns: 1 below DC 31, 2 above.
    # round(8 · 0.05) = round(0.4) = 0, raised to the one column at least: DC 4.
    (8, 0.05, range(4, 5)),
])
def test_cartesian_centre_block_is_placed_as_fastmri_places_it(w, center_fraction, block):
  # fastMRI: pad = (W - num_low + 1) // 2. With as many lines as the block
  # holds (acceleration W / num_low) the mask is the block alone.
  num_low = len(block)
  mask = masks.cartesian((4, w), w / num_low, center_fraction=center_fraction, seed=0)
  np.testing.assert_array_equal(np.flatnonzero(mask[0]), list(block))


def test_cartesian_equispaced_spacing():
  mask = masks.cartesian((8, 256), 4, kind="equispaced", center_fraction=0.08)
  cols = np.flatnonzero(mask[0])
  left = cols[cols < 100]
  gaps = np.diff(left)
  assert gaps.max() - gaps.min() <= 1


def test_acceleration():
  mask = np.zeros((4, 4))
  mask[0, :2] = 1
  assert masks.acceleration(mask) == 8.0
  assert masks.acceleration(np.zeros((2, 2))) == float("inf")


@pytest.mark.parametrize("fn", [masks.poisson_disc, masks.cartesian])
def test_bad_inputs(fn):
  with pytest.raises(ValueError, match="acceleration"):
    fn((64, 64), 1.0)
  with pytest.raises(ValueError, match="acceleration"):
    fn((64, 64), 0.5)
  with pytest.raises(ValueError, match="shape"):
    fn((64, 64, 2), 4)
  with pytest.raises(ValueError, match="shape"):
    fn((0, 64), 4)
  with pytest.raises(ValueError, match="shape"):
    fn(64, 4)


@pytest.mark.parametrize("fn", [masks.poisson_disc, masks.cartesian])
def test_a_size_or_acceleration_that_is_no_number_is_named(fn):
  # int() cuts 64.7 to 64 (a mask of a size nobody asked for); float(None)
  # is a bare TypeError.
  for shape in ((16.5, 16), (16, 15.9), (True, 16), (float("nan"), 16), (16, None)):
    with pytest.raises(errors.InputError, match=r"shape must be a pair of positive ints \(H, W\), "
                                                rf"got {re.escape(repr(shape))}\."):
      fn(shape, 4)
  for accel in (None, "fast", [4]):
    with pytest.raises(errors.InputError, match=r"acceleration must be a finite number > 1, "
                                                rf"got {re.escape(repr(accel))}\."):
      fn((16, 16), accel)
  # Whole numbers of any type are the sizes they stand for: the same mask.
  want = fn((16, 16), 4)
  for shape in ((16.0, 16), (np.int64(16), np.int32(16))):
    np.testing.assert_array_equal(fn(shape, 4), want)


def test_a_calibration_box_of_exactly_the_allowed_samples_is_accepted():
  # 16 · 16 / 4 = 64 samples at 4×: an 8×8 box fills them exactly (not
  # "more than"), and is fully sampled; an 8×9 box (72) is refused by the
  # check that names the box, before any mask is drawn.
  mask = masks.poisson_disc((16, 16), 4, calib=(8, 8))
  assert mask[4:12, 4:12].all()
  assert abs(masks.acceleration(mask) - 4) <= 0.05 * 4
  with pytest.raises(errors.InputError, match=r"calib=\(8, 9\) alone samples more"):
    masks.poisson_disc((16, 16), 4, calib=(8, 9))


def test_bad_inputs_specific():
  # 40 · 40 = 1600 samples of the box alone against 64 · 64 / 8 = 512 allowed:
  # refused before any mask is drawn, by the check that names the box.
  with pytest.raises(ValueError, match=r"calib=\(40, 40\) alone samples more"):
    masks.poisson_disc((64, 64), 8, calib=(40, 40))
  with pytest.raises(ValueError, match="calib"):
    masks.poisson_disc((64, 64), 4, calib=(64, 2))
  with pytest.raises(ValueError, match="smallest"):
    masks.poisson_disc((64, 64), 1.1)  # corners are never sampled: min ~4/pi.
  with pytest.raises(ValueError, match="center_fraction"):
    masks.cartesian((64, 64), 4, center_fraction=0.5)
  with pytest.raises(ValueError, match="center_fraction"):
    masks.cartesian((64, 64), 4, center_fraction=0.0)
  # round(64 · 0.14) = round(8.96) = 9 centre columns, one more than the
  # round(64 / 8) = 8 the acceleration allows; 0.13 gives round(8.32) = 8, the limit.
  with pytest.raises(ValueError, match="center_fraction=0.14"):
    masks.cartesian((64, 64), 8, center_fraction=0.14)
  assert int(masks.cartesian((64, 64), 8, center_fraction=0.13)[0].sum()) == 8
  with pytest.raises(ValueError, match=r"rtol must be in \(0, 0.05\], got 0.3"):
    masks.poisson_disc((64, 64), 8, rtol=0.3)
  with pytest.raises(ValueError, match="kind"):
    masks.cartesian((64, 64), 4, kind="spiral")


@pytest.mark.parametrize("fn", [masks.poisson_disc, masks.cartesian])
@pytest.mark.parametrize("seed", [1.5, -1, "x", None, True, float("nan")])
def test_a_seed_that_is_no_whole_number_is_named(fn, seed):
  # int() cut 1.5 to 1: the mask of another seed, without a word.
  with pytest.raises(errors.InputError, match=rf"seed must be a whole number ≥ 0, got "
                                              rf"{re.escape(repr(seed))}"):
    fn((16, 16), 4, seed=seed)


def test_a_whole_seed_of_another_type_is_that_seed():
  for fn in (masks.poisson_disc, masks.cartesian):
    np.testing.assert_array_equal(fn((16, 16), 4, seed=3.0), fn((16, 16), 4, seed=3))
    np.testing.assert_array_equal(fn((16, 16), 4, seed=np.int64(3)), fn((16, 16), 4, seed=3))


def test_a_calibration_box_of_fractions_is_named():
  # int() cut (4.5, 4) to (4, 4): a box nobody asked for.
  with pytest.raises(errors.InputError, match=r"calib must be a pair of ints, got \(4\.5, 4\)"):
    masks.poisson_disc((16, 16), 4, calib=(4.5, 4))
  np.testing.assert_array_equal(masks.poisson_disc((16, 16), 4, calib=(4.0, 4)),
                                masks.poisson_disc((16, 16), 4, calib=(4, 4)))


@pytest.mark.parametrize("shape,accel,closest", [((7, 7), 4, "3.769"), ((7, 7), 2.5, "2.333"),
                                                 ((6, 6), 8, "7.200")])
def test_poisson_refuses_an_acceleration_it_cannot_reach_within_5_percent(shape, accel, closest):
  # 49 or 36 pixels, 5 to 20 samples: one sample more or less moves the
  # acceleration by 5-20%.
  with pytest.raises(errors.InputError, match=rf"acceleration={float(accel)} cannot be reached "
                                              rf"within 5% for shape {re.escape(str(shape))} "
                                              rf"and calib=\(2, 2\): closest is {closest}\."):
    masks.poisson_disc(shape, accel, seed=0)


@pytest.mark.parametrize("accel", [2.0, 3.0])
def test_poisson_low_acceleration_uses_full_core(accel):
  mask = masks.poisson_disc((64, 64), accel)
  assert abs(masks.acceleration(mask) - accel) <= 0.05 * accel
  assert _ring_fraction(mask, 0, 6) == 1.0
  assert _ring_fraction(mask, 0, 6) > _ring_fraction(mask, 20, 31)
