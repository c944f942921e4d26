"""hyperrecon_jax.results: the statistics `summarize` builds from per-slice metrics.

Hand-made metric arrays, no model: the quartiles, the slices left out of a
metric, the volumes' order. Results of a real evaluation are tested in
tests/test_evaluate.py.
"""

import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import results


def _all_metrics(grid, zero_filled, **special):
  """``{metric: array}`` pairs for `results.summarize`: the same values for every metric.

  Args:
    grid: (S, G) values.
    zero_filled: (S,) values.
    **special: ``metric=(grid, zero_filled)`` for the metrics that differ.
  """
  g = {m: np.asarray(grid, np.float64) for m in results.METRICS}
  z = {m: np.asarray(zero_filled, np.float64) for m in results.METRICS}
  for m, (gm, zm) in special.items():
    g[m], z[m] = np.asarray(gm, np.float64), np.asarray(zm, np.float64)
  return g, z


def test_quartiles_are_the_25th_and_75th_percentiles_over_the_slices():
  # Five slices, given out of order: the quartiles of 5 sorted values are its
  # 2nd and 4th (positions 0.25 × 4 = 1 and 0.75 × 4 = 3), no interpolation,
  # so they are exact.
  grid = np.array([[5.0, 10.0], [1.0, 30.0], [4.0, 20.0], [2.0, 50.0], [3.0, 40.0]])
  zero_filled = np.array([0.5, 0.125, 0.375, 0.25, 0.4375])
  g, z = _all_metrics(grid, zero_filled)
  result = results.summarize(g, z, hparams.grid(2), [0] * 5, list(range(5)))
  for m in results.METRICS:
    assert result["q25"][m] == [2.0, 20.0] and result["q75"][m] == [4.0, 40.0]
    assert result["zero_filled"]["q25"][m] == 0.25
    assert result["zero_filled"]["q75"][m] == 0.4375
    np.testing.assert_array_equal(result["q25"][m], np.percentile(grid, 25, axis=0))
    np.testing.assert_array_equal(result["q75"][m], np.percentile(grid, 75, axis=0))


def test_a_slice_whose_zero_filled_value_is_not_finite_is_left_out():
  # Slice (7, 1): its reconstructions' NMSE is finite at every λ, its
  # zero-filled input's is not; the comparison of the two would be over
  # different slices unless it leaves both.
  nmse = np.array([[0.5, 0.25], [0.125, 0.375], [0.75, 0.125]])
  g, z = _all_metrics(np.ones((3, 2)), np.ones(3), nmse=(nmse, [1.0, np.inf, 0.5]))
  result = results.summarize(g, z, hparams.grid(2), [7, 7, 8], [0, 1, 0])
  assert result["unscored"] == {"nmse": [[7, 1]]}
  # Dyadic values: each mean below is exact.
  assert result["mean"]["nmse"] == [(0.5 + 0.75) / 2, (0.25 + 0.125) / 2]
  assert result["volume_mean"]["nmse"] == [[0.5, 0.25], [0.75, 0.125]]
  assert result["zero_filled"]["mean"]["nmse"] == 0.75
  assert result["zero_filled"]["volume_mean"]["nmse"] == [1.0, 0.5]
  assert result["best"]["nmse"]["index"] == 1
  # The per-slice values are kept as they are, the unscored one as null.
  assert result["zero_filled"]["per_slice"]["nmse"] == [1.0, None, 0.5]
  assert result["per_slice"]["nmse"][1] == [0.125, 0.375]
  assert result["mean"]["psnr"] == [1.0, 1.0]  # the other metrics keep every slice
  results.to_json(result)


def test_volumes_are_in_order_of_first_appearance_not_sorted():
  volumes = [7, 7, 7, 3, 3, 3, 5, 5]
  slices = [0, 1, 2, 0, 1, 2, 0, 1]
  grid = np.array([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0], [10.0, -10.0], [20.0, -20.0],
                   [30.0, -30.0], [100.0, -100.0], [200.0, -200.0]])
  zero_filled = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 8.0])
  g, z = _all_metrics(grid, zero_filled)
  result = results.summarize(g, z, hparams.grid(2), volumes, slices)
  assert result["volumes"] == [7, 3, 5] and result["num_volumes"] == 3
  assert result["slices"] == {"volume": volumes, "slice": slices}
  # By hand: volume 7 holds 1, 2, 3; volume 3 holds 10, 20, 30; volume 5 holds
  # 100, 200 (all means exact in float64).
  for m in results.METRICS:
    assert result["volume_mean"][m] == [[2.0, -2.0], [20.0, -20.0], [150.0, -150.0]]
    assert result["zero_filled"]["volume_mean"][m] == [1.0, 2.0, 6.0]
