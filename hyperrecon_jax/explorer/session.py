"""The explorer's state and answers: a model, a split's slices and their λ grids.

`Explorer` answers every API request of `hyperrecon_jax.explorer.server`
with plain dicts (JSON types) or bytes; it is thread-safe.
"""

import collections
import io
import math
import threading

import jax
import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import evaluate as ev
from hyperrecon_jax import grid as grid_lib
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import physics
from hyperrecon_jax import streams
from hyperrecon_jax.errors import InputError
from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import png_bytes

# |error| maps share this grey scale (black 0, white ≥ ERROR_RANGE), so they
# can be compared across λ and slices.
ERROR_RANGE = 0.2
CACHE_BYTES = 256 << 20  # grid reconstructions kept (at least one slice's)
KINDS = ("recon", "error", "range", "truth", "zero_filled")


class BadRequest(InputError):
  """A request parameter is missing or wrong: HTTP 400 with this message."""


def _num(x):
  """A float for JSON: None where not finite (JSON has no inf or NaN)."""
  x = float(x)
  return x if math.isfinite(x) else None


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
def _one(variables, zf, images, index, lam, *, apply_fn):
  """Slice ``index`` at one λ: one generated weight set, an ordinary Unet."""
  coeffs = hparams.coefficients(lam[None])[0]  # (K,): shared weights
  recon = apply_fn(variables, zf[index][None], coeffs)
  target = images[index][None]
  return (recon[0], metrics.psnr(recon, target)[0], metrics.ssim(recon, target)[0],
          metrics.hfen(recon, target)[0])


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
    grid: λ values per hyperparameter (default: the config's ``eval.grid``).

  Raises:
    InputError: a model without λ (a plain Unet), or no slices (a
      ``ValueError`` too).
  """

  def __init__(self, config, model, variables, *, name, step, split="test", images=None,
               slices=None, source=None, chunk=None, seed=None, segmenter=None,
               grid=None):
    if not int(config.model.hyper_dim):
      raise InputError(f"{name} is a plain Unet (hyper_dim 0) trained at one λ: the explorer "
                       "needs a HyperRecon model")
    self.config, self.model, self.variables = config, model, variables
    self.name, self.step = str(name), int(step)
    size = int(config.data.image_size)
    self.operator = physics.make_operator(config.task, (size, size))
    from hyperrecon_jax import train
    self.num_lambdas = train.num_lambdas(config)
    self.grid = int(grid or config.eval.grid)
    self.lam_grid = hparams.grid(self.grid, self.num_lambdas)
    self.coeffs = np.asarray(hparams.coefficients(self.lam_grid))
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
    self._cache, self._lock = collections.OrderedDict(), threading.Lock()

  # --- parameters ---------------------------------------------------------------

  def check_slice(self, index) -> int:
    """``index`` as an int in range, or `BadRequest` naming ``slice``."""
    try:
      i = int(str(index).strip())
    except ValueError:
      raise BadRequest(f"slice must be an integer, got {index!r}") from None
    if not 0 <= i < len(self.images):
      raise BadRequest(f"slice must be in [0, {len(self.images) - 1}], got {i}")
    return i

  def check_lam(self, lam) -> np.ndarray:
    """``lam`` ('a,b' or numbers) as (n,) float32 in [0, 1], or `BadRequest`."""
    parts = str(lam).split(",") if isinstance(lam, str) else list(np.atleast_1d(lam))
    try:
      values = np.array([float(p) for p in parts], np.float64)
    except ValueError:
      raise BadRequest(f"lam must be {self.num_lambdas} comma-separated number(s), "
                       f"got {lam!r}") from None
    if values.shape != (self.num_lambdas,):
      raise BadRequest(f"lam must have {self.num_lambdas} value(s) for this model, got "
                       f"{values.size} ({lam!r})")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
      raise BadRequest(f"lam must lie in [0, 1], got {lam!r}")
    return values.astype(np.float32)

  # --- the API ------------------------------------------------------------------

  def info(self) -> dict:
    """The model, its task, the slices and the λ grid."""
    task = self.config.task
    out = {"model": self.name, "step": self.step, "source": self.source,
           "task": {"name": task.name, "text": task_text(task),
                    "input_name": physics.input_name(task.name)},
           "losses": list(self.config.losses), "image_size": int(self.images.shape[1]),
           "num_slices": len(self.images), "num_lambdas": self.num_lambdas,
           "grid": self.grid, "lambdas": self.lam_grid.tolist(),
           "slices": [{"volume": _volume_id(v), "slice": int(s)}
                      for v, s in zip(self.volumes, self.slices)],
           "metrics": list(self.metric_names), "error_range": ERROR_RANGE}
    if task.name == "csmri":
      out["task"].update(acceleration=float(task.acceleration), mask=str(task.mask),
                         mask_image=data_url(np.asarray(self.operator.mask)))
    elif task.name == "denoise":
      out["task"]["sigma"] = float(task.sigma)
    elif task.name == "superres":
      out["task"]["factor"] = int(task.factor)
    return out

  def reconstruction(self, slice_index, lam):
    """(recon (H, W) float32, {'psnr', 'ssim', 'hfen'}) of a slice at one λ."""
    i, lam = self.check_slice(slice_index), self.check_lam(lam)
    recon, psnr, ssim, hfen = _one(self.variables, self._zf, self._images, i, lam,
                                   apply_fn=self._apply)
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

  def reconstruct(self, slice_index, lam) -> dict:
    """A slice at one λ: its images (PNG data URLs) and metrics."""
    i, lam = self.check_slice(slice_index), self.check_lam(lam)
    recon, scores = self.reconstruction(i, lam)
    truth = self.images[i]
    return {"slice": i, "lam": lam.tolist(), "metrics": scores,
            "images": {"truth": data_url(truth), "zero_filled": data_url(self.zf_mag[i]),
                       "recon": data_url(recon),
                       "error": data_url(np.abs(recon - truth), ERROR_RANGE)}}

  def grid_reconstructions(self, slice_index) -> dict:
    """A slice over the λ grid, cached: ``recons`` (G, H, W) and metrics (G,)."""
    i = self.check_slice(slice_index)
    with self._lock:  # one grid at a time; a second request finds it cached
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
      recons = np.asarray(grid_lib.reconstruct_grid(
          self._apply, self.variables, self._zf[i], self.coeffs, chunk=self.chunk))
      target = np.broadcast_to(self.images[i], recons.shape)
      out = {"recons": recons,
             **{m: np.asarray(getattr(metrics, m)(recons, target), np.float64)
                for m in ("psnr", "ssim", "hfen")}}
      if self.segmenter is not None:
        out["dice"] = self._dice(recons, np.broadcast_to(self.labels[i], recons.shape))
      self._cache[i] = out
      while len(self._cache) > max(1, CACHE_BYTES // recons.nbytes):
        self._cache.popitem(last=False)
    return out

  def curve(self, slice_index) -> dict:
    """Metrics over the λ grid, best λ per metric, the diverse pair, the range map."""
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
      best[m] = {"index": k, "lam": self.lam_grid[k].tolist(), "value": _num(values[k])}
    a, b, distance = ev.diverse_pair(g["recons"], g["psnr"])
    range_max = float(spread.max())
    return {"slice": i, "lambdas": self.lam_grid.tolist(),
            "metrics": {m: [_num(v) for v in g[m]] for m in self.metric_names},
            "best": best,
            "diverse": {"indices": [a, b], "lambdas": [self.lam_grid[a].tolist(),
                                                      self.lam_grid[b].tolist()],
                        "distance": distance},
            "range_max": range_max, "range": data_url(spread, range_max or 1.0)}

  def download(self, slice_index, lam=None, fmt="png", kind="recon"):
    """(bytes, content type, file name) of one image of a slice.

    Args:
      slice_index: the slice.
      lam: the λ (for ``recon`` and ``error``).
      fmt: ``'png'`` (8-bit, [0, 1] grey; |error| on [0, ERROR_RANGE]; range
        on [0, its max]) or ``'npy'`` (float32, exact).
      kind: one of `KINDS`.
    """
    i = self.check_slice(slice_index)
    if fmt not in ("png", "npy"):
      raise BadRequest(f"format must be 'png' or 'npy', got {fmt!r}")
    if kind not in KINDS:
      raise BadRequest(f"kind must be one of {KINDS}, got {kind!r}")
    vmax, stem = 1.0, f"{kind}_slice{i}"
    if kind in ("recon", "error"):
      if lam is None:
        raise BadRequest(f"missing parameter 'lam' (needed for kind={kind})")
      lam = self.check_lam(lam)
      image, _ = self.reconstruction(i, lam)
      stem += "_lam" + "_".join(f"{v:.4g}" for v in lam)
      if kind == "error":
        image, vmax = np.abs(image - self.images[i]), ERROR_RANGE
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
