"""Tests for hyperrecon_jax.data.slicing: the slices kept, and where and how they are resized."""

import numpy as np
import pytest

from hyperrecon_jax.data import slicing

SIZE = 16


def _volume():
  """A 20×20×10 volume: a 12×12 square of 0.8 in axial slices 2..7, slices 0, 1, 8, 9 empty."""
  volume = np.zeros((20, 20, 10), np.float32)
  volume[4:16, 4:16, 2:8] = 0.8
  return volume


def _indices(volume, **kwargs):
  return [s.index for s in slicing.volume_slices(volume, axis=2, size=SIZE, **kwargs)]


# Which slices volume_slices keeps


def test_min_foreground_keeps_a_slice_whose_fraction_equals_it():
  volume = _volume()
  # Every fraction is >= 0, so 0 keeps the empty slices too.
  assert _indices(volume, min_foreground=0.0) == list(range(10))
  # Slices 2..7 hold 12 · 12 / (20 · 20) = 0.36 foreground (144 / 400 rounds to
  # the same double as the literal 0.36): kept at 0.36, all dropped at 0.37.
  assert _indices(volume, min_foreground=0.36) == list(range(2, 8))
  assert _indices(volume, min_foreground=0.37) == []


def test_indices_choose_among_the_kept_slices_only():
  volume = _volume()
  # Slice 0 is background at min_foreground 0.01: asking for it does not bring it back.
  chosen = list(slicing.volume_slices(volume, axis=2, size=SIZE, min_foreground=0.01,
                                      indices=[0, 3]))
  assert [s.index for s in chosen] == [3]
  # The crop box comes from every kept slice, not from the chosen ones: slice 3
  # is the image the whole volume's run gives it.
  whole = {s.index: s.image for s in slicing.volume_slices(volume, axis=2, size=SIZE,
                                                           min_foreground=0.01)}
  np.testing.assert_array_equal(chosen[0].image, whole[3])


# square_placement and fit_to_square


@pytest.mark.parametrize("shape, placement", [
    # Scale 8 / 80 = 0.1: 3 × 8. The 8 − 3 = 5 rows of padding split 2 above, 3 below.
    ((30, 80), (3, 8, 2, 0)),
    ((80, 30), (8, 3, 0, 2)),
])
def test_square_placement_puts_the_odd_pixel_of_padding_after_the_image(shape, placement):
  assert slicing.square_placement(shape, 8) == placement
  h, w, top, left = placement
  # fit_to_square fills exactly that region (a constant image stays 1 through the
  # filter and the resize).
  square = slicing.fit_to_square(np.ones(shape, np.float32), 8, order=1)
  expected = np.zeros((8, 8), bool)
  expected[top:top + h, left:left + w] = True
  np.testing.assert_array_equal(square > 0, expected)


def _gaussian_nearest(image, sigma):
  """Separable Gaussian blur in float64, edges repeated (scipy's mode='nearest').

  The kernel is sampled at whole offsets, cut at radius int(4σ + 0.5) (scipy's
  default truncate=4) and normalized to sum 1.
  """
  radius = int(4.0 * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1)
  kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
  kernel /= kernel.sum()
  out = np.asarray(image, np.float64)
  for axis in (0, 1):
    padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
                    mode="edge")
    n = out.shape[axis]
    out = sum(w * np.take(padded, np.arange(j, j + n), axis=axis) for j, w in enumerate(kernel))
  return out


def test_fit_to_square_low_passes_with_sigma_of_half_the_factor_minus_one():
  # 64 → 16 is a factor f = 4 on both axes: the documented sigma is (4 − 1) / 2 = 1.5.
  # A linear resize by 1/4 on pixel centres (grid_mode) puts output pixel i at
  # input coordinate (i + 0.5) · 4 − 0.5 = 4i + 1.5, the mean of pixels 4i + 1 and
  # 4i + 2; in 2-D the mean of that 2×2 block of the blurred image.
  image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
  blurred = _gaussian_nearest(image, 1.5)
  expected = 0.25 * (blurred[1::4, 1::4] + blurred[1::4, 2::4]
                     + blurred[2::4, 1::4] + blurred[2::4, 2::4])
  got = slicing.fit_to_square(image, 16, order=1)
  assert got.shape == (16, 16) and got.dtype == np.float32
  # fit_to_square rounds to float32 after the filter's two passes and after the
  # resize: three roundings of values <= 1, each <= 2^-24 ≈ 6e-8, 2e-7 in all;
  # 1e-6 leaves a margin of 5. A sigma off by a factor of 2 moves pixels by ~0.1.
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
