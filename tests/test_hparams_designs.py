"""Tests for hyperrecon_jax.hparams.designs: λ grids, and Das–Dennis and scrambled-Sobol
designs on the simplex."""

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import hparams

# Unit roundoff of float32: each rounded operation is off by at most this, relatively.
U32 = 2.0**-24


def test_grid_shapes_and_order():
  one = hparams.grid(5)
  np.testing.assert_allclose(one[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
  two = hparams.grid(3, 2)
  assert two.shape == (9, 2)
  np.testing.assert_allclose(two[:3], [[0, 0], [0, 0.5], [0, 1]])
  with pytest.raises(ValueError):
    hparams.grid(1)
  with pytest.raises(ValueError):
    hparams.grid(4, 3)


@pytest.mark.parametrize("partitions, num_coeffs", [(2, 4), (1, 3), (4, 2), (3, 3), (5, 5)])
def test_das_dennis_counts_and_vertices_first(partitions, num_coeffs):
  points = hparams.das_dennis(partitions, num_coeffs)
  assert points.dtype == np.float32
  assert points.shape == (math.comb(partitions + num_coeffs - 1, num_coeffs - 1), num_coeffs)
  np.testing.assert_array_equal(points[:num_coeffs], np.eye(num_coeffs))
  steps = points * partitions
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)
  np.testing.assert_array_equal(np.round(steps).sum(axis=1), partitions)
  assert len(np.unique(np.round(steps), axis=0)) == len(points)
  np.testing.assert_array_equal(points, hparams.das_dennis(partitions, num_coeffs))


def test_das_dennis_k4_p2():
  points = hparams.das_dennis(2, 4)
  assert points.shape == (10, 4)
  np.testing.assert_array_equal(points[4:6], [[0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0]])


@pytest.mark.parametrize("args, match", [
    ((0, 3), r"partitions must be an integer ≥ 1, got 0"),
    ((2, 1), r"num_coeffs must be an integer ≥ 2, got 1"),
    ((2.0, 3), r"partitions must be an integer ≥ 1, got 2.0"),
])
def test_das_dennis_rejects(args, match):
  with pytest.raises(ValueError, match=match):
    hparams.das_dennis(*args)


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 6])
def test_simplex_design_vertices_first_and_on_the_simplex(num_coeffs):
  design = hparams.simplex_design(37, num_coeffs)
  assert design.dtype == np.float32 and design.shape == (37, num_coeffs)
  np.testing.assert_array_equal(design[:num_coeffs], np.eye(num_coeffs))
  assert design.min() >= 0
  np.testing.assert_allclose(design.sum(axis=1), 1.0, atol=num_coeffs * U32 * 4)
  hparams.check_coefficients(design)
  np.testing.assert_array_equal(design, hparams.simplex_design(37, num_coeffs))
  assert not np.array_equal(design, hparams.simplex_design(37, num_coeffs, seed=1))
  np.testing.assert_array_equal(hparams.simplex_design(num_coeffs, num_coeffs), np.eye(num_coeffs))


def test_simplex_design_two_terms_is_the_sobol_sequence():
  from scipy.stats import qmc
  u = qmc.Sobol(d=1, scramble=True, seed=3).random_base2(3)[:6, 0]
  design = hparams.simplex_design(8, 2, seed=3)
  np.testing.assert_allclose(hparams.lambdas_from_coefficients(design)[2:, 0], u, atol=1e-7)


@pytest.mark.parametrize("num_coeffs", [3, 4])
def test_simplex_design_has_low_discrepancy(num_coeffs):
  # Uniform on the simplex: E c_k = 1/K, Var c_k = (K − 1) / (K²(K + 1)). A
  # random sample of n points would miss 1/K by about sqrt(Var / n); the Sobol
  # design must do five times better.
  n = 1024
  points = hparams.simplex_design(n + num_coeffs, num_coeffs)[num_coeffs:]
  iid_se = np.sqrt((num_coeffs - 1) / (num_coeffs**2 * (num_coeffs + 1)) / n)
  assert np.all(np.abs(points.mean(axis=0) - 1 / num_coeffs) < iid_se / 5)


@pytest.mark.parametrize("args, match", [
    ((3, 4), r"num ≥ num_coeffs \(the 4 vertices come first\), got num=3, num_coeffs=4"),
    ((5, 1), r"num_coeffs must be an integer ≥ 2, got 1"),
])
def test_simplex_design_rejects(args, match):
  with pytest.raises(ValueError, match=match):
    hparams.simplex_design(*args)


def test_grid_stops_at_two_hyperparameters():
  with pytest.raises(ValueError, match=r"grids stop at two hyperparameters, got 3 .*"
                                       r"simplex_design\(N, 4\).*evaluate.py "
                                       r"--config.eval.samples=N"):
    hparams.grid(5, 3)
  with pytest.raises(ValueError, match=r"grid supports 1 or 2 hyperparameters, got 0"):
    hparams.grid(5, 0)


def test_a_grid_takes_a_whole_number_of_points():
  # Unchecked, 2.5 is a TypeError from np.linspace naming no argument.
  for num in (2.5, 3.0, "3", True, None):
    with pytest.raises(errors.InputError, match=r"grid needs an integer number of points ≥ 2, "
                                                rf"got {re.escape(repr(num))}"):
      hparams.grid(num)
  # NumPy's integers and an integer JAX scalar are integers: the same grid as
  # Python's, exactly.
  for num in (np.int64(3), np.int32(3), np.uint8(3), jnp.asarray(3)):
    np.testing.assert_array_equal(hparams.grid(num), [[0.0], [0.5], [1.0]])
    np.testing.assert_array_equal(hparams.grid(num, 2), hparams.grid(3, 2))
