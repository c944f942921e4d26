"""The explorer API's request parameters: parsed and checked, or a `BadRequest` saying why.

A point of the λ set comes as ``lam`` (the K − 1 hyperparameters) or as
``coeffs`` (the K loss coefficients), comma-separated. Which values are valid
is decided by the project's one validator, `hparams.check_lambda` and
`hparams.check_coefficients`; this module parses the API's syntax and words a
refusal for one point, quoting what the request sent (cut to `MAX_SHOWN`
characters). The command-line parsers (`hparams.parse_lambdas`,
`hparams.parse_coefficients`) read another syntax, lists of ``a:b`` vectors,
so they are not used here.
"""

import re

import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax.errors import InputError

MAX_SHOWN = 100  # characters of a request's value quoted in an error message
FORMATS = ("png", "npy")
KINDS = ("recon", "error", "range", "truth", "zero_filled")


class BadRequest(InputError):
  """A request parameter is missing or wrong: HTTP 400 with this message."""


def shown(value) -> str:
  """A request's value for an error message: its repr, cut to `MAX_SHOWN` characters.

  A message quotes what was sent so the sender can see the mistake, but a
  megabyte of it would only bury the sentence (and echo it back whole).
  """
  text = str(value) if isinstance(value, str) else repr(value)
  if len(text) > MAX_SHOWN:
    text = text[:MAX_SHOWN] + "…"
  return repr(text) if isinstance(value, str) else text


def check_slice(index, num_slices: int) -> int:
  """``index`` as an int in [0, num_slices), or `BadRequest` naming ``slice``."""
  text = str(index).strip()
  if not re.fullmatch(r"[+-]?[0-9]+", text):  # not "1_0", not "١", not "--1"
    raise BadRequest(f"slice must be an integer, got {shown(index)}")
  # Compared as text first: int() refuses more than 4,300 digits.
  sign, digits = text[0] if text[0] in "+-" else "", text.lstrip("+-").lstrip("0") or "0"
  i = int(sign + digits) if len(digits) <= len(str(num_slices)) else None
  if i is None or not 0 <= i < num_slices:
    got = i if i is not None else text[:MAX_SHOWN] + ("…" if len(text) > MAX_SHOWN else "")
    raise BadRequest(f"slice must be in [0, {num_slices - 1}], got {got}")
  return i


def _split(text, name, count, what) -> np.ndarray:
  """``text`` ('a,b,…' or numbers) as (count,) float64, or `BadRequest` naming ``name``."""
  parts = str(text).split(",") if isinstance(text, str) else list(np.atleast_1d(text))
  try:
    values = np.array([hparams.parse_number(p) if isinstance(p, str) else float(p)
                       for p in parts], np.float64)
  except (TypeError, ValueError):
    raise BadRequest(f"{name} must be {count} comma-separated number(s), got "
                     f"{shown(text)}") from None
  if values.shape != (count,):
    raise BadRequest(f"{name} must have {count} value(s) for this model ({what}), got "
                     f"{values.size} ({shown(text)})")
  return values


def check_lam(lam, num_lambdas: int) -> np.ndarray:
  """``lam`` ('a,b' or numbers) as (K−1,) float32 in [0, 1] (`hparams.check_lambda`).

  Raises:
    BadRequest: not K − 1 numbers, or one outside [0, 1] or not finite.
  """
  values = _split(lam, "lam", num_lambdas, f"{num_lambdas + 1} loss terms")
  try:
    hparams.check_lambda(values[None])
  except InputError:  # the shape is right, so a value is out of range
    raise BadRequest(f"lam must lie in [0, 1], got {shown(lam)}") from None
  return values.astype(np.float32)


def check_coeffs(coeffs, losses) -> np.ndarray:
  """``coeffs`` ('c1,…,cK' or numbers) as (K,) float32 on the simplex.

  The values must pass `hparams.check_coefficients`: finite, ≥ 0, summing to
  1 within `hparams.SUM_TOLERANCE` (decimals as typed, e.g. 0.33,0.33,0.34).
  They are then divided by their sum, so the model gets a point of the
  simplex.

  Args:
    coeffs: the request's value.
    losses: the names of the model's K loss terms, for the messages.

  Raises:
    BadRequest: not K numbers, or not a point of the simplex (saying why).
  """
  terms = ", ".join(losses)
  values = _split(coeffs, "coeffs", len(losses), f"one per loss term: {terms}")
  try:
    hparams.check_coefficients(values[None])
  except InputError:
    raise BadRequest(_off_simplex(coeffs, values)) from None
  return (values / values.sum()).astype(np.float32)


def _off_simplex(coeffs, values) -> str:
  """Why `hparams.check_coefficients` refused ``values``, quoting the request's ``coeffs``.

  The validator decides; this only says which of its rules one point broke,
  in the request's terms (its message speaks of rows of a (B, K) array).
  """
  if not np.all(np.isfinite(values)):
    return f"coeffs must be finite numbers, got {shown(coeffs)}"
  if values.min() < 0:
    return f"coeffs must be ≥ 0, got {shown(coeffs)}"
  with np.errstate(over="ignore"):  # numbers whose sum is past float64's range: inf
    total = float(values.astype(np.float64).sum())
  return (f"coeffs must sum to 1 (within {hparams.SUM_TOLERANCE:g}), got {shown(coeffs)}, "
          f"which sums to {total:.6g}")


def check_point(lam, coeffs, losses):
  """A request's point of the λ set, given by exactly one of ``lam`` and ``coeffs``.

  Args:
    lam: K − 1 hyperparameters in [0, 1] ('a,b,…' or numbers), or None.
    coeffs: K loss coefficients on the simplex, or None.
    losses: the names of the model's K loss terms.

  Returns:
    ``(lam (K−1,), coeffs (K,))``, float32, the one computed from the other
    (`hparams.coefficients`, `hparams.lambdas_from_coefficients`).

  Raises:
    BadRequest: neither or both given, or the one given is malformed.
  """
  num_lambdas = len(losses) - 1
  if lam is not None and coeffs is not None:
    # `coeffs=` with no value (a page's empty field) counts as given: say so.
    empty = "".join(f" ({name}= is given, empty)" for name, value in (("lam", lam),
                                                                    ("coeffs", coeffs))
                    if isinstance(value, str) and not value.strip())
    raise BadRequest(f"give either 'lam' or 'coeffs', not both{empty}: they are two ways to "
                     f"say the same loss weighting")
  if lam is None and coeffs is None:
    raise BadRequest(f"missing parameter 'lam' ({num_lambdas} value(s) in [0, 1]) or "
                     f"'coeffs' ({len(losses)} values ≥ 0 summing to 1, one per loss "
                     f"term: {', '.join(losses)})")
  if coeffs is None:
    lam = check_lam(lam, num_lambdas)
    return lam, np.asarray(hparams.coefficients(lam[None]))[0]
  coeffs = check_coeffs(coeffs, losses)
  return np.asarray(hparams.lambdas_from_coefficients(coeffs[None]))[0], coeffs


def check_download(fmt, kind) -> None:
  """Raises `BadRequest` unless ``fmt`` is in `FORMATS` and ``kind`` in `KINDS`."""
  if fmt not in FORMATS:
    raise BadRequest(f"format must be 'png' or 'npy', got {shown(fmt)}")
  if kind not in KINDS:
    raise BadRequest(f"kind must be one of {KINDS}, got {shown(kind)}")
