"""λ and coefficients as a command line writes them (``--lam``, ``--coeffs``, ``--lambdas``)."""

import math
import re

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.hparams.designs import grid
from hyperrecon_jax.hparams.designs import simplex_design
from hyperrecon_jax.hparams.maps import SUM_TOLERANCE
from hyperrecon_jax.hparams.maps import check_coefficients
from hyperrecon_jax.hparams.maps import check_num_coeffs
from hyperrecon_jax.hparams.maps import lambdas_from_coefficients


def _values(count: int) -> str:
  """'1 value', '2 values': the count of an item's values, for the messages."""
  return f"{count} value" + ("" if count == 1 else "s")


def _example(count: int) -> str:
  letters = "abcdefghijklmnopqrstuvwxyz"
  return ":".join(letters[:count]) if count <= len(letters) else f"v1:v2:…:v{count}"


# A decimal number as written on a command line. Python's `float` also reads
# "0_1" as 1 and other scripts' digits; a typo must not become a valid λ.
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(inf|infinity|nan)\s*",
                     re.IGNORECASE | re.ASCII)


def parse_number(text: str) -> float:
  """A number written in decimal (``0.3``, ``.5``, ``1e-3``, ``inf``, ``nan``) as a float.

  Raises:
    ValueError: anything else, including what Python's ``float`` would also
      read (``0_1``, digits of other scripts).
  """
  if not _NUMBER.fullmatch(text):
    raise ValueError(f"not a decimal number: {text!r}")
  return float(text) + 0.0  # "-0" is 0: a −0.0 would be echoed into outputs as typed


def _vectors(text: str, flag: str):
  """Each comma-separated item of a flag's value with its ``:``-separated numbers."""
  for item in text.split(","):
    try:
      yield item, [parse_number(v) for v in item.split(":")]
    except ValueError:
      raise errors.InputError(f"{flag}={text}: {item!r} is not a number") from None


def parse_lambdas(text: str, num_lambdas: int, *, flag: str = "--lam") -> np.ndarray:
  """A command line's list of λ values as a (L, num_lambdas) float32 array.

  ``0.3``; ``0,0.5,1`` (L values); ``grid:N`` (`grid`, up to two
  hyperparameters); ``samples:N`` (the λ of `simplex_design`\\ (N, K), any K,
  N ≥ K); for K − 1 ≥ 2 hyperparameters ``a:b`` pairs, ``a:b:c`` triples, …,
  e.g. ``0.2:0.4,1:0``. The values are not range-checked here (the caller
  knows what it accepts).

  Args:
    text: the flag's value.
    num_lambdas: the model's number of hyperparameters.
    flag: the flag's name, for the messages.

  Raises:
    InputError: naming the bad item: not a number, the wrong count of values,
      or a bad ``grid:N`` or ``samples:N``.
  """
  text = str(text).strip()
  if text.startswith("grid:"):
    n = parse_count(text[5:], f"{flag}={text}: grid:N")
    if n < 2:
      raise errors.InputError(f"{flag}={text}: N must be ≥ 2 (0 and 1 at least)")
    try:
      return grid(n, num_lambdas)
    except errors.InputError as e:
      raise errors.InputError(f"{flag}={text}: {e}") from None
  if text.startswith("samples:"):
    n = parse_count(text[8:], f"{flag}={text}: samples:N")
    try:
      design = simplex_design(n, num_lambdas + 1)
    except errors.InputError as e:
      raise errors.InputError(f"{flag}={text}: {e}") from None
    return np.asarray(lambdas_from_coefficients(design), np.float32)
  rows = []
  for item, lam in _vectors(text, flag):
    if len(lam) != num_lambdas:
      how = ("one value per item" if num_lambdas == 1
             else f"write {num_lambdas} values as {_example(num_lambdas)}")
      raise errors.InputError(
          f"{flag}={text}: {item!r} has {_values(len(lam))}, the model's loss has "
          f"{num_lambdas} hyperparameter(s) ({how})")
    rows.append(lam)
  return np.asarray(rows, np.float32)


def parse_coefficients(text: str, num_coeffs: int, *, flag: str = "--coeffs") -> np.ndarray:
  """A command line's list of coefficient vectors as a (L, K) float32 array.

  Comma-separated vectors ``c1:c2:…:cK`` of non-negative numbers summing to 1
  (within `SUM_TOLERANCE`), e.g. ``1:0:0,0.33:0.33:0.34`` for K = 3.

  Args:
    text: the flag's value.
    num_coeffs: the model's number of loss terms K ≥ 2.
    flag: the flag's name, for the messages.

  Returns:
    (L, K) float32 coefficients, checked with `check_coefficients`.

  Raises:
    InputError: naming the bad item: not a number, the wrong count of values,
      a negative value, or a sum other than 1 (with the sum).
  """
  check_num_coeffs(num_coeffs)
  text = str(text).strip()
  rows = []
  for item, c in _vectors(text, flag):
    if not all(math.isfinite(v) for v in c):
      raise errors.InputError(f"{flag}={text}: {item!r} is not a finite number")
    if len(c) != num_coeffs:
      raise errors.InputError(
          f"{flag}={text}: {item!r} has {_values(len(c))}, the model's loss has {num_coeffs} "
          f"terms (write {num_coeffs} coefficients as {_example(num_coeffs)})")
    if min(c) < 0:
      raise errors.InputError(f"{flag}={text}: {item!r} has a negative coefficient "
                              f"({min(c):g}); coefficients are ≥ 0")
    try:
      total = math.fsum(c)
    except OverflowError:  # finite values whose sum is not
      total = math.inf
    if abs(total - 1.0) > SUM_TOLERANCE:
      raise errors.InputError(f"{flag}={text}: {item!r} sums to {total:.6g}; coefficients "
                              f"must sum to 1 (within {SUM_TOLERANCE:g})")
    rows.append(c)
  coeffs = np.asarray(rows, np.float64)
  check_coefficients(coeffs, name=flag)
  return coeffs.astype(np.float32)


def parse_count(text: str, what: str) -> int:
  """The N of ``grid:N``, ``samples:N`` or ``rays:P``: ASCII digits only.

  ``int`` would also take ``3_0`` (30) and other scripts' digits: as with
  `parse_number`, a typo must not become a valid count.

  Args:
    text: the text after the colon.
    what: names the flag and form in the error, e.g. ``"--lam=grid:x: grid:N"``.

  Raises:
    InputError: the text is not a whole number written in ASCII digits.
  """
  if not re.fullmatch(r"[0-9]+", str(text).strip()):
    raise errors.InputError(f"{what} needs a whole number {what[-1]} written in digits 0-9, "
                            f"got {str(text).strip()!r}")
  return int(text)
