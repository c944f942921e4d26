"""λ-grid evaluation of a data split: measure, reconstruct, score, aggregate, pick.

`evaluate_grid` measures every slice of a split with its own key
(`slice_keys`), runs the compiled grid programs of `hyperrecon_jax.grid` over
every λ of a grid, and aggregates the per-slice metrics into one result
(`hyperrecon_jax.results`); `diverse_pair` picks the paper's Fig. 7 pair.
"""

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
import math
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import grid as grid_lib
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import results
from hyperrecon_jax import segmentation

BATCH_KEYS = ("image", "volume", "slice", "valid")


def _volume_number(volume) -> int:
  """A volume id as a uint32: an int as is (mod 2^32), a string by CRC-32."""
  if isinstance(volume, (str, bytes, np.str_, np.bytes_)):
    data = volume.encode() if isinstance(volume, (str, np.str_)) else bytes(volume)
    return zlib.crc32(data)
  return int(volume) & 0xFFFFFFFF


def slice_keys(key, volumes, slices):
  """The measurement keys of slices, ``fold_in(fold_in(key, volume), slice)``.

  A slice's noise depends only on the key and its own (volume, slice) id,
  not on its batch, its row or the batch size, so the same slice gets the
  same measurement in a grid, a figure, or another model's evaluation.

  Args:
    key: the evaluation's PRNG key.
    volumes: (B,) volume ids (ints, or strings hashed by CRC-32).
    slices: (B,) slice indices.

  Returns:
    (B,) PRNG keys.

  Raises:
    InputError: ``volumes`` and ``slices`` that are not two (B,) vectors of
      one length.
  """
  if np.ndim(volumes) != 1 or np.shape(volumes) != np.shape(slices):
    raise errors.InputError(f"volumes and slices must be (B,) vectors of one length, one id "
                            f"each per slice, got shapes {np.shape(volumes)} and "
                            f"{np.shape(slices)}.")
  v = np.array([_volume_number(x) for x in np.asarray(volumes).tolist()], np.uint32)
  s = np.asarray(slices, np.int64).astype(np.uint32)  # padding's -1 wraps: unused
  return _fold_ids(key, v, s)


@jax.jit
def _fold_ids(key, volumes, slices):
  fold = jax.random.fold_in
  return jax.lax.map(lambda vs: fold(fold(key, vs[0]), vs[1]), (volumes, slices))


@jax.jit
def measure(operator, images, keys):
  """Measurements of (B, H, W) images, each slice with its own key.

  Args:
    operator: a `hyperrecon_jax.physics` operator.
    images: (B, H, W) ground truth.
    keys: (B,) keys from `slice_keys`.

  Returns:
    ``operator.measure`` of each image, stacked along a leading axis.

  Raises:
    InputError: ``images`` that are not (B, H, W), or keys that are not one
      per image (checked at trace time: shapes are static).
  """
  if np.ndim(images) != 3:
    raise errors.InputError(f"images must have shape (B, H, W), got shape {np.shape(images)}.")
  if np.ndim(keys) < 1 or np.shape(keys)[0] != np.shape(images)[0]:
    raise errors.InputError(f"keys must hold one key per image, (B,) from slice_keys: images "
                            f"have shape {np.shape(images)}, keys shape {np.shape(keys)}.")
  one = lambda xk: operator.measure(xk[0][None], xk[1])[0]
  # lax.map, not vmap: the 'rbg' key implementations draw other numbers
  # under vmap, which would make a slice's noise depend on its row.
  return jax.lax.map(one, (images, keys))


@jax.jit
def measure_slices(operator, images, keys):
  """Network inputs of (B, H, W) images, each slice measured with its own key.

  Takes `measure`'s arguments and returns (B, H, W, 2) ``operator.zero_filled(y)``
  of its ``y``.
  """
  return operator.zero_filled(measure(operator, images, keys))


def _check_batch(batch, index):
  if not isinstance(batch, Mapping):
    raise errors.InputError(
        f"batch {index} must be a dict with keys {BATCH_KEYS}, got {type(batch)}.")
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise errors.InputError(f"batch {index} lacks key(s) {missing}; it needs {BATCH_KEYS}.")
  image = np.asarray(batch["image"], np.float32)
  if image.ndim != 3:
    raise errors.InputError(
        f"batch {index}: image must have shape (B, H, W), got shape {image.shape}.")
  b = image.shape[0]
  for k in ("volume", "slice", "valid"):
    if np.shape(batch[k]) != (b,):
      raise errors.InputError(f"batch {index}: {k} must have shape ({b},), got shape "
                              f"{np.shape(batch[k])}.")
  return image, np.asarray(batch["volume"]), np.asarray(batch["slice"]), np.asarray(
      batch["valid"], bool)


