"""The compiled λ-grid programs: reconstruct or score (slice, λ) pairs in chunks.

One trained HyperRecon model reconstructs for any λ, so evaluation sweeps a
grid of G coefficient vectors over every slice. The (slice, λ) pairs are
flattened slice-major (pair ``f`` is slice ``f // G`` at λ index ``f % G``) and
cut into ``ceil(S·G / chunk)`` chunks of equal size (at most ``chunk``) of
consecutive pairs; **one chunk is one model call** of that batch size, each
row with its own slice and coefficients. The last chunk is padded with
repeats of the first pairs, so the model is traced and compiled for exactly
one batch shape, and the padding is dropped afterwards. The chunks run under
``jax.lax.map`` inside one jitted program, so peak memory is that of a
single model call of batch ``chunk`` (plus the outputs), whatever the grid
size. `grid_metrics` scores each chunk inside that program and holds no
more than one chunk of reconstructions (unless asked to return them too,
as the explorer does); `reconstruct_grid` returns all (S, G, H, W) of them.

Test sets run λ-major instead (``order``, 'auto' picks it once the slices
fill half a call, and always on the CPU): each call runs up to ``chunk``
slices at one λ, so the Unet is an ordinary shared-weight network, the cheap
path on every backend; the weights of up to `LAMBDA_BLOCK` λ come from one
``evaluation_weights`` call (for a ``HyperUnet``, one hypernetwork call).

``model`` is any of `hyperrecon_jax.models` (a ``HyperUnet``, a plain
``Unet``, a ``UnetStack`` of per-λ Unets): slice-major calls
``model.apply(variables, zf, coeffs)`` with (B, K) coefficients, one per
row; λ-major calls ``evaluation_weights`` once per block of λ and
``reconstruct_with`` per call. The model is a static argument of the
compiled programs (modules with equal fields share one). Metrics follow
`hyperrecon_jax.metrics` (per slice, peak 1); `hyperrecon_jax.evaluate`
measures and scores whole data splits with these programs; the explorer
and ``experiments/reconstruct.py`` reconstruct through `reconstruct_grid`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import metrics as metrics_lib
from hyperrecon_jax import physics
from hyperrecon_jax import segmentation

# Model batch size of one call (``chunk=None``). On GPU/TPU, 32 (the paper's
# training batch): at 256×256 a HyperRecon forward of that batch needs a few
# GiB. On CPU the 'loop' strategy unrolls the batch at trace time, so compile
# time grows linearly with the chunk while throughput does not depend on it;
# 8 compiles fast.
DEFAULT_CHUNK_CPU = 8
DEFAULT_CHUNK_ACCELERATOR = 32


def default_chunk() -> int:
  """The default chunk on the default backend: 8 on CPU, 32 on GPU/TPU."""
  if jax.default_backend() == "cpu":
    return DEFAULT_CHUNK_CPU
  return DEFAULT_CHUNK_ACCELERATOR


def check_chunk(chunk):
  """``chunk`` as an int ≥ 1, `default_chunk` for None; anything else is an `InputError`."""
  if chunk is None:
    return default_chunk()
  if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
    raise errors.InputError(f"chunk must be an int >= 1, got {chunk!r}.")
  return int(chunk)


def balanced(chunk, n):
  """The smallest chunk ≤ ``chunk`` that covers ``n`` pairs in as few calls.

  E.g. 100 λ with chunk 32: 4 calls of 25 rather than 4 of 32 with 28 padded.
  """
  calls = -(-n // chunk)
  return -(-n // calls)


def _check_zf(zf, name="zf", shape=None):
  shape = np.shape(zf) if shape is None else shape
  if len(shape) != 4 or shape[-1] != 2:
    raise errors.InputError(f"{name} must have shape (S, H, W, 2), got shape {shape}.")


def _check_coeffs(coeffs):
  if np.ndim(coeffs) != 2 or np.shape(coeffs)[0] < 1 or np.shape(coeffs)[1] < 2:
    raise errors.InputError(
        f"coeffs must have shape (G, K), G >= 1, K >= 2, got {np.shape(coeffs)}.")
  # Off the simplex (raw loss weights, NaN) a model extrapolates without a word.
  hparams.check_coefficients(coeffs)


def _check_scored(zf, target, valid):
  """Checks zf, target and valid of a scored batch; returns the (S,) keep mask."""
  _check_zf(zf)
  s = zf.shape[0]
  if np.shape(target) != tuple(zf.shape[:3]):
    raise errors.InputError(f"target must have shape {tuple(zf.shape[:3])} (S, H, W) to match zf, "
                            f"got shape {np.shape(target)}.")
  if valid is not None and np.shape(valid) != (s,):
    raise errors.InputError(f"valid must have shape ({s},), got shape {np.shape(valid)}.")
  keep = np.ones(s, bool) if valid is None else np.asarray(valid, bool)
  # PSNR and SSIM take a peak of 1: images on another scale score without
  # meaning. Padding rows are never scored, whatever they hold.
  values = np.asarray(target)
  # Per-row extremes, then the kept rows': no copy of the batch.
  lo, hi = ((float(values.min(axis=(1, 2))[keep].min()),
             float(values.max(axis=(1, 2))[keep].max())) if keep.any() else (0.0, 0.0))
  if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo and hi <= 1.0):
    raise errors.InputError(
        f"target must hold images in [0, 1] (PSNR and SSIM take a peak of 1), got values in "
        f"[{lo:.6g}, {hi:.6g}]: scale each volume to [0, 1] first, e.g. by its maximum.")
  return keep


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
  """images, true labels → (B,) Dice (NaN for an image that is not finite), or None."""
  if segmenter is None:
    return None
  apply_fn, num_classes = segmenter
  def dice(images, labels):
    pred = jnp.argmax(apply_fn(seg_variables, images), axis=-1)
    scores = segmentation.foreground_dice(pred, labels, num_classes)
    # argmax sends NaN logits to class 0, which would give a reconstruction
    # that is not finite (NaN PSNR) a finite Dice; it gets NaN as its other
    # metrics do.
    finite = jnp.all(jnp.isfinite(images), axis=(1, 2))
    return jnp.where(finite, scores, jnp.nan)
  return dice


ORDERS = ("auto", "slice", "lambda")


def resolve_order(order: str, num_slices: int, chunk: int, backend: str | None = None) -> str:
  """'slice' or 'lambda' for `order`: 'auto' is λ-major on the CPU, or once slices fill half a call.

  λ-major runs every slice of a call at one λ: the hypernetwork generates one
  weight set and the Unet is an ordinary shared-weight network (the cheap
  path on every backend). On a GPU, slice-major mixes λ within a call
  (per-row weights) and is what fills a call when there are few slices, e.g.
  one slice at 100 λ. On the CPU a call is not worth filling: rows with their
  own weights are convolved one by one anyway (the 'loop' strategy), so even
  one slice at a few λ runs faster λ-major (docs/changelog.md).

  Args:
    order: one of ``ORDERS``.
    num_slices: slices of the grid.
    chunk: model batch of one call.
    backend: the backend the program runs on; None is JAX's default.

  Returns:
    'slice' or 'lambda'.
  """
  if order not in ORDERS:
    raise errors.InputError(f"order must be one of {ORDERS}, got {order!r}.")
  if order != "auto":
    return order
  if (backend or jax.default_backend()) == "cpu":
    return "lambda"
  return "lambda" if num_slices >= max(1, chunk // 2) else "slice"


# λ per generated block in the λ-major grid: the hypernetwork generates the
# weights of up to this many λ in one matrix product, reading its output
# layers (d × ~148,000 values at 32 channels) once per block instead of once
# per λ. The block's weights take ~0.6 MB per λ at 32 channels. Blocks are
# balanced like the calls (`balanced`): the last one is padded with at most
# one repeated λ per block, whose Unet passes are run and dropped: none for
# G ≤ 32 or G = 100, and fewer than one extra pass in 32 for any G.
LAMBDA_BLOCK = 32


@compilation.inference_jit(static_argnames=("model", "chunk", "score", "segmenter", "order",
                                            "lambda_block", "terms", "keep_recons"))
def _grid_program(variables, zf, coeffs, target, seg_variables=None, labels=None,
                  operator=None, measurement=None, *, model, chunk, score, segmenter=None,
                  order="slice", lambda_block=1, terms=(), keep_recons=False):
  """All S×G (slice, λ) pairs in calls of ``chunk`` rows: recons or metrics (S, G, ...).

  ``order='slice'``: the pairs flattened slice-major, each row with its own
  (K,) coefficients. ``order='lambda'``: for each λ, the slices in calls of
  ``chunk`` slices sharing that λ's weights; the weights of ``lambda_block``
  λ at a time are generated together (`LAMBDA_BLOCK`). ``segmenter`` is
  ``(apply_fn, num_classes)`` of a `segmentation.Trained` (static), with its
  ``seg_variables`` and the slices' true ``labels``. ``terms`` (static)
  names loss terms of the reconstruction (`check_image_terms`), scored as
  ``term_<name>`` against ``target``, ``operator`` and the slices'
  ``measurement``. ``keep_recons`` adds the scored reconstructions as ``recons``.
  """
  s_count, g_count = zf.shape[0], coeffs.shape[0]
  zf_mag = physics.magnitude(zf) if score else None
  segment = _segment_fn(segmenter, seg_variables)

  def scored(s, recon):
    if not score:
      return recon
    out = _slice_metrics(recon, target[s], zf_mag[s], segment,
                         None if labels is None else labels[s])
    if terms:
      y = jax.tree_util.tree_map(lambda m: m[s], measurement)
      values = losses.compute_terms(terms, recon, target[s], operator=operator, measurement=y)
      out.update({f"term_{n}": values[:, k] for k, n in enumerate(terms)})
    if keep_recons:
      out["recons"] = recon
    return out

  def unpad(x, n, shape):
    return x.reshape((-1,) + x.shape[2:])[:n].reshape(shape + x.shape[2:])

  if order == "lambda":
    calls = -(-s_count // chunk)
    # Padding rows repeat the first slices, so every call has the same shape.
    rows = (jnp.arange(calls * chunk) % s_count).reshape(calls, chunk)

    def per_lambda(reconstruct):  # every slice at one λ: (S, ...)
      out = jax.lax.map(lambda s: scored(s, reconstruct(zf[s])), rows)
      return jax.tree_util.tree_map(lambda x: unpad(x, s_count, (s_count,)), out)

    blocks = -(-g_count // lambda_block)
    index = (jnp.arange(blocks * lambda_block) % g_count).reshape(blocks, lambda_block)

    def per_block(i):
      weights = model.apply(variables, coeffs[i], method="evaluation_weights")
      return jax.lax.map(lambda w: per_lambda(
          lambda z: model.apply(variables, w, z, method="reconstruct_with")), weights)

    out = jax.tree_util.tree_map(lambda x: unpad(x, g_count, (g_count,)),
                                 jax.lax.map(per_block, index))
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), out)  # (S, G, ...)
  n = s_count * g_count
  num_chunks = -(-n // chunk)
  flat = jnp.arange(num_chunks * chunk) % n
  index = (flat // g_count).reshape(num_chunks, chunk), (flat % g_count).reshape(num_chunks, chunk)
  out = jax.lax.map(
      lambda idx: scored(idx[0], model.apply(variables, zf[idx[0]], coeffs[idx[1]])), index)
  return jax.tree_util.tree_map(lambda x: unpad(x, n, (s_count, g_count)), out)


def _call_size(order, chunk, num_slices, num_pairs):
  return balanced(chunk, num_slices if order == "lambda" else num_pairs)


def reconstruct_grid(model, variables, zf, coeffs, *, chunk: int | None = None,
                     order: str = "auto"):
  """Reconstructs slices at every coefficient vector of a grid.

  Args:
    model: a model of `hyperrecon_jax.models` (``HyperUnet``, ``Unet``,
      ``UnetStack``).
    variables: the model variables.
    zf: (S, H, W, 2) zero-filled inputs, or one slice (H, W, 2).
    coeffs: (G, K) loss-coefficient vectors (``hparams.coefficients(lam_grid)``).
    chunk: largest model batch of one call, counted in (slice, λ) pairs;
      memory grows linearly with it. The calls needed, ceil(S·G / chunk),
      share the pairs evenly, so at most one pair per call is padding.
      None: `default_chunk()`.
    order: 'slice' (calls mix λ: per-row weights), 'lambda' (each call runs
      up to ``chunk`` slices at one λ: one generated weight set) or 'auto'
      (`resolve_order`). The results agree to float32 roundoff, and with
      bfloat16 activations to about one bfloat16 step (a 64×64 run on the
      CPU: 0.0039 on the image, 0.002 dB), as the weights are generated and
      applied in another order; only the speed differs otherwise.

  Returns:
    (S, G, H, W) float32 reconstructions; (G, H, W) for a single (H, W, 2) slice.
  """
  chunk = check_chunk(chunk)
  single = np.ndim(zf) == 3
  if not (np.ndim(zf) in (3, 4) and np.shape(zf)[-1] == 2):
    # Named by the shape given, not the one a single slice's added axis makes.
    raise errors.InputError("zf must have shape (S, H, W, 2), or (H, W, 2) for one slice, "
                            f"got shape {np.shape(zf)}.")
  _check_coeffs(coeffs)
  zf, coeffs = jnp.asarray(zf, jnp.float32), jnp.asarray(coeffs, jnp.float32)
  zf = zf[None] if single else zf
  order = resolve_order(order, zf.shape[0], chunk)
  size = _call_size(order, chunk, zf.shape[0], zf.shape[0] * coeffs.shape[0])
  out = _grid_program(variables, zf, coeffs, None, model=model, chunk=size,
                      score=False, order=order,
                      lambda_block=balanced(LAMBDA_BLOCK, coeffs.shape[0]))
  return out[0] if single else out


def check_image_terms(terms) -> tuple[str, ...]:
  """Loss-term names a grid can score per (slice, λ): all but the weights' terms.

  A term of the generated weights (``weight_l1``) depends on λ alone, not on
  the slice: it is `weight_terms`' job.
  """
  terms = losses.check_names(terms) if terms else ()
  bad = [n for n in terms if n in losses.NEEDS_WEIGHTS]
  if bad:
    raise errors.InputError(f"loss terms {bad} depend on the model's weights, not on a "
                            "reconstruction: score them with grid.weight_terms.")
  return terms


def grid_metrics(model, variables, zf, target, coeffs, *, valid=None,
                 chunk: int | None = None, segmenter=None, labels=None,
                 order: str = "auto", terms=(), operator=None, measurement=None,
                 keep_recons: bool = False):
  """Per-slice, per-λ metrics of a batch, each call's scored as it is reconstructed.

  Args:
    model: see `reconstruct_grid`.
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
    order: see `reconstruct_grid`.
    terms: loss-term names of the reconstruction (`check_image_terms`),
      e.g. ``('dc', 'tv', 'wavelet')``, scored per (slice, λ) as
      ``term_<name>``; they need ``operator`` and the slices' ``measurement``
      (``zf`` is ``operator.zero_filled(measurement)``).
    operator: the task's operator (with ``terms``).
    measurement: the slices' measurements y, leading axis S (with ``terms``).
    keep_recons: also return the reconstructions. Without it none is kept
      beyond its call; with it the metrics still take one call's memory, not
      the grid's.

  Returns:
    ``{metric: (S_valid, G) float64 array}`` for every metric of `METRICS`
    (rPSNR against the magnitude of ``zf``), ``dice`` with a segmenter and
    ``term_<name>`` for each of ``terms``, rows in input order; with
    ``keep_recons`` also ``recons``, (S_valid, G, H, W) float32.
  """
  chunk = check_chunk(chunk)
  keep = _check_scored(zf, target, valid)
  _check_coeffs(coeffs)
  terms = check_image_terms(terms)
  if terms and (operator is None or measurement is None):
    raise errors.InputError("scoring loss terms needs the operator and the slices' measurement.")
  static, seg_variables, labels = _check_segmenter(segmenter, labels, np.shape(target))
  order = resolve_order(order, zf.shape[0], chunk)
  size = _call_size(order, chunk, zf.shape[0], zf.shape[0] * coeffs.shape[0])
  out = _grid_program(variables, jnp.asarray(zf, jnp.float32), jnp.asarray(coeffs, jnp.float32),
                      jnp.asarray(target, jnp.float32), seg_variables, labels,
                      operator if terms else None, measurement if terms else None,
                      model=model, chunk=size, score=True, segmenter=static,
                      order=order, lambda_block=balanced(LAMBDA_BLOCK, np.shape(coeffs)[0]),
                      terms=terms, keep_recons=keep_recons)
  out = {k: np.asarray(v, np.float32 if k == "recons" else np.float64) for k, v in out.items()}
  return out if keep.all() else {k: v[keep] for k, v in out.items()}


def _check_segmenter(segmenter, labels, shape):
  """(static part, variables, labels) for the programs; None ×3 without one."""
  if segmenter is None:
    return None, None, None
  if labels is None or np.shape(labels) != tuple(shape):
    raise errors.InputError(f"scoring Dice needs the true labels of every slice, shape "
                            f"{tuple(shape)}, got {None if labels is None else np.shape(labels)}.")
  # Checked here: inside the programs the labels are traced and cannot be.
  metrics_lib.check_labels(labels, segmenter.num_classes, "labels")
  return ((segmenter.apply_fn, segmenter.num_classes), segmenter.variables,
          jnp.asarray(labels, jnp.int32))


@compilation.inference_jit(static_argnames="segmenter")
def _zero_filled_program(zf, target, seg_variables=None, labels=None, *, segmenter=None):
  zf_mag = physics.magnitude(zf)
  return _slice_metrics(zf_mag, target, zf_mag, _segment_fn(segmenter, seg_variables),
                        labels)


def zero_filled_metrics(zf, target, *, valid=None, segmenter=None, labels=None):
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
  out = _zero_filled_program(jnp.asarray(zf, jnp.float32), jnp.asarray(target, jnp.float32),
                          seg_variables, labels, segmenter=static)
  return {k: np.asarray(v, np.float64)[keep] for k, v in out.items()}


@compilation.inference_jit(static_argnames=("model", "block", "names"))
def _weight_terms_program(variables, coeffs, *, model, block, names):
  g_count = coeffs.shape[0]
  blocks = -(-g_count // block)
  index = (jnp.arange(blocks * block) % g_count).reshape(blocks, block)

  def per_block(i):
    weights = model.apply(variables, coeffs[i], method="generate")
    return jnp.stack([losses.call_term(n, None, weights=weights) for n in names], axis=1)

  return jax.lax.map(per_block, index).reshape(-1, len(names))[:g_count]


def weight_terms(model, variables, coeffs, names) -> dict[str, np.ndarray]:
  """Per-λ values of the loss terms of a model's convolution weights.

  The terms of `losses.NEEDS_WEIGHTS` (``weight_l1``: the ℓ1 norm of all the
  convolution weights of the model at λ, and any registered with
  ``needs=('weights',)``) read ``generate``'s weights, as in training: a
  ``HyperUnet``'s generated and shared ones, a ``UnetStack``'s nearest
  member's. They depend on λ only, not on a slice.

  Args:
    model: see `reconstruct_grid`.
    variables: its variables.
    coeffs: (G, K) coefficient vectors.
    names: loss-term names; those not of the weights are skipped.

  Returns:
    ``{name: (G,) float64}`` for each weight term of ``names``.
  """
  _check_coeffs(coeffs)
  wanted = tuple(n for n in names if n in losses.NEEDS_WEIGHTS)
  if not wanted:
    return {}
  coeffs = jnp.asarray(coeffs, jnp.float32)
  values = _weight_terms_program(variables, coeffs, model=model, names=wanted,
                                 block=balanced(LAMBDA_BLOCK, coeffs.shape[0]))
  return {n: np.asarray(values[:, k], np.float64) for k, n in enumerate(wanted)}
