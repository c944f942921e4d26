"""Tests of hyperrecon_jax.data.near_copies: arrays equal to float32 rounding."""

import numpy as np
import pytest

from hyperrecon_jax.data import near_copies


def _brute_thumbnail(array, blocks):
  """Block means by explicit loops over the same block edges."""
  edges = [np.linspace(0, n, min(blocks, n) + 1).astype(int) for n in array.shape]
  out = np.empty([len(e) - 1 for e in edges])
  for index in np.ndindex(out.shape):
    block = array[tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, index))]
    out[index] = block.astype(np.float64).mean()
  return out


@pytest.mark.parametrize("shape", [(64, 64), (37, 9), (20, 24, 16), (5,)])
def test_the_thumbnail_is_the_mean_of_each_block(shape):
  array = np.random.default_rng(0).random(shape).astype(np.float32)
  np.testing.assert_allclose(near_copies.thumbnail(array),
                             _brute_thumbnail(array, near_copies.BLOCKS), rtol=1e-12)


def _ulps(array, count, seed):
  """``array`` moved by up to ``count`` float32 units in the last place at a sixth of its values."""
  rng = np.random.default_rng(seed)
  out = array.copy()
  moved = rng.random(array.shape) < 1 / 6
  for _ in range(count):
    out[moved] = np.nextafter(out[moved], np.float32(2), dtype=np.float32)
  return out


def test_a_copy_that_differs_by_rounding_is_found_and_another_image_is_not():
  rng = np.random.default_rng(1)
  images = [rng.random((64, 64)).astype(np.float32) for _ in range(20)]
  index = near_copies.Index()
  for k, image in enumerate(images):
    index.add(image, f"slice {k}")
  assert index.find(_ulps(images[7], 2, seed=2)) == "slice 7"
  assert index.find(images[3]) == "slice 3"
  # Another image, or the same one changed by a hundredth in a corner.
  assert index.find(rng.random((64, 64)).astype(np.float32)) is None
  changed = images[7].copy()
  changed[:4, :4] += 0.01
  assert index.find(changed) is None
  # Another shape is another array, whatever its blocks.
  assert index.find(np.pad(images[7], ((0, 1), (0, 0)))) is None


@pytest.mark.parametrize("added, looked_up", [("below", "above"), ("above", "below")])
def test_a_copy_whose_mean_lies_across_a_bin_edge_is_found(added, looked_up):
  # Uniform images at means just below and just above a bin edge (bins 36 and
  # 37), 4e-8 apart, far within TOLERANCE: each finds the other, whichever of
  # the two neighbouring bins the added one is filed in.
  edge = 37 * near_copies._BIN
  images = {"below": np.full((8, 8), edge - 2e-8, np.float32),
            "above": np.full((8, 8), edge + 2e-8, np.float32)}
  bins = [int(np.floor(float(images[s][0, 0]) / near_copies._BIN)) for s in ("below", "above")]
  assert bins == [36, 37]
  index = near_copies.Index()
  index.add(images[added], added)
  assert index.find(images[looked_up]) == added


def test_nearly_blank_arrays_are_not_compared():
  # One voxel of 2e-3 at two places: every block mean within 1e-5, yet two
  # different slices; compared, a legitimate folder would be refused.
  a, b = np.zeros((256, 256), np.float32), np.zeros((256, 256), np.float32)
  a[10, 10] = b[200, 30] = 2e-3
  index = near_copies.Index()
  index.add(a, "A")
  assert index.find(b) is None and index.find(a) is None
