"""The values read from a file, refused unless real, finite and within float32.

The model computes in float32: an image read from a file (`real_float32`) or
counted part by part (`ValueCounts`, `check_values`) is refused when its
values are not real numbers, not finite, beyond float32's range, or all
below its smallest normal number, rather than repaired.
"""

import dataclasses

import numpy as np

from hyperrecon_jax.data import data_errors


def check_finite(values: np.ndarray, path: str, what: str = "voxels") -> None:
  """Rejects an input array with NaN or infinite values.

  Such values mean broken data (a failed reconstruction or conversion), and
  no repair is right: zeroing NaN hides the damage, and an infinity saturates
  its slices white once the volume is normalized.

  Args:
    values: the array as read from the file (real or complex).
    path: the file, named in the error.
    what: what the values are, e.g. "voxels" or "values of 'kspace'".

  Raises:
    DataError: naming the file and the number of non-finite values.
  """
  values = np.asarray(values)
  if values.dtype.kind not in "fc":  # Integers are always finite.
    return
  _check_all_finite(values.size - int(np.count_nonzero(np.isfinite(values))), values.size,
                    path, what)


def _check_all_finite(bad: int, size: int, path: str, what: str) -> None:
  if bad:
    raise data_errors.DataError(f"{path}: {bad:,} of {size:,} {what} are not finite (NaN or ±Inf); "
                                "fix or remove the file.")


@dataclasses.dataclass(frozen=True)
class ValueCounts:
  """What `real_float32` checks of real values, countable part by part (`add`).

  Attributes:
    dtype: the values' type.
    size: how many values.
    not_finite: how many are NaN or ±Inf.
    beyond_float32: how many finite ones exceed float32's largest magnitude.
    peak: the largest magnitude of the finite values (0 for integers, whose
      range float32 covers).
  """
  dtype: np.dtype
  size: int = 0
  not_finite: int = 0
  beyond_float32: int = 0
  peak: float = 0.0

  def add(self, other: "ValueCounts") -> "ValueCounts":
    """The counts of both parts together, in the type that holds both."""
    return ValueCounts(np.result_type(self.dtype, other.dtype), self.size + other.size,
                       self.not_finite + other.not_finite,
                       self.beyond_float32 + other.beyond_float32, max(self.peak, other.peak))


def value_counts(values: np.ndarray) -> ValueCounts:
  """The `ValueCounts` of a real array: reductions only, no copy of its size."""
  values = np.asarray(values)
  if values.dtype.kind != "f" or values.size == 0:
    return ValueCounts(values.dtype, values.size)
  finite = np.isfinite(values)
  not_finite = values.size - int(np.count_nonzero(finite))
  if not_finite:
    # The error names the count: the other counts are not read.
    return ValueCounts(values.dtype, values.size, not_finite)
  peak = max(float(values.max()), -float(values.min()))
  limit = float(np.finfo(np.float32).max)
  beyond = (int(np.count_nonzero(np.abs(values) > limit))
            if values.dtype.itemsize > 4 and peak > limit else 0)
  return ValueCounts(values.dtype, values.size, 0, beyond, peak)


def check_real(dtype, path: str, what: str = "voxels") -> None:
  """Rejects values that are not real numbers (complex, text) before they are read."""
  dtype = np.dtype(dtype)
  if dtype.kind not in "biuf":
    raise data_errors.DataError(f"{path}: its {what} are of type {dtype}; expected real numbers "
                                "(a magnitude image)")


def check_values(counts: ValueCounts, path: str, what: str = "voxels") -> None:
  """Rejects values that float32, in which the model computes, would not keep.

  Raises:
    DataError: values that are not finite, beyond float32's range, or all
      below its smallest normal number (float32 would keep few or no digits
      of them: the image would be a few grey levels, or nothing at all).
  """
  _check_all_finite(counts.not_finite, counts.size, path, what)
  limit = float(np.finfo(np.float32).max)
  if counts.beyond_float32:
    raise data_errors.DataError(
        f"{path}: {counts.beyond_float32:,} of {counts.size:,} {what} are finite in its "
        f"{counts.dtype} but beyond float32's range (largest magnitude {counts.peak:.3g} > "
        f"{limit:.3g}), in which the model computes; rescale the volume")
  smallest = float(np.finfo(np.float32).smallest_normal)
  if 0 < counts.peak < smallest:
    raise data_errors.DataError(
        f"{path}: the largest magnitude of its {what}, {counts.peak:.3g}, is below float32's "
        f"smallest normal number ({smallest:.3g}), in which the model computes; rescale "
        "the volume")


def real_float32(raw: np.ndarray, path: str, what: str = "voxels") -> np.ndarray:
  """An image read from a file as float32, refusing values that are not real or do not fit.

  Args:
    raw: the values as read.
    path: the file, named in the errors.
    what: what the values are, e.g. "voxels" or "values of 'reconstruction_esc'".

  Raises:
    DataError: values that are not real numbers (complex, text), not finite,
      beyond float32's range, or all below its smallest normal number
      (`check_real`, `check_values`).
  """
  check_real(raw.dtype, path, what)
  check_values(value_counts(raw), path, what)
  return raw.astype(np.float32)
