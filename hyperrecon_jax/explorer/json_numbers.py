"""Numbers for the explorer's JSON answers: finite floats or None, λ as typed."""

import math

import numpy as np

SIGNIFICANT_DIGITS = 6  # of the λ and coefficients in answers


def finite_or_none(x):
  """A float for JSON: None where not finite (JSON has no inf or NaN)."""
  x = float(x)
  return x if math.isfinite(x) else None


def rounded(values):
  """λ or coefficients for JSON: floats of `SIGNIFICANT_DIGITS` significant digits.

  The values are float32 inside, so 0.05 comes out as 0.05000000074505806;
  six digits give back what was typed and keep far more precision than a
  slider or a λ grid has.

  Args:
    values: a number or a (nested) sequence or array of them.

  Returns:
    A float (None where not finite) or a nested list of them.
  """
  if np.ndim(values) == 0:
    x = float(values)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(x) else None
  return [rounded(v) for v in values]
