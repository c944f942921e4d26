"""The λ set the explorer's curves score: a grid for K ≤ 3 terms, a design on the simplex beyond.

A model of K loss terms has K − 1 hyperparameters λ. For K ≤ 3 the set is a
regular grid (a line of ``grid`` points, or grid² points); for K ≥ 4 it is a
low-discrepancy design of ``design`` points on the simplex
(`hparams.simplex_design`, vertices first), where a grid would need
grid^(K−1) points.
"""

import dataclasses

import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax.errors import InputError

# Points of the simplex design for K ≥ 4 terms. Its cost is one model pass per
# point and slice, a seventh of a K = 3 grid of 21 points a side (441, the
# shipped models' eval.grid): dense enough for the best points and the
# gallery to differ visibly, cheap enough to recompute per slice.
DESIGN_SIZE = 64


# The most memory one slice's reconstructions at every point may take: the
# explorer holds them all (the range map, the gallery, the cache). It takes
# about 2.5 times this at its peak (the slice cached while the next is
# computed, and the gallery's copy): 0.61 GiB above the idle process for
# 0.244 GiB a slice at 16,000 λ of the 64×64 model.
MAX_SLICE_BYTES = 2 * 2**30


def check_size(points: int, image_size: int, what: str) -> None:
  """Refuses a λ set whose reconstructions of one slice exceed `MAX_SLICE_BYTES`.

  Raises:
    InputError: naming the points, their memory and the most that fit.
  """
  per_point = 4 * int(image_size) ** 2
  if points * per_point > MAX_SLICE_BYTES:
    raise InputError(
        f"{what} gives {points:,} λ: one slice's reconstructions at every one would take "
        f"{points * per_point / 2**30:,.1f} GiB at {image_size}×{image_size}, more than the "
        f"explorer's {MAX_SLICE_BYTES / 2**30:g} GiB ({MAX_SLICE_BYTES // per_point:,} λ)")


@dataclasses.dataclass(frozen=True)
class LambdaSet:
  """The points a slice is scored at, in both forms.

  Attributes:
    grid: λ values per hyperparameter (K ≤ 3), else None.
    design: points of the design on the simplex (K ≥ 4), else None.
    lambdas: (G, K−1) the points as λ.
    coeffs: (G, K) the points as loss coefficients.
  """

  grid: int | None
  design: int | None
  lambdas: np.ndarray
  coeffs: np.ndarray


def lambda_set(config, num_coeffs: int, *, name: str, grid=None, design=None) -> LambdaSet:
  """The λ set of a model of ``num_coeffs`` loss terms.

  Args:
    config: the model's experiment config.
    num_coeffs: K, the number of loss terms.
    name: the model's name, for the messages.
    grid: λ values per hyperparameter, for K ≤ 3 (default: the config's
      ``eval.grid``).
    design: points on the simplex, for K ≥ 4 (default `DESIGN_SIZE`).

  Raises:
    InputError: ``design`` for K ≤ 3 or ``grid`` for K ≥ 4 terms (refused,
      not ignored).
  """
  if num_coeffs <= 3:
    if design is not None:
      raise InputError(f"a design on the simplex is for models of 4 or more loss terms; "
                       f"{name} has {num_coeffs} and is scored on a λ grid (--grid, grid)")
    size = int(grid or config.eval.grid)
    check_size(size ** (num_coeffs - 1), config.data.image_size, f"a grid of {size:,} a side")
    lambdas = hparams.grid(size, num_coeffs - 1)
    return LambdaSet(size, None, lambdas, np.asarray(hparams.coefficients(lambdas)))
  if grid is not None:
    raise InputError(f"a λ grid serves models of 2 or 3 loss terms; {name} has "
                     f"{num_coeffs}: give the size of a design on the simplex instead "
                     "(--samples, design)")
  size = int(design or DESIGN_SIZE)
  if size < num_coeffs:
    raise InputError(f"a design of {size:,} points on the simplex of {name}'s {num_coeffs} "
                     f"loss terms: it needs at least {num_coeffs}, its vertices (--samples, "
                     "design)")
  check_size(size, config.data.image_size, f"a design of {size:,} points")
  coeffs = hparams.simplex_design(size, num_coeffs)
  return LambdaSet(None, size, np.asarray(hparams.lambdas_from_coefficients(coeffs)), coeffs)
