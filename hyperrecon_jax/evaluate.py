"""λ-grid evaluation: reconstruct every slice at every λ, score, aggregate, pick.

One trained HyperRecon model reconstructs for any λ, so evaluation sweeps a
grid of G coefficient vectors over every test slice. The (slice, λ) pairs are
flattened slice-major (pair ``f`` is slice ``f // G`` at λ index ``f % G``) and
cut into ``ceil(S·G / chunk)`` chunks of equal size (at most ``chunk``) of
consecutive pairs; **one chunk is one model call** of that batch size, each
row with its own slice and coefficients. The last chunk is padded with
repeats of the first pairs, so the model is traced and compiled for exactly
one batch shape, and the padding is dropped afterwards. The chunks run under
``jax.lax.map`` inside one jitted program, so peak memory is that of a
single model call of batch ``chunk`` (plus the outputs), whatever the grid
size. `grid_metrics` and `evaluate_grid` score each
chunk inside that program and never hold more than one chunk of
reconstructions; `reconstruct_grid` returns all (S, G, H, W) of them.

``apply_fn(variables, zf, coeffs)`` gets (B, K) coefficients and must give
every batch row its own (``HyperUnet.apply`` does), and should be a stable
object such as ``net.apply``: it is a
static argument of the compiled program, so a fresh lambda per call
recompiles. Metrics follow `hyperrecon_jax.metrics` (per slice, peak 1).
"""

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
import functools
import math
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import metrics as metrics_lib
from hyperrecon_jax import segmentation

# Re-exported: part of this module's API.
from hyperrecon_jax.results import FORMAT  # noqa: F401
from hyperrecon_jax.results import LOWER_IS_BETTER  # noqa: F401
from hyperrecon_jax.results import METRICS
from hyperrecon_jax.results import Best  # noqa: F401
from hyperrecon_jax.results import best_lambda  # noqa: F401
from hyperrecon_jax.results import from_json  # noqa: F401
from hyperrecon_jax.results import metric_array  # noqa: F401
from hyperrecon_jax.results import summarize
from hyperrecon_jax.results import to_json  # noqa: F401

# Model batch size of one call (``chunk=None``). On GPU/TPU, 32 (the paper's
# training batch): at 256×256 a HyperRecon forward of that batch needs a few
# GiB. On CPU the 'loop' strategy unrolls the batch at trace time, so compile
# time grows linearly with the chunk (tiny Unet: ~40 s at 32, ~160 s at 100)
# while throughput does not depend on it; 8 compiles fast.
DEFAULT_CHUNK_CPU = 8
DEFAULT_CHUNK_ACCELERATOR = 32
BATCH_KEYS = ("image", "volume", "slice", "valid")


def default_chunk() -> int:
  """The default chunk on the default backend: 8 on CPU, 32 on GPU/TPU."""
  if jax.default_backend() == "cpu":
    return DEFAULT_CHUNK_CPU
  return DEFAULT_CHUNK_ACCELERATOR


def _check_chunk(chunk):
  if chunk is None:
    return default_chunk()
  if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
    raise ValueError(f"chunk must be an int >= 1, got {chunk!r}.")
  return int(chunk)