def _check_image_size(operator, image, index):
  """Images of the size the operator measures (CS-MRI's mask has one), named as the batch's.

  The slices are measured one at a time, where the operator's own message
  would name an ``x`` of one slice.
  """
  mask = getattr(operator, "mask", None)
  if mask is not None and image.shape[1:] != tuple(mask.shape):
    raise errors.InputError(
        f"batch {index}: image has slices of {image.shape[1]}×{image.shape[2]} pixels (shape "
        f"{image.shape}), but the operator measures {mask.shape[0]}×{mask.shape[1]} images (its "
        "mask's shape): give batches of that size.")


def _lambda_blocks(num_lambdas: int, batch: int, chunk: int):
  """Index blocks of the λ grid, all of one length, so one call stays short.

  A call scores ``batch × block`` pairs in about 32 model calls of ``chunk``
  (one call per batch for the usual grids; a 200×200 grid is cut into many
  calls so that progress can be shown and Ctrl-C is honoured between them).
  Blocks are balanced (`grid.balanced`: 100 λ in blocks of at most 32 are
  4 of 25, not 4 of 32 that compute 128); when they cannot divide the grid,
  the last one wraps around to the first λ and its repeats are dropped.
  """
  block = grid_lib.balanced(min(num_lambdas, max(1, (32 * chunk) // max(batch, 1))),
                             num_lambdas)
  for start in range(0, num_lambdas, block):
    yield np.arange(start, start + block) % num_lambdas, min(block, num_lambdas - start)


def evaluate_grid(model, variables, operator, batches: Iterable[Mapping[str, Any]],
                  lam_grid, *, key, chunk: int | None = None, per_slice: bool = True,
                  progress: Callable[[int], None] | None = None, segmenter=None,
                  terms=(), order: str = "auto"):
  """Evaluates a model on every slice of ``batches`` at every λ of a grid.

  Each slice is measured with its own key (`slice_keys`: from ``key`` and its
  volume and slice ids), so a run is reproducible and the noise of a slice
  does not depend on what else is evaluated, nor on the batch size; the
  network input is ``operator.zero_filled(y)``. Keep batches one shape (pad
  the last one with ``valid=False`` rows) to compile once.

  Args:
    model: a model of `hyperrecon_jax.models` (see `grid.reconstruct_grid`).
    variables: the model variables.
    operator: a `hyperrecon_jax.physics` operator.
    batches: iterable of dicts with ``image`` (B, H, W) float32 in [0, 1],
      ``volume`` (B,) volume ids (ints or strings), ``slice`` (B,) slice
      indices and ``valid`` (B,) bool.
    lam_grid: (G, n) hyperparameters in [0, 1] (e.g. ``hparams.grid``); the
      model gets ``hparams.coefficients(lam_grid)``.
    key: a PRNG key for the measurements.
    chunk: model batch size of one call, see `grid.reconstruct_grid`.
    per_slice: keep the (S, G) per-slice arrays in the result (they dominate
      its size for big test sets and 2-D grids).
    progress: called with the number of (slice, λ) pairs just scored (the
      batch's valid slices times its λ; padding rows are not work), e.g. to
      advance a progress bar whose total is the split's slices times the λ.
    segmenter: a `segmentation.Trained`: the batches must then carry their
      true ``label`` (B, H, W), and every reconstruction (and the zero-filled
      input) is also scored by ``dice``, the Dice of its segmentation.
    terms: loss-term names of the reconstruction (`grid.check_image_terms`,
      e.g. ``('dc', 'tv', 'wavelet')``), scored on every (slice, λ) with the
      slice's own measurement: the objectives of a Pareto analysis.
    order: the order of the (slice, λ) pairs in the model's calls,
      `grid.ORDERS` ('auto': `grid.resolve_order`'s choice).

  Returns:
    The result of `results.summarize` (JSON types only; its schema is
    there); with a segmenter also ``ground_truth_dice``: ``{'mean', 'std'}``
    of the segmenter's Dice on the ground-truth images, the best any
    reconstruction can expect; with ``terms``, ``loss_terms``:
    `summarize_terms` of their per-slice values.
  """
  if key is None:
    raise errors.InputError("evaluate_grid measures each slice with noise from key: give "
                            "key=jax.random.key(seed), got key=None.")
  lam = np.asarray(lam_grid, np.float32)
  if lam.ndim != 2 or lam.shape[0] < 1:
    raise errors.InputError(f"lam_grid must have shape (G, num_lambdas), got shape {lam.shape}.")
  num_coeffs = getattr(model, "num_coeffs", None)  # a HyperUnet's K
  if num_coeffs is not None and lam.shape[1] != num_coeffs - 1:
    # Coefficients given as λ: named as such, not as coefficients of another shape.
    raise errors.InputError(
        f"lam_grid must have {num_coeffs - 1} column(s), the λ of a model of {num_coeffs} loss "
        f"terms (coefficients are hparams.coefficients(lam)), got shape {lam.shape}.")
  coeffs = np.asarray(hparams.coefficients(lam))
  terms = grid_lib.check_image_terms(terms)
  names = (results.METRICS + (("dice",) if segmenter is not None else ())
           + tuple(f"term_{n}" for n in terms))
  grid_rows, zf_rows, volumes, slices = {m: [] for m in names}, {m: [] for m in names}, [], []
  truth_dice = []
  for i, batch in enumerate(batches):
    image, volume, slice_, valid = _check_batch(batch, i)
    _check_image_size(operator, image, i)
    labels = _labels(batch, i, segmenter, image, valid, truth_dice)
    keys = slice_keys(key, volume, slice_)
    if terms:  # the terms need the measurement itself
      y = measure(operator, jnp.asarray(image), keys)
      zf = _zero_filled(operator, y)
    else:
      y, zf = None, measure_slices(operator, jnp.asarray(image), keys)
    blocks = {m: [] for m in names}
    for index, used in _lambda_blocks(len(coeffs), image.shape[0], grid_lib.check_chunk(chunk)):
      out = grid_lib.grid_metrics(model, variables, zf, image, coeffs[index], valid=valid,
                                  chunk=chunk, segmenter=segmenter, labels=labels, terms=terms,
                                  operator=operator, measurement=y, order=order)
      for m, v in out.items():
        blocks[m].append(v[:, :used])
      if progress is not None:
        progress(int(np.count_nonzero(valid)) * used)
    for m, v in blocks.items():
      grid_rows[m].append(np.concatenate(v, axis=1))
    for m, v in grid_lib.zero_filled_metrics(zf, image, valid=valid, segmenter=segmenter,
                                             labels=labels).items():
      zf_rows[m].append(v)
    for n in terms:  # the terms have no zero-filled value
      zf_rows[f"term_{n}"].append(np.zeros(int(valid.sum())))
    volumes += list(volume[valid])
    slices += list(slice_[valid])
  return _result(grid_rows, zf_rows, lam, volumes, slices, terms, truth_dice, per_slice)


def _labels(batch, i, segmenter, image, valid, truth_dice):
  """A batch's true labels with a segmenter (appending its Dice on the ground truth), else None."""
  if segmenter is None:
    return None
  if "label" not in batch:
    raise errors.InputError(f"batch {i} has no 'label': scoring Dice needs a dataset "
                            "with labels.")
  labels = np.asarray(batch["label"])
  metrics.check_labels(labels, segmenter.num_classes, f"batch {i}'s labels")  # before any cast
  truth_dice.append(np.asarray(segmentation.foreground_dice(
      segmentation.labels(segmenter, image), jnp.asarray(labels, jnp.int32),
      segmenter.num_classes))[valid])
  return labels


def _result(grid_rows, zf_rows, lam, volumes, slices, terms, truth_dice, per_slice):
  """`evaluate_grid`'s result from the per-batch rows of every metric."""
  if not volumes:
    raise errors.InputError("batches held no valid slice to evaluate.")
  scored = {m: np.concatenate(v) for m, v in grid_rows.items()}
  term_rows = {n: scored.pop(f"term_{n}") for n in terms}
  result = results.summarize(scored, {m: np.concatenate(v) for m, v in zf_rows.items()
                                      if not m.startswith("term_")},
                             lam, volumes, slices, per_slice=per_slice)
  if terms:
    result["loss_terms"] = summarize_terms(term_rows, per_slice=per_slice)
  if truth_dice:
    truth = np.concatenate(truth_dice).astype(np.float64)
    result["ground_truth_dice"] = {"mean": float(truth.mean()), "std": float(truth.std())}
  return result


@jax.jit
def _zero_filled(operator, y):
  return operator.zero_filled(y)


def summarize_terms(per_slice_terms, *, per_slice: bool = True) -> dict:
  """Statistics over slices of loss-term values, one entry per λ.

  Args:
    per_slice_terms: ``{name: (S, G)}`` values of each term.
    per_slice: keep the (S, G) arrays.

  Returns:
    ``{'names': [K'], 'mean': {name: [G]}, 'std': {name: [G]}, 'num_scored':
    {name: n}}`` (and ``'per_slice': {name: S × G}``); a slice with a value
    that is not finite at some λ is left out of that term's statistics.
  """
  out = {"names": list(per_slice_terms), "mean": {}, "std": {}, "num_scored": {}}
  for n, v in per_slice_terms.items():
    v = np.asarray(v, np.float64)
    keep = np.isfinite(v).all(1)
    out["num_scored"][n] = int(keep.sum())
    nan = np.full(v.shape[1], np.nan)
    out["mean"][n] = results.floats(v[keep].mean(0) if keep.any() else nan)
    out["std"][n] = results.floats(v[keep].std(0) if keep.any() else nan)
  if per_slice:
    out["per_slice"] = {n: results.floats(v) for n, v in per_slice_terms.items()}
  return out


def diverse_pair(recons, psnrs, *, percentile: float = 90):
  """Fig. 7: the two most different reconstructions among the high-quality ones.

  Keeps the reconstructions whose PSNR is at least the ``percentile``-th
  percentile of ``psnrs`` (NaN excluded) and returns the kept pair farthest
  apart in ℓ2. The maximum always passes, so at least one is kept; when only
  one is (e.g. ``percentile=100``), there is no pair and the best index is
  returned twice with distance 0.0 rather than raising, so a sweep over slices
  does not stop on a degenerate grid.

  Args:
    recons: (G, ...) reconstructions over a λ grid (any trailing shape).
    psnrs: (G,) their PSNR.
    percentile: threshold percentile in [0, 100].

  Returns:
    ``(i, j, distance)`` with grid indices ``i < j`` (or ``i == j``) and the
    ℓ2 distance ``||recons[i] - recons[j]||``.
  """
  recons, psnrs = np.asarray(recons), np.asarray(psnrs, np.float64)
  if recons.ndim < 2 or recons.shape[0] < 1:
    raise errors.InputError(f"recons must have shape (G, ...) with G >= 1 and at least one image "
                            f"axis, got shape {recons.shape}.")
  if psnrs.shape != (recons.shape[0],):
    raise errors.InputError(f"psnrs must have shape ({recons.shape[0]},) to match recons, got "
                            f"shape {psnrs.shape}.")
  if not 0 <= percentile <= 100:
    raise errors.InputError(f"percentile must be in [0, 100], got {percentile}.")
  if np.all(np.isnan(psnrs)):
    raise errors.InputError("psnrs are all NaN.")
  with np.errstate(invalid="ignore"):
    threshold = np.nanpercentile(psnrs, percentile)
  if np.isnan(threshold):  # interpolated between two infinite PSNRs (exact recons)
    threshold = np.nanpercentile(psnrs, percentile, method="lower")
  kept = np.flatnonzero(psnrs >= threshold)
  if kept.size < 2:
    best = int(np.nanargmax(psnrs))
    return best, best, 0.0
  x = recons[kept].reshape(kept.size, -1).astype(np.float64)
  # Centred, since distances do not change: the Gram form below would lose the
  # differences of images that share a large common part to rounding.
  x -= x.mean(axis=0)
  sq = np.einsum("ij,ij->i", x, x)
  d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T  # Gram form: one matrix product
  rows, cols = np.triu_indices(kept.size, 1)
  k = int(np.argmax(d2[rows, cols]))
  a, b = rows[k], cols[k]
  i, j = sorted((int(kept[a]), int(kept[b])))
  # Recompute the winner's distance directly: the Gram form loses precision.
  return i, j, float(math.sqrt(np.sum((x[a] - x[b]) ** 2)))
