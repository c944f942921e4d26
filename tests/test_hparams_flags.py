"""Tests for hyperrecon_jax.hparams.flags: λ and coefficients as a command line writes them."""


import math

import numpy as np
import pytest

from hyperrecon_jax import hparams

# Unit roundoff of float32: each rounded operation is off by at most this, relatively.
U32 = 2.0**-24


@pytest.mark.parametrize("text, num_lambdas, expected", [
    ("0.3", 1, [[0.3]]),
    (" 0,0.5,1 ", 1, [[0.0], [0.5], [1.0]]),
    ("grid:3", 1, [[0.0], [0.5], [1.0]]),
    (" grid:3 ", 1, [[0.0], [0.5], [1.0]]),  # spaces around a form, as around a list
    ("grid:2", 2, [[0, 0], [0, 1], [1, 0], [1, 1]]),
    ("0.2:0.4,1:0", 2, [[0.2, 0.4], [1.0, 0.0]]),
    ("0.1:0.2:0.3", 3, [[0.1, 0.2, 0.3]]),
])
def test_parse_lambdas_good(text, num_lambdas, expected):
  lam = hparams.parse_lambdas(text, num_lambdas)
  assert lam.dtype == np.float32
  np.testing.assert_allclose(lam, expected)


@pytest.mark.parametrize("text", ["samples:9", " samples:9 "])
@pytest.mark.parametrize("num_lambdas", [1, 3])
def test_parse_lambdas_samples(num_lambdas, text):
  k = num_lambdas + 1
  lam = hparams.parse_lambdas(text, num_lambdas)
  assert lam.dtype == np.float32 and lam.shape == (9, num_lambdas)
  np.testing.assert_allclose(hparams.coefficients(lam), hparams.simplex_design(9, k),
                             atol=k * (k + 2) * U32)


@pytest.mark.parametrize("text, num_lambdas, match", [
    ("0.3,x", 1, r"^--lam=0.3,x: 'x' is not a number$"),
    ("0.1:0.2", 1, r"'0.1:0.2' has 2 values, .* has 1 hyperparameter\(s\) \(one value per item\)"),
    ("0.1", 2, r"'0.1' has 1 value, .* has 2 hyperparameter\(s\) \(write 2 values as a:b\)"),
    ("0.1:0.2", 3, r"has 3 hyperparameter\(s\) \(write 3 values as a:b:c\)"),
    ("grid:x", 1, r"^--lam=grid:x: grid:N needs a whole number N written in digits 0-9, "
                  r"got 'x'$"),
    # int() read these as 30 and 3 points.
    ("grid:3_0", 1, r"^--lam=grid:3_0: grid:N needs a whole number N .*got '3_0'$"),
    ("grid:\u0663", 1, r"grid:N needs a whole number N written in digits 0-9"),
    ("grid:1", 1, r"^--lam=grid:1: N must be ≥ 2"),
    ("grid:3", 3, r"^--lam=grid:3: grids stop at two hyperparameters.*simplex_design"),
    ("samples:x", 3, r"^--lam=samples:x: samples:N needs a whole number N written in "
                     r"digits 0-9, got 'x'$"),
    ("samples:1_0", 3, r"samples:N needs a whole number N .*got '1_0'$"),
    ("samples:3", 3, r"^--lam=samples:3: .*num ≥ num_coeffs .*got num=3, num_coeffs=4"),
])
def test_parse_lambdas_errors(text, num_lambdas, match):
  with pytest.raises(ValueError, match=match):
    hparams.parse_lambdas(text, num_lambdas)


def test_parse_lambdas_names_the_flag():
  with pytest.raises(ValueError, match=r"^--lambdas=grid:4: grids stop"):
    hparams.parse_lambdas("grid:4", 4, flag="--lambdas")


