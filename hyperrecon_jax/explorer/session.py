"""The explorer's state and answers: a model, its slices, and the λ set it scores.

`Explorer` answers every API request of `hyperrecon_jax.explorer.server`
with plain dicts (JSON types) or bytes; it is thread-safe. The request's
parameters are checked by `request_params`, the λ set is `lambda_set`'s,
reconstructions are scored by `scoring`, each slice's λ set is kept by
`grid_cache` and summarised by `curves`.

A model of K loss terms has K − 1 hyperparameters λ, or equivalently K
coefficients c on the simplex (`hparams.coefficients`); a request may give
either.
"""

import io
import re
import threading

import jax
import numpy as np

from hyperrecon_jax import grid as grid_lib
from hyperrecon_jax import physics
from hyperrecon_jax.errors import InputError
from hyperrecon_jax.explorer import curves
from hyperrecon_jax.explorer import request_params
from hyperrecon_jax.explorer import scoring
from hyperrecon_jax.explorer import slices as slices_lib
from hyperrecon_jax.explorer.grid_cache import GridCache
from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import png_bytes
from hyperrecon_jax.explorer.images import white_level
from hyperrecon_jax.explorer.json_numbers import finite_or_none
from hyperrecon_jax.explorer.json_numbers import rounded
from hyperrecon_jax.explorer.lambda_set import lambda_set
from hyperrecon_jax.explorer.task_info import task_info
from hyperrecon_jax.train import configuration

