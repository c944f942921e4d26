"""hyperrecon_jax.explorer.lambda_set: the points the explorer's curves score, and their bound."""

import ml_collections
import numpy as np
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax.explorer import lambda_set as ls


def _config(image_size=64, grid=5):
  return ml_collections.ConfigDict({"data": {"image_size": image_size},
                                    "eval": {"grid": grid}})


def test_a_grid_for_three_terms_and_a_design_beyond():
  grid = ls.lambda_set(_config(grid=4), 3, name="m")
  assert grid.grid == 4 and grid.design is None and grid.lambdas.shape == (16, 2)
  np.testing.assert_allclose(grid.coeffs, hparams.coefficients(grid.lambdas), atol=1e-6)
  design = ls.lambda_set(_config(), 4, name="m", design=12)
  assert design.design == 12 and design.coeffs.shape == (12, 4)


@pytest.mark.parametrize("num_coeffs, image_size, kwargs, most", [
    # One slice at every point: 4·H·W bytes each, at most 2 GiB.
    (2, 64, dict(grid=2**17 + 1), "131,072"),        # 2^31 / (4 · 64²) = 2^17
    (3, 256, dict(grid=91), "8,192"),                 # 91² = 8,281 > 2^31 / (4 · 256²)
    (4, 256, dict(design=8_193), "8,192"),
    (2, 64, dict(grid=2 * 10**12), "131,072"),        # refused before it is built
])
def test_a_lambda_set_beyond_the_memory_of_one_slice_is_refused(num_coeffs, image_size,
                                                                kwargs, most):
  with pytest.raises(ValueError, match=rf"more than the explorer's 2 GiB \({most} λ\)"):
    ls.lambda_set(_config(image_size), num_coeffs, name="m", **kwargs)


def test_a_design_smaller_than_its_vertices_names_the_flag():
  # It was refused in simplex_design's own terms ("needs num ≥ num_coeffs").
  with pytest.raises(ValueError, match=r"a design of 3 points on the simplex of m's 4 loss "
                                       r"terms: it needs at least 4, its vertices \(--samples"):
    ls.lambda_set(_config(), 4, name="m", design=3)
  assert ls.lambda_set(_config(), 4, name="m", design=4).coeffs.shape == (4, 4)


def test_the_bound_itself_is_accepted():
  assert ls.lambda_set(_config(256), 3, name="m", grid=90).lambdas.shape == (8_100, 2)


def test_a_lambda_set_of_exactly_the_bound_is_accepted():
  # 2^17 points of 4 · 64² bytes are 2 GiB, not more: accepted.
  assert ls.lambda_set(_config(64), 2, name="m", grid=2**17).lambdas.shape == (2**17, 1)


def test_the_default_design_has_design_size_points():
  design = ls.lambda_set(_config(), 4, name="m")
  assert design.design == ls.DESIGN_SIZE == 64 and design.coeffs.shape == (64, 4)
  np.testing.assert_allclose(design.coeffs, hparams.simplex_design(64, 4))
