"""Tests of the explorer's request parameters (hyperrecon_jax.explorer.request_params).

Pure parsing, no model: the validity of a point is `hparams`' decision, so
these check that a request is accepted exactly when the validator accepts its
values, and that a refusal quotes what was sent.
"""

import numpy as np
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax.errors import InputError
from hyperrecon_jax.explorer import request_params as rp

LOSSES = ("dc", "tv", "weight_l1")


def test_lam_is_parsed_to_float32_in_the_unit_interval():
  lam = rp.check_lam("0.25, 0.75", 2)
  assert lam.dtype == np.float32 and lam.tolist() == [0.25, 0.75]
  np.testing.assert_array_equal(rp.check_lam([0.0, 1.0], 2), [0.0, 1.0])


@pytest.mark.parametrize("text, pattern", [
    ("0.5", r"lam must have 2 value\(s\) for this model \(3 loss terms\), got 1 \('0.5'\)"),
    ("0.1,x", "lam must be 2 comma-separated number"),
    ("0.1,1.01", r"lam must lie in \[0, 1\], got '0.1,1.01'$"),
    ("-0.1,0.5", r"lam must lie in \[0, 1\]"),
    ("nan,0.5", r"lam must lie in \[0, 1\]"),
    ("0_1,0.5", "lam must be 2 comma-separated number"),  # Python's float: 1.0
])
def test_bad_lam_is_a_bad_request_quoting_it(text, pattern):
  with pytest.raises(rp.BadRequest, match=pattern):
    rp.check_lam(text, 2)


@pytest.mark.parametrize("values", [
    (0.2, 0.3, 0.5), (0.33, 0.33, 0.34), (0.3333, 0.3333, 0.3333), (0.3333, 0.3333, 0.3332),
    (0.3, 0.3, 0.3), (0.5, 0.6, -0.1), (1.0, 0.0, 0.0), (0.5, 0.5, 0.0001), (0.5, 0.5, 0.00011),
    (np.inf, 0.0, 0.0), (np.nan, 0.5, 0.5),
])
def test_coeffs_are_accepted_exactly_when_hparams_accepts_them(values):
  try:
    hparams.check_coefficients(np.asarray([values], np.float64))
    valid = True
  except InputError:
    valid = False
  text = ",".join(repr(float(v)) for v in values)
  if not valid:
    with pytest.raises(rp.BadRequest):
      rp.check_coeffs(text, LOSSES)
    return
  coeffs = rp.check_coeffs(text, LOSSES)
  assert coeffs.dtype == np.float32 and coeffs.sum() == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(coeffs, np.asarray(values) / np.sum(values), rtol=1e-6)


@pytest.mark.parametrize("text, pattern", [
    ("0.5,0.5", r"coeffs must have 3 value\(s\) for this model \(one per loss term: dc, tv, "
     r"weight_l1\), got 2"),
    ("0.5,a,0.5", "coeffs must be 3 comma-separated number"),
    ("inf,0,0", r"coeffs must be finite numbers, got 'inf,0,0'$"),
    ("0.5,0.6,-0.1", r"coeffs must be ≥ 0, got '0.5,0.6,-0.1'$"),
    ("0.3,0.3,0.3", r"coeffs must sum to 1 \(within 0.0001\), got '0.3,0.3,0.3', which sums "
     r"to 0.9$"),
    # 2e-4 off, twice the tolerance: a sum shown to 3 digits would read "1".
    ("0.5,0.5002,0", r"coeffs must sum to 1 \(within 0.0001\), got '0.5,0.5002,0', which "
     r"sums to 1\.0002$"),
])
def test_bad_coeffs_say_which_rule_they_break(text, pattern):
  with pytest.raises(rp.BadRequest, match=pattern):
    rp.check_coeffs(text, LOSSES)


def test_a_point_is_given_one_way_and_comes_back_both_ways():
  lam, coeffs = rp.check_point("0.25,0.75", None, LOSSES)
  np.testing.assert_allclose(coeffs, [0.25, 0.5625, 0.1875], rtol=1e-6)  # Eq. 10
  lam2, coeffs2 = rp.check_point(None, "0.25,0.5625,0.1875", LOSSES)
  np.testing.assert_allclose(lam2, lam, rtol=1e-6)
  np.testing.assert_array_equal(coeffs2, coeffs)
  with pytest.raises(rp.BadRequest, match="either 'lam' or 'coeffs', not both"):
    rp.check_point("0.5,0.5", "0.2,0.3,0.5", LOSSES)
  with pytest.raises(rp.BadRequest, match=r"missing parameter 'lam' \(2 value\(s\) in \[0, 1\]\) "
                     r"or 'coeffs' \(3 values ≥ 0 summing to 1, one per loss term: dc, tv, "
                     r"weight_l1\)"):
    rp.check_point(None, None, LOSSES)


def test_slice_format_and_kind():
  assert rp.check_slice(" 3 ", 4) == 3
  with pytest.raises(rp.BadRequest, match="slice must be an integer, got '1.5'"):
    rp.check_slice("1.5", 4)
  for text in ("1_0", "\u0663"):  # Python's int: 10, 3
    with pytest.raises(rp.BadRequest, match="slice must be an integer"):
      rp.check_slice(text, 40)
  with pytest.raises(rp.BadRequest, match=r"slice must be in \[0, 3\], got 4"):
    rp.check_slice(4, 4)
  # An integer of more digits than int() reads: out of range, not "not an integer".
  with pytest.raises(rp.BadRequest, match=r"slice must be in \[0, 3\], got 10{99}…$"):
    rp.check_slice("1" + "0" * 5000, 4)
  with pytest.raises(rp.BadRequest, match=r"slice must be in \[0, 39\], got 99999$"):
    rp.check_slice("99999", 40)
  assert rp.check_slice("-0", 4) == 0 and rp.check_slice("0003", 4) == 3
  # Leading zeros beyond int()'s 4,300 digits, and two signs: a 400 each, not a 500.
  assert rp.check_slice("0" * 4400 + "1", 4) == 1
  with pytest.raises(rp.BadRequest, match=r"slice must be an integer, got '--1'"):
    rp.check_slice("--1", 4)
  rp.check_download("npy", "range")
  with pytest.raises(rp.BadRequest, match="format must be 'png' or 'npy', got 'gif'"):
    rp.check_download("gif", "recon")
  with pytest.raises(rp.BadRequest, match="kind must be one of"):
    rp.check_download("png", "foo")


def test_quoted_values_are_cut_short():
  assert rp.shown("abc") == "'abc'" and rp.shown(1.5) == "1.5"
  long = rp.shown("x" * 5000)
  assert long == repr("x" * rp.MAX_SHOWN + "…")
  # Cut only past MAX_SHOWN (100): a value of exactly that length is quoted whole.
  assert rp.shown("x" * 100) == repr("x" * 100)
  assert rp.shown("x" * 101) == repr("x" * 100 + "…")
  assert isinstance(rp.BadRequest("m"), ValueError)  # an InputError, as the library's errors
