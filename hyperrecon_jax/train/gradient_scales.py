"""Loss scales that match the terms' gradients instead of their values.

The paper scales each term by its value at the single-term Unet (α_k = 1/s_k,
`baselines.compute_loss_scales`) and names matching the terms' *gradients* as
the alternative (§7). Here s_k is chosen so that every scaled term pulls on the
parameters with the same strength when training starts::

    g_k = mean over batches of ‖∇_θ mean_batch(term_k)‖₂      (θ at initialization)
    s_k = s_1 · g_k / g_1

The first term keeps its configured scale; the others follow it. Adam is
invariant to a common factor of the loss, so only the ratios s_k / s_1 change
training. θ is the run's own initialization (``streams.key(config, 'init')``),
BatchNorm is in training mode as in a training step, and the batches are the
first ones of the validation split, measured with noise drawn from the
validation stream (``streams.key(config, 'validation')`` folded with the
batch index), so the result is reproducible.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax import streams
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.train import config_checks
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib


@functools.partial(jax.jit, static_argnames=("model", "names"))
def _term_gradient_norms(model, operator, variables, image, key, coeffs, *, names):
  """‖∇_θ mean(term_k)‖₂ for every term of ``names``, on one batch."""
  y = operator.measure(image, key)
  zf = operator.zero_filled(y)
  rows = jnp.broadcast_to(coeffs, (image.shape[0], coeffs.shape[-1]))

  def term(params, name):
    # One term per gradient: a term whose derivative is infinite would make
    # every other term's gradient NaN through its zero cotangent (0 · ∞), and
    # the error would name the wrong term.
    needs_weights = name in losses.NEEDS_WEIGHTS
    out, _ = model.apply({**variables, "params": params}, zf, rows, train=True,
                         return_weights=needs_weights, mutable=["batch_stats"])
    recon, weights = out if needs_weights else (out, None)
    terms = losses.compute_terms((name,), recon, image, operator=operator,
                                 measurement=y, weights=weights)
    return jnp.mean(terms[:, 0])

  def norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))

  return jnp.stack([norm(jax.grad(term)(variables["params"], name)) for name in names])


def gradient_scales(config, *, num_batches: int = 8) -> dict:
  """Measures the gradient-matched loss scales of ``config`` (module docstring).

  Args:
    config: a full experiment config (a HyperRecon model or a plain Unet).
    num_batches: validation batches of ``config.train.batch_size`` averaged.

  Returns:
    ``{'losses': [K names], 'lambda': the λ the terms are measured at,
    'num_batches': batches used, 'gradient_norms': [K] mean norms g_k,
    'loss_scales': [K] s_k}``.

  Raises:
    ConfigError: an impossible config.
    InputError: ``num_batches`` < 1, or a term whose gradient is zero or not
      finite (it cannot be matched).
  """
  from hyperrecon_jax import data
  config_checks.check_config(config)
  if num_batches < 1:
    raise errors.InputError(f"num_batches must be ≥ 1, got {num_batches}")
  names = tuple(config.losses)
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  model = state_lib.build_model(config)
  state = state_lib.create_state(config, model, streams.key(config, "init"))
  variables = state.variables()
  # The middle of the λ range: at the paper's initialization the generated
  # weights depend on λ, and the middle stands for the whole range.
  lam = jnp.full((configuration.num_lambdas(config),), 0.5, jnp.float32)
  coeffs = hparams.coefficients(lam[None])
  batches = data.batches(config.data, "validation",
                         batch_size=int(config.train.batch_size), training=False)
  key = streams.key(config, "validation")
  norms = []
  for i, batch in zip(range(num_batches), batches):
    # The split's last batch is padded with empty images (`valid` False): in
    # the mean they would shrink every gradient, and they would join
    # BatchNorm's batch.
    image = jnp.asarray(np.asarray(batch["image"])[np.asarray(batch["valid"], bool)],
                        jnp.float32)
    norms.append(np.asarray(_term_gradient_norms(
        model, operator, variables, image, jax.random.fold_in(key, i), coeffs,
        names=names), np.float64))
  g = np.mean(norms, axis=0)
  for name, value in zip(names, g):
    if not np.isfinite(value) or value <= 0:
      raise errors.InputError(f"the gradient of {name} at initialization has norm "
                              f"{value}: it cannot set a loss scale")
  scales = float(config.loss_scales[0]) * g / g[0]
  return {"losses": list(names), "lambda": [float(v) for v in lam],
          "num_batches": len(norms), "gradient_norms": [float(v) for v in g],
          "loss_scales": [float(v) for v in scales]}


RESULT_FILE = "gradient_scales.json"


def check_folder(workdir: str) -> None:
  """Refuses a folder for `RESULT_FILE` that is neither its own nor a stack's.

  The file goes into a new or empty folder, one that holds only an earlier
  `RESULT_FILE`, or the run of a stack of per-λ Unets (``baselines.py``),
  whose loss scales it sits beside; never into a HyperRecon run, a segmenter
  or a user's folder.

  Raises:
    InputError: naming what the folder holds.
  """
  stored = None
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    pass
  stack = (isinstance(stored, dict) and isinstance(stored.get("model"), dict)
           and stored["model"].get("hyper_dim") == 0
           and bool((stored.get("hparams") or {}).get("baselines")))
  if stack:
    workdir_lib.check_folder(workdir, "stack of per-λ Unets", workdir_lib.RUN_ENTRIES)
  else:
    try:
      workdir_lib.check_folder(workdir, "gradient-scale folder", (RESULT_FILE,))
    except errors.InputError as e:
      raise errors.InputError(f"{e}, or the workdir of a stack of per-λ Unets "
                              "(baselines.py), which takes the scales beside its "
                              "baselines.json") from None


def write(result: dict, workdir: str) -> str:
  """Writes ``result`` (of `gradient_scales`) as ``<workdir>/gradient_scales.json``; its path."""
  check_folder(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULT_FILE)
  atomic_writes.write_text(path, json.dumps(result, indent=2))
  return path
