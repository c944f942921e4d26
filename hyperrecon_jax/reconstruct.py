"""Reconstruct your own scans with a trained model, at any λ.

A NIfTI volume is a ground truth that the model's own task degrades
retrospectively (its k-space mask and noise, its noise, or its downsampling);
a fastMRI ``.h5`` file gives its ``reconstruction_esc``, else
``reconstruction_rss``, else the image of its fully sampled k-space
(`data.fastmri.read_target`), brought to the model's grid and degraded by the
same task. `hyperrecon_jax.scans` reads the file into the model's slices,
`volume` reconstructs them at each λ and puts the reconstructions back on the
input's grid, in the input's intensity units, and `hyperrecon_jax.outputs`
writes them. Since the scan
is its own ground truth, every reconstruction is also scored against it
(`hyperrecon_jax.scan_scores`)::

  scan = hr.reconstruct.read_input("sub-01_T1w.nii.gz", config)
  result = hr.reconstruct.volume(config, model, variables, scan, [[0.0], [0.5]])
  hr.reconstruct.write(result, "sub-01_recon.nii.gz", model=f"NAME (step {step})")

``read_input`` and ``write`` are `scans.read_input` and `outputs.write`, named
here too so that a notebook needs this module only.

λ: (L, K − 1) values in [0, 1] for a model of K loss terms (`as_lambdas`); a
command line gives them as ``--lam`` text, as coefficient vectors on the
simplex (``--coeffs``) or as a design on the simplex (``--samples``), all
through `parse_lambdas`. NIfTI voxels outside the slices' crop box are 0 in
the output, which has the input's orientation, affine and header; an ``.h5``
output is ``reconstruction_hyperrecon`` on the file's image grid.

`volume` refuses an output too large for memory (`volume_memory.check_memory`)
before any model work, and warns (``result['warnings']``) when the output's
intensity cannot be trusted. The measurement noise of slice ``k`` is drawn
from ``fold_in(fold_in(key(seed), 0), k)`` (`evaluate.slice_keys`), so a rerun
gives the same result.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import evaluate
from hyperrecon_jax import grid
from hyperrecon_jax import hparams
from hyperrecon_jax import outputs
from hyperrecon_jax import physics
from hyperrecon_jax import scan_scores
from hyperrecon_jax import scans
from hyperrecon_jax import volume_memory
from hyperrecon_jax.data import slicing
from hyperrecon_jax.scans import Scan
from hyperrecon_jax.train import configuration

read_input = scans.read_input
write = outputs.write

# A reconstruction whose mean foreground intensity is more than this factor
# off the input's does not reproduce the input: on the shipped model's own
# template the ratio stays in [0.83, 0.98] for λ ≤ 0.9 (the data term keeps
# k-space's centre, hence the mean), while slices the model cannot read (a
# 3-voxel strip) give 0.01-0.3.
INTENSITY_FACTOR = 2.0

# Beyond this many λ values even one 64×64 slice's output (16 KiB a λ) is 16 GB.
MAX_LAMBDAS = 1_000_000

# The command line's ways of giving λ (`parse_lambdas`), one per run.
LAMBDA_FLAGS = ("lam", "coeffs", "samples")


def as_lambdas(lambdas, num_lambdas: int, name: str = "λ values") -> np.ndarray:
  """λ values as a checked (L, num_lambdas) float32 array in [0, 1].

  Args:
    lambdas: (L, num_lambdas) values; for one hyperparameter also (L,) or a
      number.
    num_lambdas: the model's number of hyperparameters, K − 1.
    name: what to call them in the messages.

  Raises:
    InputError: a shape that is not the model's, or a value outside [0, 1]
      (`hparams.check_lambda`).
  """
  arr = np.asarray(lambdas, np.float32)
  if num_lambdas == 1 and arr.ndim < 2:
    arr = arr.reshape(-1, 1)
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != num_lambdas:
    raise errors.InputError(
        f"{name} of shape {arr.shape}: the model has {num_lambdas} hyperparameter(s), so "
        f"give (L, {num_lambdas}) λ values (from coefficients: "
        "hparams.lambdas_from_coefficients)")
  hparams.check_lambda(arr, name=name)
  return arr


def parse_lambdas(text, num_lambdas: int, *, flag: str = "lam") -> np.ndarray:
  """The λ values of one of reconstruct.py's flags, checked, as (L, num_lambdas).

  Args:
    text: the flag's value.
    num_lambdas: the model's number of hyperparameters, K − 1.
    flag: which flag, one of `LAMBDA_FLAGS`: ``lam`` (`hparams.parse_lambdas`:
      ``0.3``, ``0,0.5,1``, ``grid:N`` for K ≤ 3, ``a:b:c`` vectors of K − 1
      values); ``coeffs`` (`hparams.parse_coefficients`: ``c1:…:cK`` vectors
      on the simplex, as λ through `hparams.lambdas_from_coefficients`);
      ``samples`` (N: the `hparams.simplex_design` of N points, the K
      vertices first).

  Raises:
    InputError: naming the flag and the bad item, a value outside [0, 1], or
      more than `MAX_LAMBDAS` values (refused before they are built).
  """
  text = str(text).strip()
  name = f"--{flag}={text}"
  if flag == "lam":
    _check_count(text, num_lambdas)
    lambdas = hparams.parse_lambdas(text, num_lambdas, flag="--lam")
  elif flag == "coeffs":
    coeffs = hparams.parse_coefficients(text, num_lambdas + 1, flag="--coeffs")
    lambdas = hparams.lambdas_from_coefficients(coeffs)
  elif flag == "samples":
    lambdas = _design(text, num_lambdas)
  else:
    raise errors.InputError(f"flag={flag!r}: expected one of {', '.join(LAMBDA_FLAGS)}")
  if len(lambdas) > MAX_LAMBDAS:
    raise errors.InputError(f"{name} gives {len(lambdas):,} λ values, more than "
                            f"{MAX_LAMBDAS:,}, each a whole reconstructed volume")
  return as_lambdas(lambdas, num_lambdas, name=f"the λ values of {name}")


def repeated_weightings(lambdas) -> str | None:
  """A note naming the λ that weight the loss as an earlier λ does, or None.

  Each λ gets its volume; a λ given twice, or (three or more terms) one
  that differs only after a λ_k = 1, where the later λ do not count
  (`hparams.distinct`), repeats an earlier reconstruction.

  Args:
    lambdas: (L, K − 1) λ values.
  """
  lambdas = np.asarray(lambdas)
  kept = hparams.distinct(lambdas)
  if len(kept) == len(lambdas):
    return None
  repeats = sorted(set(range(len(lambdas))) - set(kept.tolist()))
  shown = ", ".join(":".join(f"{float(v):g}" for v in lambdas[i]) for i in repeats[:3])
  more = f" and {len(repeats) - 3} more" if len(repeats) > 3 else ""
  keys = [hparams.weighting(row) for row in lambdas]
  twice = all(any(np.array_equal(lambdas[i], lambdas[j]) for j in kept if keys[j] == keys[i])
              for i in repeats)
  why = "" if twice else " (where λ_k = 1 the later λ do not count)"
  return (f"the {len(lambdas)} λ hold {len(kept)} distinct loss weightings{why}: the volumes "
          f"at λ = {shown}{more} repeat an earlier one")


def _check_count(text: str, num_lambdas: int) -> None:
  """Refuses a ``grid:N`` or ``samples:N`` too large to build, or a grid beyond K = 3."""
  form, _, number = text.partition(":")
  if form not in ("grid", "samples") or not number.strip().isdigit():
    return  # `hparams.parse_lambdas` names what is wrong with the rest
  if form == "grid" and num_lambdas > 2:
    raise errors.InputError(
        f"--lam={text}: grids stop at two hyperparameters and this model has {num_lambdas} "
        f"({num_lambdas + 1} loss terms); give --samples=N for N points of a design on the "
        f"simplex, or vectors of {num_lambdas} values, e.g. --lam="
        + ":".join(["0.5"] * num_lambdas))
  n = int(number)
  count = n ** num_lambdas if form == "grid" else n
  if count > MAX_LAMBDAS:
    size = f"{n}^{num_lambdas} = {count:,}" if count != n else f"{count:,}"
    raise errors.InputError(
        f"--lam={text} gives {size} λ values, more than {MAX_LAMBDAS:,}, each a whole "
        "reconstructed volume; give a smaller N")


def _design(text: str, num_lambdas: int) -> np.ndarray:
  """The λ of ``--samples=N``: `hparams.simplex_design` (N, K), the vertices first."""
  n = hparams.flags.parse_count(text, f"--samples={text}: N")
  if n > MAX_LAMBDAS:
    raise errors.InputError(f"--samples={text} gives {n:,} λ values, more than "
                            f"{MAX_LAMBDAS:,}, each a whole reconstructed volume; give a "
                            "smaller N")
  try:
    design = hparams.simplex_design(n, num_lambdas + 1)
  except errors.InputError as err:
    raise errors.InputError(f"--samples={text}: {err}") from None
  return np.asarray(hparams.lambdas_from_coefficients(design))


def measure(config, scan: Scan, *, seed: int = 0):
  """The model's zero-filled input of every slice, (S, size, size, 2)."""
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  keys = evaluate.slice_keys(jax.random.key(int(seed)), np.zeros(len(scan.slices), int),
                             scan.slices)
  return evaluate.measure_slices(operator, jnp.asarray(scan.images), keys)