@pytest.mark.parametrize("text, num_coeffs, expected", [
    ("1:0:0,0.33:0.33:0.34", 3, [[1, 0, 0], [0.33, 0.33, 0.34]]),
    ("0.3333:0.3333:0.3333", 3, [[0.3333] * 3]),
    (" 0.25: 0.75 ", 2, [[0.25, 0.75]]),
    ("0.1:0.2:0.3:0.4", 4, [[0.1, 0.2, 0.3, 0.4]]),
])
def test_parse_coefficients_good(text, num_coeffs, expected):
  c = hparams.parse_coefficients(text, num_coeffs)
  assert c.dtype == np.float32 and c.shape == (len(expected), num_coeffs)
  np.testing.assert_allclose(c, expected)


@pytest.mark.parametrize("text, num_coeffs, match", [
    ("1:0,x:1", 2, r"^--coeffs=1:0,x:1: 'x:1' is not a number$"),
    ("0.5:nan", 2, r"'0.5:nan' is not a finite number"),
    ("0.5:0.5", 3, r"'0.5:0.5' has 2 values, the model's loss has 3 terms "
                   r"\(write 3 coefficients as a:b:c\)"),
    ("1.5:-0.5", 2, r"'1.5:-0.5' has a negative coefficient \(-0.5\)"),
    # Negative by less than the sum's tolerance, in a row that sums to 1.
    ("1:0,1.00005:-0.00005", 2, r"^--coeffs=1:0,1.00005:-0.00005: '1.00005:-0.00005' has a "
                                r"negative coefficient \(-5e-05\); coefficients are ≥ 0$"),
    ("1:0:0,0.3:0.3:0.3", 3, r"^--coeffs=1:0:0,0.3:0.3:0.3: '0.3:0.3:0.3' sums to 0.9; "
                             r"coefficients must sum to 1 \(within 0.0001\)$"),
    ("0.6:0.6", 2, r"'0.6:0.6' sums to 1.2;"),
    ("1e308:1e308", 2, r"'1e308:1e308' sums to inf;"),  # finite values, an overflowing sum
    ("0_1:0", 2, r"'0_1:0' is not a number"),  # Python's float reads 1
])
def test_parse_coefficients_errors(text, num_coeffs, match):
  with pytest.raises(ValueError, match=match):
    hparams.parse_coefficients(text, num_coeffs)


def test_parse_coefficients_names_the_flag_and_checks_num_coeffs():
  with pytest.raises(ValueError, match=r"^--weights=0.2:0.2: "):
    hparams.parse_coefficients("0.2:0.2", 2, flag="--weights")
  with pytest.raises(ValueError, match=r"num_coeffs must be an integer ≥ 2, got 1"):
    hparams.parse_coefficients("1", 1)


@pytest.mark.parametrize("text, value", [
    ("0.3", 0.3), (" .5 ", 0.5), ("1.", 1.0), ("+1e-3", 1e-3), ("-2E2", -200.0), ("inf", np.inf),
    ("-Infinity", -np.inf)])
def test_parse_number_reads_decimal_numbers(text, value):
  assert hparams.parse_number(text) == value


@pytest.mark.parametrize("text", ["-0", "-0.0", " -.0e3 "])
def test_parse_number_reads_negative_zero_as_zero(text):
  # −0.0 == 0.0, so only its sign tells them apart; a −0.0 is echoed as "-0".
  assert math.copysign(1.0, hparams.parse_number(text)) == 1.0
  lam = hparams.parse_lambdas(f"{text},0.5", 1)
  assert not np.signbit(lam).any() and f"{lam[0, 0]:g}" == "0"
  coeffs = hparams.parse_coefficients(f"1:{text}", 2)
  assert not np.signbit(coeffs).any() and f"{coeffs[0, 1]:g}" == "0"


@pytest.mark.parametrize("text", ["", "0_1", "\u0661", "0x1", "1e", "e3", "1,5", "one"])
def test_parse_number_refuses_what_float_alone_would_read_or_is_no_number(text):
  with pytest.raises(ValueError, match="not a decimal number"):
    hparams.parse_number(text)
