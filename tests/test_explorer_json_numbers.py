"""hyperrecon_jax.explorer.json_numbers: the numbers of the explorer's JSON answers."""

import json

import numpy as np
import pytest

from hyperrecon_jax.explorer import json_numbers


@pytest.mark.parametrize("x", [np.inf, -np.inf, np.nan, np.float32(np.inf)])
def test_a_number_that_is_not_finite_is_none(x):
  # The PSNR of an exact reconstruction is +inf: JSON has no inf, and the
  # server writes its answers with allow_nan=False (a 500 otherwise).
  assert json_numbers.finite_or_none(x) is None


def test_finite_numbers_are_plain_floats():
  out = json_numbers.finite_or_none(np.float32(0.5))
  assert out == 0.5 and type(out) is float
  json.dumps([json_numbers.finite_or_none(np.float64(-3.25))], allow_nan=False)


def test_points_are_rounded_to_six_significant_digits():
  assert json_numbers.rounded(np.float32(0.05)) == 0.05  # 0.05000000074505806 inside
  assert json_numbers.rounded([[1 / 3, np.inf], [2e-7 / 3, 123456789.0]]) == [
      [0.333333, None], [6.66667e-08, 123457000.0]]
