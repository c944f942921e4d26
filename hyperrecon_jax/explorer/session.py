"""The explorer's state and answers: a model, its slices, and the λ set it scores.

`Explorer` answers every API request of `hyperrecon_jax.explorer.server`
with plain dicts (JSON types) or bytes; it is thread-safe.

A model of K loss terms has K − 1 hyperparameters λ, or equivalently K
coefficients c on the simplex (`hparams.coefficients`); a request may give
either. The λ set the curves score is a regular grid for K ≤ 3 (a line of
``grid`` points, or grid² points) and for K ≥ 4 a low-discrepancy design of
``design`` points on the simplex (`hparams.simplex_design`, vertices first),
where a grid would need grid^(K−1) points.
"""

import collections
import concurrent.futures
import io
import math
import threading

import jax
import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import evaluate as ev
from hyperrecon_jax import gallery as gallery_lib
from hyperrecon_jax import grid as grid_lib
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import physics
from hyperrecon_jax import streams
from hyperrecon_jax.errors import InputError
from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import png_bytes

# |error| images of a slice share one grey scale, white at this percentile of
# the slice's |error| at the simplex's vertices and centre (`Explorer.error_scale`):
# comparable across λ, and neither saturated on a poor slice nor black on a
# good one, as a fixed white level is.
ERROR_PERCENTILE = 99.0
# Points of the simplex design for K ≥ 4 terms. Its cost is one model pass per
# point and slice (64 points: 0.13 s a slice for the shipped 64×64 size on 2
# CPU cores, ~12 s for HyperRecon-L at 256×256 there, well under a second
# on a GPU), a seventh of a K = 3 grid of 21 points a side (441, the
# shipped models' eval.grid): dense enough for the best points and the
# gallery to differ visibly, cheap enough to recompute per slice.
DESIGN_SIZE = 64
# The gallery of a config without eval.gallery_size / eval.gallery_tolerance_db:
# this many diverse reconstructions within this many dB of the best PSNR.
GALLERY_SIZE = 4
GALLERY_TOLERANCE_DB = 1.0
CACHE_BYTES = 256 << 20  # grid reconstructions kept (at least one slice's)
KINDS = ("recon", "error", "range", "truth", "zero_filled")
MAX_SHOWN = 100  # characters of a request's value quoted in an error message
SIGNIFICANT_DIGITS = 6  # of the λ and coefficients in answers


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


def _num(x):
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


def task_text(task) -> str:
  """The degradation a config's task describes, in words."""
  if task.name == "csmri":
    return f"CS-MRI {float(task.acceleration):g}× acceleration, {task.mask} mask"
  if task.name == "denoise":
    return f"denoising, Gaussian noise σ = {float(task.sigma):g}"
  if task.name == "superres":
    return f"super-resolution {int(task.factor)}×"
  return str(task.name)


@compilation.inference_jit(static_argnames="apply_fn")
def _one(variables, zf, images, index, coeffs, *, apply_fn):
  """Slice ``index`` at (K,) ``coeffs``: one generated weight set, an ordinary Unet."""
  recon = apply_fn(variables, zf[index][None], coeffs)
  target = images[index][None]
  return (recon[0], metrics.psnr(recon, target)[0], metrics.ssim(recon, target)[0],
          metrics.hfen(recon, target)[0])


def _split(text, name, count, what):
  """``text`` ('a,b,…' or numbers) as (count,) float64, or `BadRequest` naming ``name``."""
  parts = str(text).split(",") if isinstance(text, str) else list(np.atleast_1d(text))
  try:
    values = np.array([float(p) for p in parts], np.float64)
  except (TypeError, ValueError):
    raise BadRequest(f"{name} must be {count} comma-separated number(s), got "
                     f"{shown(text)}") from None
  if values.shape != (count,):
    raise BadRequest(f"{name} must have {count} value(s) for this model ({what}), got "
                     f"{values.size} ({shown(text)})")
  return values


