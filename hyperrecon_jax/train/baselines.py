"""Single-term Unet baselines and the loss scales s_k they define.

The paper sets ``α_k = 1 / s_k`` where ``s_k`` is the validation loss of a
plain Unet trained on term k alone. For K terms that is K runs, baseline k at
the λ whose loss coefficients are the one-hot vector ``e_k``::

  result = compute_loss_scales(config, workdir)   # trains or resumes each
  result["loss_scales"]                           # (s_1, …, s_K)

Baseline k lives in ``<workdir>/term_<k>_<name>`` (k counts from 0, the index
in ``config.losses``) and is an ordinary training run: it checkpoints and
resumes, and a finished one is not trained again.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import loop as loop_lib
from hyperrecon_jax.train import trained

RESULT_FILE = "loss_scales.json"


def one_hot_lambda(k: int, num_terms: int) -> tuple[float, ...]:
  """The λ whose loss coefficients (``hparams.coefficients``) are ``e_k``.

  K = 2 (Eq. 9): term 0 ↔ λ = 0, term 1 ↔ λ = 1. K ≥ 3 (stick-breaking):
  term k < K − 1 ↔ λ_j = 0 for j < k and λ_k = 1 (later λ are irrelevant and
  set to 0); the last term ↔ all λ = 0.

  Args:
    k: index of the term, 0 ≤ k < ``num_terms``.
    num_terms: K ≥ 2.

  Returns:
    K − 1 floats in {0, 1}, ready for ``config.hparams.fixed``.
  """
  if num_terms < 2 or not 0 <= k < num_terms:
    raise ValueError(f"need 0 ≤ k < num_terms and num_terms ≥ 2, got "
                     f"k={k}, num_terms={num_terms}")
  lam = [0.0] * (num_terms - 1)
  if num_terms == 2:
    lam[0] = float(k)  # Eq. 9 weights the *second* term by λ
  elif k < num_terms - 1:
    lam[k] = 1.0
  return tuple(lam)


def baseline_config(config, k: int):
  """A copy of ``config`` for the plain Unet trained on term ``k`` alone.

  Args:
    config: a full experiment config (left unchanged).
    k: index of the term in ``config.losses``.

  Returns:
    The copy with ``model.hyper_dim = 0``, ``hparams.fixed =
    one_hot_lambda(k, K)``, every loss scale 1.0 (so the training loss is the
    raw term) and UHS sampling (DHS ranks samples by λ-dependent losses, which
    means nothing at one fixed λ).
  """
  c = config.copy_and_resolve_references()
  num_terms = len(tuple(config.losses))
  c.model.hyper_dim = 0
  c.hparams.fixed = one_hot_lambda(k, num_terms)
  c.loss_scales = (1.0,) * num_terms
  c.sampling.method = "uhs"
  return c


def baseline_dir(config, workdir: str, k: int) -> str:
  """``<workdir>/term_<k>_<name>``: where baseline ``k`` trains."""
  return os.path.join(workdir, f"term_{k}_{tuple(config.losses)[k]}")


@functools.partial(jax.jit, static_argnames=("names",))
def _batch_terms(model, operator, variables, image, coeffs, key, *, names):
  # Module level, so baselines with the same architecture share one compile.
  y = operator.measure(image, key)
  recon, weights, _ = model.apply(
      variables, operator.zero_filled(y), coeffs, train=False,
      return_weights=bool(losses.NEEDS_WEIGHTS & set(names)))
  return losses.compute_terms(names, recon, image, operator=operator,
                              measurement=y, weights=weights)


def validation_term_means(config, model, variables, lam=None, *,
                          split: str = "validation") -> dict[str, float]:
  """Mean of every term of ``config.losses`` over a whole split, at one λ.

  Evaluation mode (running BatchNorm statistics); the measurement noise of
  batch i comes from ``fold_in(key(config.train.seed + 2), i)``, the key the
  training loop validates with, so the numbers are reproducible.

  Args:
    config: the run's config (data, task, losses, batch size, seed).
    model: a ``state.Model`` (e.g. from ``load_trained``).
    variables: its variables.
    lam: the (K − 1,) λ to reconstruct at; default ``config.hparams.fixed``
      (a plain Unet ignores it).
    split: 'train', 'validation' or 'test'.

  Returns:
    ``{term name: mean over the split's examples}``.
  """
  from hyperrecon_jax import data  # pylint: disable=g-import-not-at-top
  names = tuple(config.losses)
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  lam = jnp.asarray(config.hparams.fixed if lam is None else lam, jnp.float32)
  seed_key = jax.random.key(int(config.train.seed) + 2)
  sums, count = np.zeros(len(names)), 0
  for i, batch in enumerate(data.batches(
      config.data, split, batch_size=int(config.train.batch_size),
      training=False)):
    image = jnp.asarray(batch["image"], jnp.float32)
    coeffs = hparams.coefficients(
        jnp.broadcast_to(lam, (image.shape[0], lam.shape[-1])))
    terms = np.asarray(_batch_terms(
        model, operator, variables, image, coeffs,
        jax.random.fold_in(seed_key, i), names=names), np.float64)
    valid = np.asarray(batch["valid"], bool)
    # np.where, not a product: padding rows may hold inf or NaN.
    sums += np.sum(np.where(valid[:, None], terms, 0.0), axis=0)
    count += int(valid.sum())
  if not count:
    raise ValueError(f"the {split} split of {config.data.name} is empty")
  return {n: float(s / count) for n, s in zip(names, sums)}


def compute_loss_scales(config, workdir: str) -> dict:
  """Trains (or resumes) the K single-term baselines and measures s_k.

  Baseline k is ``baseline_config(config, k)`` trained in
  ``baseline_dir(config, workdir, k)``; s_k is its mean validation value of
  term k. The result is also written to ``<workdir>/loss_scales.json``.

  Args:
    config: a full experiment config; its ``loss_scales``, ``hyper_dim`` and
      ``hparams.fixed`` are ignored.
    workdir: folder of the baselines and the result.

  Returns:
    ``{'losses': [K names], 'loss_scales': [K floats], 'baselines': {name:
    subfolder relative to workdir}, 'split': 'validation', 'steps': {name:
    checkpoint step}, 'terms': {name: {term: mean validation value of every
    term for that baseline}}}``.

  Raises:
    ConfigError: an impossible config, or a subfolder holding an
      incompatible run (checked for every baseline before any training).
    ValueError: some s_k is not a positive finite number.
  """
  names = tuple(config.losses)
  if len(names) < 2:
    raise configuration.ConfigError(
        f"config.losses={names} has one term: loss scales only balance 2 or "
        "more terms")
  configs = [baseline_config(config, k) for k in range(len(names))]
  subdirs = [baseline_dir(config, workdir, k) for k in range(len(names))]
  # All checks first: a mistake in the last baseline must not surface only
  # after the others have trained for hours.
  for c, subdir in zip(configs, subdirs):
    configuration.validate(c)
    loop_lib.check_workdir(c, subdir)  # also: never skip to another model
  result = {"losses": list(names), "loss_scales": [], "baselines": {},
            "split": "validation", "steps": {}, "terms": {}}
  for name, c, subdir in zip(names, configs, subdirs):
    loop_lib.train_and_evaluate(c, subdir)  # returns at once when finished
    _, model, variables, step = trained.load_trained(subdir)
    terms = validation_term_means(c, model, variables)
    scale = terms[name]
    if not np.isfinite(scale) or scale <= 0:
      raise ValueError(f"the {name} baseline in {subdir} has mean validation "
                       f"{name} = {scale}; a loss scale must be positive")
    result["loss_scales"].append(scale)
    result["baselines"][name] = os.path.basename(subdir)
    result["steps"][name] = int(step)
    result["terms"][name] = terms
  workdir_lib.write_text(os.path.join(workdir, RESULT_FILE),
                         json.dumps(result, indent=2))
  return result


def override_flag(loss_scales) -> str:
  """The command-line override that uses ``loss_scales`` in a training run."""
  return ("--config.loss_scales=\"("
          + ", ".join(f"{s:.4g}" for s in loss_scales) + ")\"")
