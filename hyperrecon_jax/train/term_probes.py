"""Loss terms of one's own, known by their values on a fixed probe.

A run stores the names of its loss terms (``config.losses``); the function
behind a name of one's own comes from a module (``config.extensions``) that
can change after training. Training records each such term's values on a
fixed probe (``config.term_probes``: name → the values of a batch of two),
and every later load of the run computes them again: a term whose values
now differ computes something else than what the run was trained and
scored on, and is refused by name rather than giving numbers that mean
something else. Built-in terms are not probed: they change only with the
package, whose tests hold their values.

The probe is a deterministic function of the run's task and image size:
NumPy's PCG64 images, the task's operator, a threefry key, and for a term of
the weights a pytree shaped like the model's generated weights. It is
evaluated on the CPU, eagerly, so a run trained on a GPU is checked against
the same arithmetic wherever it loads (on the default device only in a
process started without a CPU backend, ``JAX_PLATFORMS=cuda``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib

FIELD = "term_probes"
BATCH = 2
_SEED = 20_261_207
# The same float32 term on another CPU differs by the order of its sums
# (SIMD widths): a few float32 ulps times log2 of the pixels summed, under
# 1e-5 relative for the 256² × 2 values of the largest probe. A changed
# formula moves a value by far more than 1e-3 of itself; values below ATOL
# are compared absolutely, as a term near 0 has no relative digits to keep.
RTOL = 1e-3
ATOL = 1e-6


def own_terms(config) -> tuple[str, ...]:
  """The terms of ``config.losses`` registered by a module of one's own."""
  return tuple(n for n in config.losses if n not in losses.BUILT_IN)


def _as_stored(value: float):
  """A float for JSON: a non-finite value as its name, which strict JSON lacks."""
  return value if math.isfinite(value) else repr(value)


def _probe_inputs(config, names):
  """The probe batch: (recon, target, operator, measurement, weights or None)."""
  size = int(config.data.image_size)
  rng = np.random.default_rng(_SEED)
  target = rng.random((BATCH, size, size), dtype=np.float32)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape, dtype=np.float32), 0, 1)
  operator = physics.make_operator(config.task, (size, size))
  measurement = operator.measure(jnp.asarray(target), jax.random.key(_SEED))
  weights = None
  if any(n in losses.NEEDS_WEIGHTS for n in names):
    model = state_lib.build_model(config)
    k = configuration.num_coeffs(config)
    zf = jax.ShapeDtypeStruct((BATCH, size, size, 2), jnp.float32)
    coeffs = hparams.coefficients(jnp.full((BATCH, k - 1), 0.5))
    variables = jax.eval_shape(model.init, jax.random.key(_SEED), zf, coeffs)
    shapes = jax.eval_shape(
        lambda v, z: model.apply(v, z, coeffs, train=False, return_weights=True)[1],
        variables, zf)
    weights = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32) * 0.1), shapes)
  return jnp.asarray(recon), jnp.asarray(target), operator, measurement, weights


def _cpu():
  """The CPU device, or None (the default device) in a process started without one."""
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS=cuda: the one backend there is
    return None


def probe(config) -> dict[str, list]:
  """Each own term's values on the probe: what training records in ``config.term_probes``.

  Args:
    config: a full experiment config whose ``extensions`` are imported.

  Returns:
    ``{name: [BATCH values]}`` for every term of `own_terms`; a non-finite
    value is stored as its name (``'nan'``, ``'inf'``). Empty for a run of
    built-in terms alone.

  Raises:
    InputError: a term raised on the probe (`losses.call_term` names it).
  """
  names = own_terms(config)
  if not names:
    return {}
  with jax.default_device(_cpu()):
    recon, target, operator, measurement, weights = _probe_inputs(config, names)
    return {n: [_as_stored(float(v)) for v in np.asarray(losses.call_term(
        n, recon, target, operator=operator, measurement=measurement, weights=weights))]
            for n in names}


def recorded(config):
  """A copy of ``config`` with its own terms' probe values in ``config.term_probes``."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config[FIELD] = probe(config)
  return config


def differences(stored: dict, now: dict) -> list[str]:
  """The terms whose probe values differ beyond `RTOL`/`ATOL`, each in words."""
  out = []
  for name, values in stored.items():
    if name not in now:
      continue
    then_, now_ = (np.asarray([float(v) for v in vs], np.float64) for vs in (values, now[name]))
    if then_.shape != now_.shape or not np.allclose(now_, then_, rtol=RTOL, atol=ATOL,
                                                   equal_nan=True):
      out.append(f"{name!r} gives {now_.tolist()} on the probe, where the run recorded "
                 f"{then_.tolist()}")
  return out


def check(config, stored: dict | None = None, where: str = "the run", *,
          now: dict | None = None) -> None:
  """Refuses a run whose own loss terms compute other values than when it was trained.

  Args:
    config: the run's config, its extensions imported.
    stored: the recorded probe values; default ``config.term_probes``
      (absent or empty for a run of built-in terms, or one older than the
      record: nothing to check).
    where: the run or model, for the message.
    now: the terms' values on the probe in this process, when already
      computed (`recorded`); default `probe` of ``config``.

  Raises:
    ConfigError: a term's values differ, or it raises on the probe.
  """
  stored = config.get(FIELD) if stored is None else stored
  if not stored:
    return
  stored = dict(stored)
  try:
    now = probe(config) if now is None else dict(now)
  except Exception as e:  # the user's module raised: named as a changed term
    raise configuration.ConfigError(
        f"{where} recorded its own loss terms' values on a fixed probe, and computing them "
        f"again failed ({' '.join(str(e).split())[:300]}): the module of "
        f"config.extensions {tuple(config.get('extensions', ()))} changed since training"
    ) from None
  diffs = differences(stored, now)
  if diffs:
    modules = tuple(config.get("extensions", ()))
    raise configuration.ConfigError(
        f"{where} was trained with other loss terms under the same names: "
        + "; ".join(diffs) + f". A module of config.extensions {modules} changed since "
        "training, so the run's numbers would mean something else: make the module that "
        "trained the run importable again, or register the new formula under a new name "
        "and train again")