class Explorer:
  """A model and the slices it is explored on; every method returns plain data.

  Args:
    config: the model's experiment config.
    model: a ``HyperUnet`` (``config.model.hyper_dim > 0``).
    variables: its variables.
    name: the model's name (a pretrained name or a workdir), shown on the page.
    step: its training step.
    split: the data split whose slices are loaded (when ``images`` is None).
    images: instead of the split, (S, H, W) float32 slices in [0, 1] (a
      user's volume), measured as volume 0.
    slices: the slice indices of ``images`` (default 0…S−1).
    source: what the slices are, for the page (default: the split's name).
    chunk: model batch of the grid reconstruction (default:
      `grid.default_chunk()`).
    seed: seed of the measurement noise; default: the ``'evaluation'``
      stream (`streams.key`, the report's) for a split, 0 for ``images`` (the default
      ``--seed`` of ``experiments/reconstruct.py``), so the page shows the
      inputs that those scored or wrote.
    segmenter: a `segmentation.Trained` of this data: every reconstruction
      is also scored by ``dice``, the foreground Dice of its segmentation
      against the split's true labels (not with ``images``: they have none).
    grid: λ values per hyperparameter of the λ set, for K ≤ 3 terms
      (default: the config's ``eval.grid``).
    design: points of the λ set on the simplex, for K ≥ 4 terms (default
      `DESIGN_SIZE`).
    gallery_size: diverse good reconstructions per slice (`gallery.diverse`;
      default: the config's ``eval.gallery_size``, as the report's gallery).
    gallery_tolerance_db: how far below a slice's best PSNR they may be
      (default: the config's ``eval.gallery_tolerance_db``).

  Raises:
    InputError: a model without λ (a plain Unet), no slices, ``grid`` for
      K ≥ 4 or ``design`` for K ≤ 3 terms (a ``ValueError`` too).
  """

  def __init__(self, config, model, variables, *, name, step, split="test", images=None,
               slices=None, source=None, chunk=None, seed=None, segmenter=None,
               grid=None, design=None, gallery_size=None, gallery_tolerance_db=None):
    if not int(config.model.hyper_dim):
      raise InputError(f"{name} is a plain Unet (hyper_dim 0) trained at one λ: the explorer "
                       "needs a HyperRecon model")
    self.config, self.model, self.variables = config, model, variables
    self.name, self.step = str(name), int(step)
    size = int(config.data.image_size)
    self.operator = physics.make_operator(config.task, (size, size))
    from hyperrecon_jax import train
    self.num_coeffs = train.num_coeffs(config)
    self.num_lambdas = self.num_coeffs - 1
    self.losses = tuple(str(n) for n in config.losses)
    if self.num_coeffs <= 3:
      if design is not None:
        raise InputError(f"a design on the simplex is for models of 4 or more loss terms; "
                         f"{self.name} has {self.num_coeffs} and is scored on a λ grid (grid)")
      self.grid, self.design = int(grid or config.eval.grid), None
      self.lam_grid = hparams.grid(self.grid, self.num_lambdas)
      self.coeffs = np.asarray(hparams.coefficients(self.lam_grid))
    else:
      if grid is not None:
        raise InputError(f"a λ grid serves models of 2 or 3 loss terms; {self.name} has "
                         f"{self.num_coeffs}: give the size of a design on the simplex instead")
      self.grid, self.design = None, int(design or DESIGN_SIZE)
      self.coeffs = hparams.simplex_design(self.design, self.num_coeffs)
      self.lam_grid = np.asarray(hparams.lambdas_from_coefficients(self.coeffs))
    evals = config.get("eval") or {}
    self.gallery_size = int(gallery_size or evals.get("gallery_size", GALLERY_SIZE))
    self.gallery_tolerance_db = float(evals.get("gallery_tolerance_db", GALLERY_TOLERANCE_DB)
                                      if gallery_tolerance_db is None else gallery_tolerance_db)
    self.chunk = grid_lib.check_chunk(chunk)
    self.segmenter, self.labels = segmenter, None
    self.metric_names = ("psnr", "ssim", "hfen") + (("dice",) if segmenter else ())
    if segmenter is not None:
      from hyperrecon_jax import segmentation
      if images is not None:
        raise InputError("Dice needs the true labels of a dataset split: a segmenter does "
                         "not apply to a user's images")
      segmentation.check_data(segmenter, config.data, self.name)
    from_split = images is None
    if from_split:
      images, volumes, slices, self.labels = _load_split(config, split, segmenter is not None)
      self.source = source or f"{config.data.name} {split} split"
    else:
      images = np.asarray(images, np.float32)
      if images.ndim != 3 or images.shape[1:] != (size, size):
        raise InputError(f"images must have shape (S, {size}, {size}), got {images.shape}")
      volumes = np.zeros(len(images), np.int64)
      slices = np.arange(len(images)) if slices is None else np.asarray(slices)
      self.source = source or "user input"
    if len(images) == 0:
      raise InputError(f"no slices to explore in {self.source}")
    self.images, self.volumes, self.slices = images, list(volumes), list(slices)
    if seed is not None:
      key = jax.random.key(int(seed))
    else:  # the evaluation report's stream for a split, reconstruct.py's seed 0 for images
      key = streams.key(config, "evaluation") if from_split else jax.random.key(0)
    self._zf = ev.measure_slices(self.operator, jax.numpy.asarray(images),
                                 ev.slice_keys(key, volumes, slices))
    self._images = jax.numpy.asarray(images)
    self.zf_mag = np.asarray(grid_lib.magnitude(self._zf))
    self._apply = model.apply
    # The lock guards the dicts only, never a computation: a cached answer is
    # never kept waiting by a slice being computed. `_pending` holds the
    # future of each slice whose grid is being computed, so that concurrent
    # requests for it wait for that one computation instead of repeating it;
    # `_computing` lets one grid run at a time (each takes the whole machine
    # and memory for a chunk of model calls).
    self._lock, self._computing = threading.Lock(), threading.Lock()
    self._cache, self._pending = collections.OrderedDict(), {}
    self._error_scales = {}

  # --- parameters ---------------------------------------------------------------

  def check_slice(self, index) -> int:
    """``index`` as an int in range, or `BadRequest` naming ``slice``."""
    try:
      i = int(str(index).strip())
    except ValueError:
      raise BadRequest(f"slice must be an integer, got {shown(index)}") from None
    if not 0 <= i < len(self.images):
      raise BadRequest(f"slice must be in [0, {len(self.images) - 1}], got {i}")
    return i

  def check_lam(self, lam) -> np.ndarray:
    """``lam`` ('a,b' or numbers) as (K−1,) float32 in [0, 1], or `BadRequest`."""
    values = _split(lam, "lam", self.num_lambdas, f"{self.num_coeffs} loss terms")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
      raise BadRequest(f"lam must lie in [0, 1], got {shown(lam)}")
    return values.astype(np.float32)

  def check_coeffs(self, coeffs) -> np.ndarray:
    """``coeffs`` ('c1,…,cK' or numbers) as (K,) float32 on the simplex, or `BadRequest`.

    The values must be ≥ 0 and sum to 1 within `hparams.SUM_TOLERANCE` (as
    `hparams.check_coefficients`: decimals as typed, e.g. 0.33,0.33,0.34);
    they are then divided by their sum, so the model gets a point of the
    simplex.
    """
    terms = ", ".join(self.losses)
    values = _split(coeffs, "coeffs", self.num_coeffs, f"one per loss term: {terms}")
    if not np.all(np.isfinite(values)):
      raise BadRequest(f"coeffs must be finite numbers, got {shown(coeffs)}")
    if values.min() < 0:
      raise BadRequest(f"coeffs must be ≥ 0, got {shown(coeffs)}")
    total = float(values.sum())
    if abs(total - 1.0) > hparams.SUM_TOLERANCE:
      raise BadRequest(f"coeffs must sum to 1 (within {hparams.SUM_TOLERANCE:g}), got "
                       f"{shown(coeffs)}, which sums to {total:.6g}")
    return (values / total).astype(np.float32)

  def check_point(self, lam=None, coeffs=None):
    """A request's point of the λ set, given by exactly one of ``lam`` and ``coeffs``.

    Args:
      lam: K − 1 hyperparameters in [0, 1] ('a,b,…' or numbers), or None.
      coeffs: K loss coefficients on the simplex, or None.

    Returns:
      ``(lam (K−1,), coeffs (K,))``, float32, the one computed from the other
      (`hparams.coefficients`, `hparams.lambdas_from_coefficients`).

    Raises:
      BadRequest: neither or both given, or the one given is malformed.
    """
    if lam is not None and coeffs is not None:
      raise BadRequest("give either 'lam' or 'coeffs', not both: they are two ways to say "
                       "the same loss weighting")
    if lam is None and coeffs is None:
      raise BadRequest(f"missing parameter 'lam' ({self.num_lambdas} value(s) in [0, 1]) or "
                       f"'coeffs' ({self.num_coeffs} values ≥ 0 summing to 1, one per loss "
                       f"term: {', '.join(self.losses)})")
    if coeffs is None:
      lam = self.check_lam(lam)
      return lam, np.asarray(hparams.coefficients(lam[None]))[0]
    coeffs = self.check_coeffs(coeffs)
    return np.asarray(hparams.lambdas_from_coefficients(coeffs[None]))[0], coeffs

  # --- the API ------------------------------------------------------------------

  def info(self) -> dict:
    """The model, its task and loss terms, the slices and the λ set."""
    task = self.config.task
    out = {"model": self.name, "step": self.step, "source": self.source,
           "task": {"name": task.name, "text": task_text(task),
                    "input_name": physics.input_name(task.name)},
           "losses": list(self.losses), "num_coeffs": self.num_coeffs,
           "image_size": int(self.images.shape[1]),
           "num_slices": len(self.images), "num_lambdas": self.num_lambdas,
           "lambda_set": "grid" if self.grid else "simplex_design",
           "grid": self.grid, "design": self.design,
           "lambdas": rounded(self.lam_grid), "coeffs": rounded(self.coeffs),
           "slices": [{"volume": _volume_id(v), "slice": int(s)}
                      for v, s in zip(self.volumes, self.slices)],
           "metrics": list(self.metric_names), "error_percentile": ERROR_PERCENTILE,
           "gallery_size": self.gallery_size,
           "gallery_tolerance_db": self.gallery_tolerance_db}
    if task.name == "csmri":
      out["task"].update(acceleration=float(task.acceleration), mask=str(task.mask),
                         mask_image=data_url(np.asarray(self.operator.mask)))
    elif task.name == "denoise":
      out["task"]["sigma"] = float(task.sigma)
    elif task.name == "superres":
      out["task"]["factor"] = int(task.factor)
    return out

  def reconstruction(self, slice_index, lam=None, *, coeffs=None):
    """(recon (H, W) float32, {'psnr', 'ssim', 'hfen'[, 'dice']}) of a slice at one point.

    Args:
      slice_index: the slice.
      lam: the K − 1 hyperparameters, or
      coeffs: the K loss coefficients (exactly one of them).
    """
    i, (_, c) = self.check_slice(slice_index), self.check_point(lam, coeffs)
    return self._reconstruction(i, c)

  def _reconstruction(self, i, coeffs):
    recon, psnr, ssim, hfen = _one(self.variables, self._zf, self._images, i,
                                   np.asarray(coeffs, np.float32), apply_fn=self._apply)
    scores = {"psnr": _num(psnr), "ssim": _num(ssim), "hfen": _num(hfen)}
    if self.segmenter is not None:
      scores["dice"] = _num(self._dice(recon[None], self.labels[i][None])[0])
    return np.asarray(recon), scores

  def _dice(self, recons, labels):
    """(B,) foreground Dice of the segmentations of (B, H, W) images."""
    from hyperrecon_jax import segmentation
    pred = segmentation.labels(self.segmenter, recons)
    return np.asarray(segmentation.foreground_dice(pred, labels, self.segmenter.num_classes),
                      np.float64)

  def error_scale(self, slice_index) -> float:
    """The |error| drawn white in a slice's error images, computed once per slice.

    The `ERROR_PERCENTILE`-th percentile of the slice's |error| over its
    reconstructions at the K vertices of the simplex (each loss term alone,
    where a model's errors are largest) and at its centre: K + 1 single model
    calls, not the whole λ set, so that the first reconstruction of a slice
    is not kept waiting for its grid. One scale per slice keeps the error
    images of every λ comparable. At most 1.0, the images' range (an error
    beyond it is saturated: a vertex of a poor model must not turn every
    other error image black), and 1.0 for a slice reconstructed exactly.
    """
    i = self.check_slice(slice_index)
    with self._lock:
      if i in self._error_scales:
        return self._error_scales[i]
    k = self.num_coeffs
    probes = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k)]).astype(np.float32)
    errors = np.stack([np.abs(self._reconstruction(i, c)[0] - self.images[i]) for c in probes])
    errors = np.nan_to_num(errors, nan=0.0)  # a NaN pixel must not make the scale NaN
    scale = min(float(np.percentile(errors, ERROR_PERCENTILE)) or float(errors.max()) or 1.0,
                1.0)
    with self._lock:  # a concurrent request may have stored the same value
      self._error_scales[i] = scale
    return scale

  def reconstruct(self, slice_index, lam=None, coeffs=None) -> dict:
    """A slice at one point (``lam`` or ``coeffs``): its images (PNG data URLs) and metrics."""
    i, (lam, coeffs) = self.check_slice(slice_index), self.check_point(lam, coeffs)
    recon, scores = self._reconstruction(i, coeffs)
    truth, scale = self.images[i], self.error_scale(i)
    return {"slice": i, "lam": rounded(lam), "coeffs": rounded(coeffs), "metrics": scores,
            "error_scale": scale,
            "images": {"truth": data_url(truth), "zero_filled": data_url(self.zf_mag[i]),
                       "recon": data_url(recon),
                       "error": data_url(np.abs(recon - truth), scale)}}

  def grid_reconstructions(self, slice_index) -> dict:
    """A slice over the λ set, cached: ``recons`` (G, H, W) and metrics (G,).

    A cached slice is answered at once, whatever is being computed; a slice
    being computed is waited for, not computed twice; one slice is computed
    at a time.
    """
    i = self.check_slice(slice_index)
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
      future = self._pending.get(i)
      mine = future is None
      if mine:
        future = self._pending[i] = concurrent.futures.Future()
    if not mine:
      return future.result()
    try:
      with self._computing:
        out = self._compute_grid(i)
    except BaseException as e:
      with self._lock:
        del self._pending[i]
      future.set_exception(e)
      raise
    with self._lock:
      del self._pending[i]
      self._cache[i] = out
      while len(self._cache) > max(1, CACHE_BYTES // out["recons"].nbytes):
        self._cache.popitem(last=False)
    future.set_result(out)
    return out

  def _compute_grid(self, i) -> dict:
    """Slice ``i`` over the λ set: ``recons`` (G, H, W) and each metric (G,)."""
    recons = np.asarray(grid_lib.reconstruct_grid(
        self._apply, self.variables, self._zf[i], self.coeffs, chunk=self.chunk))
    target = np.broadcast_to(self.images[i], recons.shape)
    out = {"recons": recons,
           **{m: np.asarray(getattr(metrics, m)(recons, target), np.float64)
              for m in ("psnr", "ssim", "hfen")}}
    if self.segmenter is not None:
      out["dice"] = self._dice(recons, np.broadcast_to(self.labels[i], recons.shape))
    return out

  def _point(self, g, k) -> dict:
    """Point ``k`` of the λ set: its index, λ, coefficients and metrics."""
    return {"index": int(k), "lam": rounded(self.lam_grid[k]), "coeffs": rounded(self.coeffs[k]),
            "metrics": {m: _num(g[m][k]) for m in self.metric_names}}

  def curve(self, slice_index) -> dict:
    """Metrics over the λ set, best point per metric, the diverse pair and gallery, the range.

    Returns:
      ``lambdas`` (G, K−1) and ``coeffs`` (G, K) of the λ set; ``metrics``
      {name: (G,)}; ``best`` {name: {index, lam, coeffs, value}} (None for a
      metric that is NaN everywhere); ``diverse``: the paper's Fig. 7 pair
      (`evaluate.diverse_pair`); ``gallery``: up to ``gallery_size`` good
      and mutually different reconstructions (`gallery.diverse`), each with
      its point, metrics and image; ``range`` (max − min over the set, white
      at ``range_max``); ``error_scale`` (`error_scale`).
    """
    i = self.check_slice(slice_index)
    g = self.grid_reconstructions(i)
    spread = g["recons"].max(0) - g["recons"].min(0)
    best = {}
    for m in self.metric_names:
      values = g[m]
      if np.all(np.isnan(values)):
        best[m] = None
        continue
      k = int(np.nanargmin(values) if m == "hfen" else np.nanargmax(values))
      best[m] = {"index": k, "lam": rounded(self.lam_grid[k]),
                 "coeffs": rounded(self.coeffs[k]), "value": _num(values[k])}
    a, b, distance = ev.diverse_pair(g["recons"], g["psnr"])
    picked = gallery_lib.diverse(g["recons"], g["psnr"], self.gallery_size,
                                 tolerance_db=self.gallery_tolerance_db)
    items = [{**self._point(g, k), "min_distance": _num(d), "image": data_url(g["recons"][k])}
             for k, d in zip(picked.indices, picked.min_distance)]
    range_max = float(spread.max())
    return {"slice": i, "lambdas": rounded(self.lam_grid), "coeffs": rounded(self.coeffs),
            "metrics": {m: [_num(v) for v in g[m]] for m in self.metric_names},
            "best": best,
            "diverse": {"indices": [a, b], "lambdas": [rounded(self.lam_grid[a]),
                                                      rounded(self.lam_grid[b])],
                        "coeffs": [rounded(self.coeffs[a]), rounded(self.coeffs[b])],
                        "distance": distance},
            "gallery": {"indices": list(picked.indices), "items": items,
                        "threshold": _num(picked.threshold),
                        "num_candidates": picked.num_candidates,
                        "tolerance_db": self.gallery_tolerance_db},
            "range_max": range_max, "range": data_url(spread, range_max or 1.0),
            "error_scale": self.error_scale(i)}

  def download(self, slice_index, lam=None, fmt="png", kind="recon", coeffs=None):
    """(bytes, content type, file name) of one image of a slice.

    Args:
      slice_index: the slice.
      lam: the λ, for ``recon`` and ``error`` (or ``coeffs``).
      fmt: ``'png'`` (8-bit, [0, 1] grey; |error| on [0, `error_scale`];
        range on [0, its max]) or ``'npy'`` (float32, exact).
      kind: one of `KINDS`.
      coeffs: the loss coefficients, instead of ``lam``.
    """
    i = self.check_slice(slice_index)
    if fmt not in ("png", "npy"):
      raise BadRequest(f"format must be 'png' or 'npy', got {shown(fmt)}")
    if kind not in KINDS:
      raise BadRequest(f"kind must be one of {KINDS}, got {shown(kind)}")
    vmax, stem = 1.0, f"{kind}_slice{i}"
    if kind in ("recon", "error"):
      lam_values, c = self.check_point(lam, coeffs)
      image, _ = self._reconstruction(i, c)
      if coeffs is None:
        stem += "_lam" + "_".join(f"{v:.4g}" for v in lam_values)
      else:
        stem += "_coeffs" + "_".join(f"{v:.4g}" for v in c)
      if kind == "error":
        image, vmax = np.abs(image - self.images[i]), self.error_scale(i)
    elif kind == "range":
      recons = self.grid_reconstructions(i)["recons"]
      image = recons.max(0) - recons.min(0)
      vmax = float(image.max()) or 1.0
    else:
      image = self.images[i] if kind == "truth" else self.zf_mag[i]
    image = np.asarray(image, np.float32)
    if fmt == "png":
      return png_bytes(image, vmax), "image/png", stem + ".png"
    buf = io.BytesIO()
    np.save(buf, image)
    return buf.getvalue(), "application/octet-stream", stem + ".npy"


def _volume_id(v):
  """A volume id for JSON: an int, or the text of a string or bytes id."""
  v = np.asarray(v)
  return int(v) if np.issubdtype(v.dtype, np.integer) else str(v.astype(str))


def _load_split(config, split, with_labels=False):
  """Every valid slice of a split: images (S, H, W), volume ids, slice indices,
  and with ``with_labels`` the true labels (S, H, W) (else None)."""
  from hyperrecon_jax import data
  images, volumes, slices, labels = [], [], [], []
  for batch in data.batches(config.data, split, batch_size=32, training=False):
    valid = np.asarray(batch["valid"], bool)
    images.append(np.asarray(batch["image"], np.float32)[valid])
    if with_labels:
      if "label" not in batch:
        raise InputError(f"the {config.data.name} dataset has no labels: Dice cannot be "
                         "scored")
      labels.append(np.asarray(batch["label"], np.int32)[valid])
    volumes += list(np.asarray(batch["volume"])[valid])
    slices += list(np.asarray(batch["slice"])[valid])
  if not images:
    raise InputError(f"the {split} split has no slices")
  return (np.concatenate(images), volumes, slices,
          np.concatenate(labels) if with_labels else None)