# |error| images of a slice share one grey scale, white at this percentile of
# the slice's |error| at the simplex's vertices and centre (`Explorer.error_scale`):
# comparable across λ, and neither saturated on a poor slice nor black on a
# good one, as a fixed white level is.
ERROR_PERCENTILE = 99.0
# The gallery of a config without eval.gallery_size / eval.gallery_tolerance_db:
# this many diverse reconstructions within this many dB of the best PSNR.
GALLERY_SIZE = 4
GALLERY_TOLERANCE_DB = 1.0


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
    slices: the slice indices of ``images`` (default 0…S−1); with ``seed``
      they key each slice's measurement noise, as `experiments/reconstruct.py` does.
    slice_numbers: what the page numbers the slices (default: ``slices``),
      e.g. a NIfTI file's own voxel indices (`scans.Scan.input_slices`).
    source: what the slices are, for the page (default: the split's name).
    volume_name: the file ``images`` come from, which the page names each
      slice by (default: none, "volume 0").
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
      `lambda_set.DESIGN_SIZE`).
    gallery_size: diverse good reconstructions per slice (`gallery.diverse`;
      default: the config's ``eval.gallery_size``, as the report's gallery).
    gallery_tolerance_db: how far below a slice's best PSNR they may be
      (default: the config's ``eval.gallery_tolerance_db``).

  Raises:
    InputError: a model without λ (a plain Unet), no slices, ``grid`` for
      K ≥ 4 or ``design`` for K ≤ 3 terms (a ``ValueError`` too).
  """

  def __init__(self, config, model, variables, *, name, step, split="test", images=None,
               slices=None, slice_numbers=None, source=None, chunk=None, seed=None,
               segmenter=None, grid=None, design=None, gallery_size=None,
               gallery_tolerance_db=None, volume_name=None):
    if not int(config.model.hyper_dim):
      raise InputError(f"{name} is {configuration.describe_model(config)}: the explorer "
                       "needs a HyperRecon model")
    self.config, self.model, self.variables = config, model, variables
    self.name, self.step = str(name), int(step)
    size = int(config.data.image_size)
    self.operator = physics.make_operator(config.task, (size, size))
    from hyperrecon_jax import train
    self.num_coeffs = train.num_coeffs(config)
    self.num_lambdas = self.num_coeffs - 1
    self.losses = tuple(str(n) for n in config.losses)
    self.lambda_set = lambda_set(config, self.num_coeffs, name=self.name, grid=grid, design=design)
    self.grid, self.design = self.lambda_set.grid, self.lambda_set.design
    self.lam_grid, self.coeffs = self.lambda_set.lambdas, self.lambda_set.coeffs
    evals = config.get("eval") or {}
    self.gallery_size = int(gallery_size or evals.get("gallery_size", GALLERY_SIZE))
    self.gallery_tolerance_db = float(evals.get("gallery_tolerance_db", GALLERY_TOLERANCE_DB)
                                      if gallery_tolerance_db is None else gallery_tolerance_db)
    self.chunk = grid_lib.check_chunk(chunk)
    self.segmenter, self.labels = segmenter, None
    self.metric_names = scoring.METRICS + (("dice",) if segmenter else ())
    if segmenter is not None:
      from hyperrecon_jax import segmenter_files
      if images is not None:
        raise InputError("Dice needs the true labels of a dataset split: a segmenter does "
                         "not apply to a user's images")
      segmenter_files.check_data(segmenter, config.data, self.name, split)
    self._load_slices(split, images, slices, source, seed, volume_name)
    self.slice_numbers = (list(self.slices) if slice_numbers is None
                          else [int(n) for n in slice_numbers])
    if len(self.slice_numbers) != len(self.slices):
      raise InputError(f"slice_numbers has {len(self.slice_numbers)} entries for "
                       f"{len(self.slices)} slices")
    self._grids = GridCache()
    # Guards `_error_scales` and `_not_finite` only: a slice's probes are
    # computed outside it, and a second request for a slice being probed
    # computes the same values again.
    self._lock = threading.Lock()
    self._error_scales = {}
    self._not_finite = {}

  def _load_slices(self, split, images, slices, source, seed, volume_name):
    """Sets the slices (a split's, or ``images``), their source and their network inputs."""
    from_split = images is None
    self.volume_names = {}
    if from_split:
      images, volumes, slices, self.labels = slices_lib.load_split(
          self.config, split, self.segmenter is not None)
      # The split the model learned from is served as asked, and said to be on the page.
      learned = (" (the split the model learned from: its scores are not held out)"
                 if split == "train" else "")
      self.source = source or f"{self.config.data.name} {split} split{learned}"
      from hyperrecon_jax import data
      self.volume_names = {v.id: v.name for v in data.volumes(self.config.data, split)}
    else:
      images, volumes, slices = slices_lib.user_slices(
          images, int(self.config.data.image_size), slices)
      self.source = source or "user input"
      if volume_name is not None:
        self.volume_names = {slices_lib.volume_id(v): str(volume_name) for v in volumes}
    if len(images) == 0:
      raise InputError(f"no slices to explore in {self.source}")
    self.images, self.volumes, self.slices = images, list(volumes), list(slices)
    self._zf = slices_lib.measure(self.config, self.operator, images, volumes, slices,
                                  seed=seed, from_split=from_split)
    self._images = jax.numpy.asarray(images)
    self.zf_mag = np.asarray(physics.magnitude(self._zf))

  # --- parameters ---------------------------------------------------------------

  def check_slice(self, index) -> int:
    """``index`` as an int in range, or `BadRequest` naming ``slice``."""
    return request_params.check_slice(index, len(self.images))

  def check_point(self, lam=None, coeffs=None):
    """``(lam (K−1,), coeffs (K,))`` of a request's ``lam`` or ``coeffs``.

    See `request_params.check_point`.
    """
    return request_params.check_point(lam, coeffs, self.losses)

  # --- the API ------------------------------------------------------------------

  def info(self) -> dict:
    """The model, its task and loss terms, the slices and the λ set."""
    return {"model": self.name, "step": self.step, "source": self.source,
            "task": task_info(self.config.task, self.operator),
            "losses": list(self.losses), "num_coeffs": self.num_coeffs,
            "image_size": int(self.images.shape[1]),
            "num_slices": len(self.images), "num_lambdas": self.num_lambdas,
            "lambda_set": "grid" if self.grid else "simplex_design",
            "grid": self.grid, "design": self.design,
            "lambdas": rounded(self.lam_grid), "coeffs": rounded(self.coeffs),
            "slices": [self._slice_info(v, s)
                       for v, s in zip(self.volumes, self.slice_numbers)],
            "metrics": list(self.metric_names), "error_percentile": ERROR_PERCENTILE,
            "gallery_size": self.gallery_size,
            "gallery_tolerance_db": self.gallery_tolerance_db}

  def _slice_info(self, volume, number) -> dict:
    """A slice's volume id, its number, and its volume's file where a dataset names it."""
    out = {"volume": slices_lib.volume_id(volume), "slice": int(number)}
    if out["volume"] in self.volume_names:
      out["name"] = self.volume_names[out["volume"]]
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
    recon, psnr, ssim, hfen = scoring.score_point(
        self.model, self.variables, self._zf[i], self._images[i],
        np.asarray(coeffs, np.float32))
    scores = {"psnr": finite_or_none(psnr), "ssim": finite_or_none(ssim),
              "hfen": finite_or_none(hfen)}
    if self.segmenter is not None:
      scores["dice"] = finite_or_none(
          scoring.dice(self.segmenter, recon[None], self.labels[i][None])[0])
    return np.asarray(recon), scores

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
    return self._probe(slice_index)[0]

  def not_finite_points(self, slice_index) -> list:
    """The loss coefficients, of the points `error_scale` probes (each term alone
    and the simplex's centre), at which the slice's reconstruction is not finite.

    A model that diverged is served all the same, its images black and its
    metrics n/a: ``explore.py`` probes the first slice at start-up to say so.
    """
    return self._probe(slice_index)[1]

  def _probe(self, slice_index):
    """(`error_scale`, `not_finite_points`) of a slice, computed once."""
    i = self.check_slice(slice_index)
    with self._lock:
      if i in self._error_scales:
        return self._error_scales[i], self._not_finite[i]
    k = self.num_coeffs
    probes = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k)]).astype(np.float32)
    recons = np.stack([self._reconstruction(i, c)[0] for c in probes])
    not_finite = [rounded(c) for c, r in zip(probes, recons) if not np.all(np.isfinite(r))]
    # A NaN pixel must not make the scale NaN.
    errors = np.nan_to_num(np.abs(recons - self.images[i]), nan=0.0)
    scale = min(float(np.percentile(errors, ERROR_PERCENTILE)) or float(errors.max()) or 1.0,
                1.0)
    with self._lock:  # a concurrent request may have stored the same values
      self._error_scales[i], self._not_finite[i] = scale, not_finite
    return scale, not_finite

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
    at a time (`grid_cache.GridCache`).
    """
    return self._grids.get(self.check_slice(slice_index), self._compute_grid)

  def _compute_grid(self, i) -> dict:
    """Slice ``i`` over the λ set: ``recons`` (G, H, W) and each metric (G,)."""
    labels = None if self.labels is None else self.labels[i]
    return scoring.score_grid(self.model, self.variables, self._zf[i], self.images[i],
                              self.coeffs, chunk=self.chunk, segmenter=self.segmenter,
                              labels=labels)

  def curve(self, slice_index) -> dict:
    """Metrics over the λ set, best point per metric, the diverse pair and gallery, the range.

    Returns:
      ``slice``; ``lambdas`` (G, K−1) and ``coeffs`` (G, K) of the λ set;
      ``metrics`` {name: (G,)}; ``best`` {name: {index, lam, coeffs, value}}
      (None for a metric that is NaN everywhere); ``diverse``: the paper's
      Fig. 7 pair (`evaluate.diverse_pair`); ``gallery``: up to
      ``gallery_size`` good and mutually different reconstructions
      (`gallery.diverse`), each with its point, metrics and image; ``range``
      (max − min over the set, white at ``range_max``); ``error_scale``
      (`error_scale`). See `curves.summary`.
    """
    i = self.check_slice(slice_index)
    g = self.grid_reconstructions(i)
    return {"slice": i,
            **curves.summary(g, self.lambda_set, self.metric_names, gallery_size=self.gallery_size,
                             gallery_tolerance_db=self.gallery_tolerance_db),
            "error_scale": self.error_scale(i)}

  def slice_label(self, slice_index) -> str:
    """A file-name part naming a slice as the page numbers it: ``slice80``, or
    ``volume3_slice80`` when the slices come from several volumes."""
    number = f"slice{self.slice_numbers[slice_index]}"
    if len({slices_lib.volume_id(v) for v in self.volumes}) < 2:
      return number
    volume = re.sub(r"[^A-Za-z0-9._-]+", "_", str(slices_lib.volume_id(
        self.volumes[slice_index])))
    return f"volume{volume}_{number}"

  def download(self, slice_index, lam=None, fmt="png", kind="recon", coeffs=None):
    """(bytes, content type, file name) of one image of a slice.

    Args:
      slice_index: the slice.
      lam: the λ, for ``recon`` and ``error`` (or ``coeffs``).
      fmt: ``'png'`` (8-bit, [0, 1] grey; |error| on [0, `error_scale`];
        range on [0, its max]) or ``'npy'`` (float32, exact).
      kind: one of `request_params.KINDS`.
      coeffs: the loss coefficients, instead of ``lam``.
    """
    i = self.check_slice(slice_index)
    request_params.check_download(fmt, kind)
    vmax, stem = 1.0, f"{kind}_{self.slice_label(i)}"
    if kind in ("recon", "error") or lam is not None or coeffs is not None:
      # Checked for every kind: a malformed λ is a mistake even where unused.
      lam_values, c = self.check_point(lam, coeffs)
    if kind in ("recon", "error"):
      image, _ = self._reconstruction(i, c)
      # The shortest digits that give the float32 back: two λ never share a file name.
      shortest = lambda values: "_".join(
          np.format_float_positional(v, unique=True, trim="-") for v in np.float32(values))
      stem += "_lam" + shortest(lam_values) if coeffs is None else "_coeffs" + shortest(c)
      if kind == "error":
        image, vmax = np.abs(image - self.images[i]), self.error_scale(i)
    elif kind == "range":
      image = curves.spread(self.grid_reconstructions(i)["recons"])
      vmax = white_level(image)
    else:
      image = self.images[i] if kind == "truth" else self.zf_mag[i]
    image = np.asarray(image, np.float32)
    if fmt == "png":
      return png_bytes(image, vmax), "image/png", stem + ".png"
    buf = io.BytesIO()
    np.save(buf, image)
    return buf.getvalue(), "application/octet-stream", stem + ".npy"