def reconstruct_slices(model, variables, zf, lambdas, *, batch: int = 8,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
  """Reconstructs every slice at every λ (`grid.reconstruct_grid`, λ-major).

  Each λ generates one set of Unet weights that a whole batch shares, so the
  cost is that of a plain Unet per slice.

  Args:
    model: the model (`pretrained.load` / `train.load_trained`).
    variables: its variables.
    zf: (S, H, W, 2) zero-filled inputs.
    lambdas: (L, K − 1) λ values.
    batch: slices per call; the last batch is padded (one compiled shape).
    progress: called with the number of slices done after each batch.

  Returns:
    (L, S, H, W) float32 reconstructions.
  """
  coeffs = hparams.coefficients(jnp.asarray(lambdas, jnp.float32))
  return np.stack(list(_each_coefficient(model, variables, zf, coeffs, batch=batch,
                                         progress=progress)))


def _each_coefficient(model, variables, zf, coeffs, *, batch: int, progress=None):
  """`reconstruct_slices` one λ at a time: yields (S, H, W) float32 for each row of coeffs.

  Every call is one λ and one batch of slices, so one compiled grid program
  serves the whole volume, progress is reported per batch, and only one λ's
  slices are held at a time.
  """
  zf = jnp.asarray(zf, jnp.float32)
  n = zf.shape[0]
  batch = max(1, min(int(batch), n))
  for c in np.asarray(coeffs, np.float32):
    out = np.empty((n,) + tuple(zf.shape[1:3]), np.float32)
    for start in range(0, n, batch):
      # Padded with the first slices: one compiled shape for the last batch
      # too. Cut per call, so that the slices are not held twice.
      block = zf[np.arange(start, start + batch) % n]
      recon = grid.reconstruct_grid(model, variables, block, c[None], chunk=batch,
                                    order="lambda")
      out[start:start + batch] = np.asarray(recon[:, 0])[:n - start]
      if progress is not None:
        progress(min(batch, n - start))
    yield out


def put_back(scan: Scan, squares) -> np.ndarray:
  """Model-grid slices back on the input's grid, in the input's units.

  Args:
    scan: the `Scan` the slices came from.
    squares: (S, size, size) one value per slice of ``scan``.

  Returns:
    NIfTI: the volume in the input's own voxel order (not RAS), voxels outside
    the crop box 0. ``.h5``: (S, H, W) on the image grid.
  """
  squares = np.asarray(squares, np.float32)
  if scan.kind == "h5":
    shape = scan.grid_shape[1:]
    return np.stack([slicing.unfit_from_square(s, shape) for s in squares]) * scan.scale
  r0, r1, c0, c1 = scan.box
  others = [n for a, n in enumerate(scan.grid_shape) if a != scan.axis]
  planes = np.zeros((scan.grid_shape[scan.axis], *others), np.float32)
  oriented = np.zeros(slicing.orient(planes[0]).shape, np.float32)
  for k, square in zip(scan.slices, squares):
    oriented[:] = 0
    oriented[r0:r1, c0:c1] = slicing.unfit_from_square(square, (r1 - r0, c1 - c0),
                                                      scan.plane_spacing)
    planes[k] = np.rot90(oriented, -1)  # undoes `slicing.orient`
  ras = np.moveaxis(planes, 0, scan.axis)
  ras *= scan.scale  # in place: a volume can take much of the memory
  return scans.ras_to_input(scan.nifti, ras)


def intensity_warnings(scan: Scan, lambdas, recon) -> list[str]:
  """Says when the reconstructions' intensity is not the input's.

  Compares each reconstruction's mean over the foreground (`Scan.foreground`)
  with the input's (`Scan.reference`); more than `INTENSITY_FACTOR` off means
  the model did not reproduce this input at that λ.

  Args:
    scan: the `Scan`.
    lambdas: (L, K − 1) λ values.
    recon: (L, *output_shape) reconstructions.

  Returns:
    At most one line.
  """
  if scan.foreground is None or not scan.foreground.any() or not scan.reference > 0:
    return []
  ratios = np.array([scan.foreground_mean(r) for r in recon]) / scan.reference
  off = ~((ratios >= 1 / INTENSITY_FACTOR) & (ratios <= INTENSITY_FACTOR))
  if not off.any():
    return []
  band = f"outside [{1 / INTENSITY_FACTOR:g}, {INTENSITY_FACTOR:g}]"
  lo, hi = ratios[off].min(), ratios[off].max()
  spread = f"{lo:.2g}×" if np.isclose(lo, hi, rtol=0.05) else f"{lo:.2g}× to {hi:.2g}×"
  if off.all():
    where = "at every λ" if len(ratios) > 1 else (
        f"at λ = {':'.join(f'{v:g}' for v in lambdas[0])}")
    return [f"{where} the reconstruction's mean intensity in the foreground is {spread} the "
            f"input's ({band}): the output's intensity cannot be trusted; the model does not "
            "reproduce this scan (see "
            f"{'the warnings above and ' if scan.warnings else ''}the notes on slicing and "
            "resolution)"]
  shown = ", ".join(":".join(f"{v:g}" for v in lam) for lam in np.asarray(lambdas)[off][:5])
  more = f" and {int(off.sum()) - 5} more" if off.sum() > 5 else ""
  return [f"at λ = {shown}{more} the reconstruction's mean intensity in the foreground is "
          f"{spread} the input's ({band}, unlike at the other λ values): there the "
          "output's intensity is not the input's"]


def _check_finite(square, lam) -> None:
  """Refuses a λ's model-grid slices holding NaN or ±inf, before anything is written.

  Put back on the input's grid they would make a volume of NaN, which the
  scores (its means left out as not finite) and the intensity check do not
  name.
  """
  bad = ~np.isfinite(square)
  if bad.any():
    slices = int(bad.any(axis=(1, 2)).sum())
    raise errors.InputError(
        f"the model's reconstruction at λ = {':'.join(f'{v:g}' for v in np.atleast_1d(lam))} "
        f"is not finite in {int(bad.sum()):,} of {bad.size:,} values, on {slices} of "
        f"{len(square)} slices: the model diverged or overflows on this scan; nothing was "
        "written")


def volume(config, model, variables, scan: Scan, lambdas, *, seed: int = 0,
           batch: int | None = None, save_input: bool = False,
           progress: Callable[[int], None] | None = None, dtype: str = "float32",
           available: int | None = None) -> dict:
  """Reconstructs a scan at each λ and puts the result on its grid.

  Args:
    config: the model's config.
    model: the model.
    variables: the model's variables.
    scan: from `read_input`.
    lambdas: (L, K − 1) λ values in [0, 1] (`as_lambdas`).
    seed: the measurement noise's seed.
    batch: slices per call (default ``config.eval.chunk``).
    save_input: also put back the zero-filled input's magnitude.
    progress: called with the number of slices done, L times over the scan.
    dtype: the output's value type, one of `outputs.DTYPES`
      (`outputs.output_dtype`).
    available: bytes of memory available (`volume_memory.check_memory`).

  Returns:
    A dict: ``scan``, ``lambdas`` (L, K − 1), ``coeffs`` (L, K) the loss
    coefficients the model was given, ``loss_terms`` (the K names),
    ``recon`` (L, *output_shape), ``zero_filled`` (one volume, or None),
    ``seed``, ``dtype`` (the name of the written type), ``warnings`` (lines:
    `Scan.warnings` and `intensity_warnings`), ``scores`` (each λ's
    reconstruction and the zero-filled input scored against the scan on the
    model's grid, `scan_scores.summarize`).

  Raises:
    InputError: a plain Unet, bad λ values, a bad ``dtype``, or an output
      too large for memory, all before any model work; or a reconstruction
      that is not finite (NaN or ±inf).
  """
  if not config.model.hyper_dim:
    raise errors.InputError(f"this is {configuration.describe_model(config)}: reconstruct "
                            "needs a HyperRecon model")
  lambdas = as_lambdas(lambdas, configuration.num_lambdas(config))
  out_dtype = outputs.output_dtype(scan, dtype)
  volume_memory.check_memory(scan, len(lambdas), out_dtype, save_input=save_input,
                             working=volume_memory.working_memory(config, scan, batch),
                             available=available)
  store = outputs.storage_dtype(out_dtype)
  coeffs = np.asarray(hparams.coefficients(lambdas))
  zf = measure(config, scan, seed=seed)
  # One λ at a time, straight into the output: the model-grid slices of every
  # λ at once would need as much memory again.
  recon = np.empty((len(lambdas),) + scan.output_shape, store)
  squares = _each_coefficient(model, variables, zf, coeffs,
                              batch=batch or int(config.eval.chunk), progress=progress)
  scored, which = scan_scores.scored_slices(scan)
  target = scan.images[scored]
  per_lambda = []
  for i, square in enumerate(squares):
    _check_finite(square, lambdas[i])
    recon[i] = put_back(scan, square)
    per_lambda.append(scan_scores.moments(scan_scores.slice_scores(square[scored], target)))
  magnitude = np.sqrt(np.sum(np.square(np.asarray(zf)), axis=-1))
  scores = scan_scores.summarize(
      per_lambda, scan_scores.moments(scan_scores.slice_scores(magnitude[scored], target)),
      lambdas, len(scored), which)
  zero_filled = put_back(scan, magnitude).astype(store, copy=False) if save_input else None
  warnings = list(scan.warnings) + intensity_warnings(scan, lambdas, recon)
  return {"scan": scan, "lambdas": lambdas, "coeffs": coeffs,
          "loss_terms": tuple(config.losses), "recon": recon, "zero_filled": zero_filled,
          "seed": int(seed), "dtype": out_dtype.name, "warnings": warnings,
          "scores": scores}