def _balanced(chunk, n):
  """The smallest chunk ≤ ``chunk`` that covers ``n`` pairs in as few calls.

  E.g. 100 λ with chunk 32: 4 calls of 25 rather than 4 of 32 with 28 padded.
  """
  calls = -(-n // chunk)
  return -(-n // calls)


def _check_zf(zf, name="zf", shape=None):
  shape = np.shape(zf) if shape is None else shape
  if len(shape) != 4 or shape[-1] != 2:
    raise ValueError(f"{name} must have shape (S, H, W, 2), got shape {shape}.")


def _check_coeffs(coeffs):
  if np.ndim(coeffs) != 2 or np.shape(coeffs)[0] < 1 or np.shape(coeffs)[1] < 2:
    raise ValueError(f"coeffs must have shape (G, K), G >= 1, K >= 2, got {np.shape(coeffs)}.")


def _check_scored(zf, target, valid):
  """Checks zf, target and valid of a scored batch; returns the (S,) keep mask."""
  _check_zf(zf)
  s = zf.shape[0]
  if np.shape(target) != tuple(zf.shape[:3]):
    raise ValueError(f"target must have shape {tuple(zf.shape[:3])} (S, H, W) to match zf, "
                     f"got shape {np.shape(target)}.")
  if valid is not None and np.shape(valid) != (s,):
    raise ValueError(f"valid must have shape ({s},), got shape {np.shape(valid)}.")
  return np.ones(s, bool) if valid is None else np.asarray(valid, bool)


def magnitude(zf):
  """|zero-filled image| over the (real, imaginary) channels: (..., 2) → (...)."""
  return jnp.sqrt(jnp.sum(jnp.square(zf.astype(jnp.float32)), axis=-1))


def _slice_metrics(recon, target, zf_mag, segment=None, labels=None):
  """Every metric of METRICS for a (B, H, W) batch: dict of (B,).

  With ``segment`` (a function of images → labels) and the true ``labels``,
  also ``dice``: `segmentation.foreground_dice` of the segmented ``recon``.
  """
  out = {
      "psnr": metrics_lib.psnr(recon, target),
      "ssim": metrics_lib.ssim(recon, target),
      "mae": metrics_lib.mae(recon, target),
      "nmse": metrics_lib.nmse(recon, target),
      "hfen": metrics_lib.hfen(recon, target),
      "rpsnr": metrics_lib.rpsnr(recon, zf_mag, target),
  }
  if segment is not None:
    out["dice"] = segment(recon, labels)
  return out


def _segment_fn(segmenter, seg_variables):
  """images, true labels → (B,) Dice, or None without a segmenter."""
  if segmenter is None:
    return None
  apply_fn, num_classes = segmenter
  def dice(images, labels):
    pred = jnp.argmax(apply_fn(seg_variables, images), axis=-1)
    return segmentation.foreground_dice(pred, labels, num_classes)
  return dice


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk", "score", "segmenter"))
def _grid_program(variables, zf, coeffs, target, seg_variables=None, labels=None, *,
                  apply_fn, chunk, score, segmenter=None):
  """All S×G (slice, λ) pairs in chunks of ``chunk``: recons or metrics (S, G, ...).

  ``segmenter`` is ``(apply_fn, num_classes)`` of a `segmentation.Trained`
  (static), with its ``seg_variables`` and the slices' true ``labels``.
  """
  s_count, g_count = zf.shape[0], coeffs.shape[0]
  n = s_count * g_count
  num_chunks = -(-n // chunk)
  # Padding pairs repeat the first ones, so every chunk has the same shape.
  flat = jnp.arange(num_chunks * chunk) % n
  index = (flat // g_count).reshape(num_chunks, chunk), (flat % g_count).reshape(num_chunks, chunk)
  zf_mag = magnitude(zf) if score else None
  segment = _segment_fn(segmenter, seg_variables)

  def one_chunk(idx):
    s, g = idx
    recon = apply_fn(variables, zf[s], coeffs[g])
    if not score:
      return recon
    return _slice_metrics(recon, target[s], zf_mag[s], segment,
                          None if labels is None else labels[s])

  out = jax.lax.map(one_chunk, index)
  return jax.tree_util.tree_map(
      lambda x: x.reshape((num_chunks * chunk,) + x.shape[2:])[:n].reshape(
          (s_count, g_count) + x.shape[2:]), out)


def reconstruct_grid(apply_fn: Callable, variables, zf, coeffs, *, chunk: int | None = None):
  """Reconstructs slices at every coefficient vector of a grid.

  Args:
    apply_fn: ``apply_fn(variables, zf_batch, coeffs_batch) -> (chunk, H, W)``,
      e.g. ``net.apply`` of a ``HyperUnet``.
    variables: the model variables.
    zf: (S, H, W, 2) zero-filled inputs, or one slice (H, W, 2).
    coeffs: (G, K) loss-coefficient vectors (``hparams.coefficients(lam_grid)``).
    chunk: largest model batch of one call, counted in (slice, λ) pairs;
      memory grows linearly with it. The calls needed, ceil(S·G / chunk),
      share the pairs evenly, so at most one pair per call is padding.
      None: `default_chunk()`.

  Returns:
    (S, G, H, W) float32 reconstructions; (G, H, W) for a single (H, W, 2) slice.
  """
  chunk = _check_chunk(chunk)
  single = np.ndim(zf) == 3
  _check_zf(zf, "zf (or one slice, (H, W, 2))", (1,) * single + np.shape(zf))
  _check_coeffs(coeffs)
  zf, coeffs = jnp.asarray(zf, jnp.float32), jnp.asarray(coeffs, jnp.float32)
  zf = zf[None] if single else zf
  n = zf.shape[0] * coeffs.shape[0]
  out = _grid_program(variables, zf, coeffs, None, apply_fn=apply_fn,
                      chunk=_balanced(chunk, n), score=False)
  return out[0] if single else out


def grid_metrics(apply_fn: Callable, variables, zf, target, coeffs, *, valid=None,
                 chunk: int | None = None, segmenter=None, labels=None):
  """Per-slice, per-λ metrics of a batch, without keeping the reconstructions.

  Args:
    apply_fn: see `reconstruct_grid`.
    variables: the model variables.
    zf: (S, H, W, 2) zero-filled inputs.
    target: (S, H, W) ground truth.
    coeffs: (G, K) loss-coefficient vectors.
    valid: optional (S,) bool; False marks padding rows, which are still run
      (so every batch has one shape) but dropped from the output.
    chunk: model batch size of one call, see `reconstruct_grid`.
    segmenter: a `segmentation.Trained`; adds ``dice``, the Dice of its labels
      of each reconstruction against ``labels``.
    labels: (S, H, W) true integer labels (with ``segmenter``).

  Returns:
    ``{metric: (S_valid, G) float64 array}`` for every metric of `METRICS`
    (rPSNR against the magnitude of ``zf``), and ``dice`` with a segmenter,
    rows in input order.
  """
  chunk = _check_chunk(chunk)
  keep = _check_scored(zf, target, valid)
  _check_coeffs(coeffs)
  static, seg_variables, labels = _check_segmenter(segmenter, labels, np.shape(target))
  n = zf.shape[0] * coeffs.shape[0]
  out = _grid_program(variables, jnp.asarray(zf, jnp.float32), jnp.asarray(coeffs, jnp.float32),
                      jnp.asarray(target, jnp.float32), seg_variables, labels,
                      apply_fn=apply_fn, chunk=_balanced(chunk, n), score=True,
                      segmenter=static)
  return {k: np.asarray(v, np.float64)[keep] for k, v in out.items()}


def _check_segmenter(segmenter, labels, shape):
  """(static part, variables, labels) for the programs; None ×3 without one."""
  if segmenter is None:
    return None, None, None
  if labels is None or np.shape(labels) != tuple(shape):
    raise ValueError(f"scoring Dice needs the true labels of every slice, shape "
                     f"{tuple(shape)}, got {None if labels is None else np.shape(labels)}.")
  return ((segmenter.apply_fn, segmenter.num_classes), segmenter.variables,
          jnp.asarray(labels, jnp.int32))


@functools.partial(jax.jit, static_argnames="segmenter")
def _baseline_program(zf, target, seg_variables=None, labels=None, *, segmenter=None):
  zf_mag = magnitude(zf)
  return _slice_metrics(zf_mag, target, zf_mag, _segment_fn(segmenter, seg_variables),
                        labels)


def baseline_metrics(zf, target, *, valid=None, segmenter=None, labels=None):
  """Metrics of the zero-filled magnitude itself (rPSNR is 0 by definition).

  Args:
    zf: (S, H, W, 2) zero-filled inputs.
    target: (S, H, W) ground truth.
    valid: optional (S,) bool mask of real rows.
    segmenter: see `grid_metrics`.
    labels: see `grid_metrics`.

  Returns:
    ``{metric: (S_valid,) float64 array}``.
  """
  keep = _check_scored(zf, target, valid)
  static, seg_variables, labels = _check_segmenter(segmenter, labels, np.shape(target))
  out = _baseline_program(jnp.asarray(zf, jnp.float32), jnp.asarray(target, jnp.float32),
                          seg_variables, labels, segmenter=static)
  return {k: np.asarray(v, np.float64)[keep] for k, v in out.items()}


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
  """
  v = np.array([_volume_number(x) for x in np.asarray(volumes).tolist()], np.uint32)
  s = np.asarray(slices, np.int64).astype(np.uint32)  # padding's -1 wraps: unused
  return _fold_ids(key, v, s)


@jax.jit
def _fold_ids(key, volumes, slices):
  fold = jax.random.fold_in
  return jax.lax.map(lambda vs: fold(fold(key, vs[0]), vs[1]), (volumes, slices))


@jax.jit
def measure_slices(operator, images, keys):
  """Network inputs of (B, H, W) images, each slice measured with its own key.

  Args:
    operator: a `hyperrecon_jax.physics` operator.
    images: (B, H, W) ground truth.
    keys: (B,) keys from `slice_keys`.

  Returns:
    (B, H, W, 2) ``operator.zero_filled(operator.measure(image, key))``.
  """
  one = lambda xk: operator.zero_filled(operator.measure(xk[0][None], xk[1]))[0]
  # lax.map, not vmap: the 'rbg' key implementations draw other numbers
  # under vmap, which would make a slice's noise depend on its row.
  return jax.lax.map(one, (images, keys))


def _check_batch(batch, index):
  if not isinstance(batch, Mapping):
    raise ValueError(f"batch {index} must be a dict with keys {BATCH_KEYS}, got {type(batch)}.")
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch {index} lacks key(s) {missing}; it needs {BATCH_KEYS}.")
  image = np.asarray(batch["image"], np.float32)
  if image.ndim != 3:
    raise ValueError(f"batch {index}: image must have shape (B, H, W), got shape {image.shape}.")
  b = image.shape[0]
  for k in ("volume", "slice", "valid"):
    if np.shape(batch[k]) != (b,):
      raise ValueError(f"batch {index}: {k} must have shape ({b},), got shape "
                       f"{np.shape(batch[k])}.")
  return image, np.asarray(batch["volume"]), np.asarray(batch["slice"]), np.asarray(
      batch["valid"], bool)


def _lambda_blocks(num_lambdas: int, batch: int, chunk: int):
  """Index blocks of the λ grid, all of one length, so one call stays short.

  A call scores ``batch × block`` pairs in about 32 model calls of ``chunk``
  (one call per batch for the usual grids; a 200×200 grid is cut into many
  calls so that progress can be shown and Ctrl-C is honoured between them).
  The last block wraps around to the first λ; its repeats are dropped.
  """
  block = min(num_lambdas, max(1, (32 * chunk) // max(batch, 1)))
  for start in range(0, num_lambdas, block):
    yield np.arange(start, start + block) % num_lambdas, min(block, num_lambdas - start)


def evaluate_grid(apply_fn: Callable, variables, operator, batches: Iterable[Mapping[str, Any]],
                  lam_grid, *, key, chunk: int | None = None, per_slice: bool = True,
                  progress: Callable[[int], None] | None = None, segmenter=None):
  """Evaluates a model on every slice of ``batches`` at every λ of a grid.

  Each slice is measured with its own key (`slice_keys`: from ``key`` and its
  volume and slice ids), so a run is reproducible and the noise of a slice
  does not depend on what else is evaluated, nor on the batch size; the
  network input is ``operator.zero_filled(y)``. Keep batches one shape (pad
  the last one with ``valid=False`` rows) to compile once.

  Args:
    apply_fn: see `reconstruct_grid`.
    variables: the model variables.
    operator: a `hyperrecon_jax.physics` operator.
    batches: iterable of dicts with ``image`` (B, H, W) float32 in [0, 1],
      ``volume`` (B,) volume ids (ints or strings), ``slice`` (B,) slice
      indices and ``valid`` (B,) bool.
    lam_grid: (G, n) hyperparameters in [0, 1] (e.g. ``hparams.grid``); the
      model gets ``hparams.coefficients(lam_grid)``.
    key: a PRNG key for the measurements.
    chunk: model batch size of one call, see `reconstruct_grid`.
    per_slice: keep the (S, G) per-slice arrays in the result (they dominate
      its size for big test sets and 2-D grids).
    progress: called with the number of (slice, λ) pairs just scored
      (padding rows included), e.g. to advance a progress bar.
    segmenter: a `segmentation.Trained`: the batches must then carry their
      true ``label`` (B, H, W), and every reconstruction (and the zero-filled
      input) is also scored by ``dice``, the Dice of its segmentation.

  Returns:
    A dict of JSON types only (non-finite numbers as None); see `to_json`:
    ``format``; ``metrics`` (names); ``lower_is_better`` (names);
    ``lambdas`` (G × n); ``coeffs`` (G × K); ``num_slices``; ``num_volumes``;
    ``volumes`` (ids, in order of first appearance); ``slices``:
    ``{'volume': [S], 'slice': [S]}``; ``unscored``: ``{metric: [[volume,
    slice], ...]}``, the slices left out of a metric's statistics because
    its value is not finite at some λ (e.g. NMSE of an all-zero ground
    truth); ``mean``, ``std``, ``q25``, ``q75``:
    ``{metric: [G]}`` over the scored slices; ``volume_mean``: ``{metric: V × G}``, the
    mean over each volume's slices; ``per_slice``: ``{metric: S × G}`` (only
    with ``per_slice``); ``best``: ``{metric: {'index', 'lam', 'value'}}`` on
    ``mean``; ``zero_filled``: the same statistics of the zero-filled
    magnitude, ``{'mean': {metric: x}, 'std', 'q25', 'q75', 'volume_mean':
    {metric: [V]}, 'per_slice': {metric: [S]}}``; with a segmenter,
    ``ground_truth_dice``: ``{'mean', 'std'}`` of the Dice of the segmenter on
    the ground-truth images, the best any reconstruction can expect.
  """
  lam = np.asarray(lam_grid, np.float32)
  if lam.ndim != 2 or lam.shape[0] < 1:
    raise ValueError(f"lam_grid must have shape (G, num_lambdas), got shape {lam.shape}.")
  coeffs = np.asarray(hparams.coefficients(lam))
  names = METRICS + (("dice",) if segmenter is not None else ())
  grid_rows, zf_rows, volumes, slices = {m: [] for m in names}, {m: [] for m in names}, [], []
  truth_dice = []
  for i, batch in enumerate(batches):
    image, volume, slice_, valid = _check_batch(batch, i)
    labels = None
    if segmenter is not None:
      if "label" not in batch:
        raise ValueError(f"batch {i} has no 'label': scoring Dice needs a dataset "
                         "with labels.")
      labels = np.asarray(batch["label"])
      truth_dice.append(np.asarray(segmentation.foreground_dice(
          segmentation.labels(segmenter, image), jnp.asarray(labels, jnp.int32),
          segmenter.num_classes))[valid])
    zf = measure_slices(operator, jnp.asarray(image), slice_keys(key, volume, slice_))
    blocks = {m: [] for m in names}
    for index, used in _lambda_blocks(len(coeffs), image.shape[0], _check_chunk(chunk)):
      out = grid_metrics(apply_fn, variables, zf, image, coeffs[index], valid=valid,
                         chunk=chunk, segmenter=segmenter, labels=labels)
      for m, v in out.items():
        blocks[m].append(v[:, :used])
      if progress is not None:
        progress(image.shape[0] * used)
    for m, v in blocks.items():
      grid_rows[m].append(np.concatenate(v, axis=1))
    for m, v in baseline_metrics(zf, image, valid=valid, segmenter=segmenter,
                                 labels=labels).items():
      zf_rows[m].append(v)
    volumes += list(volume[valid])
    slices += list(slice_[valid])
  if not volumes:
    raise ValueError("batches held no valid slice to evaluate.")
  result = summarize({m: np.concatenate(v) for m, v in grid_rows.items()},
                     {m: np.concatenate(v) for m, v in zf_rows.items()},
                     lam, volumes, slices, per_slice=per_slice)
  if truth_dice:
    truth = np.concatenate(truth_dice).astype(np.float64)
    result["ground_truth_dice"] = {"mean": float(truth.mean()), "std": float(truth.std())}
  return result


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
    raise ValueError(f"recons must have shape (G, ...) with G >= 1 and at least one image "
                     f"axis, got shape {recons.shape}.")
  if psnrs.shape != (recons.shape[0],):
    raise ValueError(f"psnrs must have shape ({recons.shape[0]},) to match recons, got "
                     f"shape {psnrs.shape}.")
  if not 0 <= percentile <= 100:
    raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
  if np.all(np.isnan(psnrs)):
    raise ValueError("psnrs are all NaN.")
  threshold = np.nanpercentile(psnrs, percentile)
  kept = np.flatnonzero(psnrs >= threshold)
  if kept.size < 2:
    best = int(np.nanargmax(psnrs))
    return best, best, 0.0
  x = recons[kept].reshape(kept.size, -1).astype(np.float64)
  sq = np.einsum("ij,ij->i", x, x)
  d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T  # Gram form: one matrix product
  rows, cols = np.triu_indices(kept.size, 1)
  k = int(np.argmax(d2[rows, cols]))
  a, b = rows[k], cols[k]
  i, j = sorted((int(kept[a]), int(kept[b])))
  # Recompute the winner's distance directly: the Gram form loses precision.
  return i, j, float(math.sqrt(np.sum((x[a] - x[b]) ** 2)))
