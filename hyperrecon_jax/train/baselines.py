"""Per-λ baseline Unets, trained together in one program, and the loss scales.

The paper compares HyperRecon at each λ with a plain Unet trained at that λ
alone (§5.3), and sets the loss scales ``α_k = 1 / s_k`` from the Unets
trained on one term each (the one-hot λ). Here all of them are one *stack*:
the Unets' variables carry a leading λ axis, and one jitted step updates
every Unet on the same batch (same images, same measurement noise). That is
one pass over the data instead of one run per λ, and for Adam (elementwise)
each Unet follows the updates of its own run, up to float roundoff (which
Adam turns into steps of up to lr on the convolution biases ahead of
BatchNorm, whose true gradient is 0)::

  result = train_baselines(config, workdir, lambdas=[(0.,), (.5,), (1.,)])
  result["terms"]          # validation term means of each Unet
  result["loss_scales"]    # s_k, when every one-hot λ is in the stack

The stack is an ordinary training run in ``workdir`` (checkpoints, resume,
lock) of a `models.UnetStack`, a model like any other for
`evaluate.evaluate_grid`.
"""

import json
import os

import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax import streams
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import loop as loop_lib
from hyperrecon_jax.train import trained

RESULT_FILE = "baselines.json"
# Unets one stack may hold: each is a whole Unet trained in the one program,
# and a stack far below this already outgrows a device (`memory_checks.check_memory`);
# the count is refused before its λ are built.
MAX_UNETS = 10_000


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
    raise errors.InputError(f"need 0 ≤ k < num_terms and num_terms ≥ 2, got "
                            f"k={k}, num_terms={num_terms}")
  lam = [0.0] * (num_terms - 1)
  if num_terms == 2:
    lam[0] = float(k)  # Eq. 9 weights the *second* term by λ
  elif k < num_terms - 1:
    lam[k] = 1.0
  return tuple(lam)


def one_hot_lambdas(num_terms: int) -> list[tuple[float, ...]]:
  """The λ of the single-term Unets that define the loss scales, in term order."""
  return [one_hot_lambda(k, num_terms) for k in range(num_terms)]


def check_count(count: int, what: str = "") -> None:
  """Raises ``InputError`` for a stack of more than `MAX_UNETS` Unets.

  Args:
    count: the number of λ, one Unet each.
    what: how the λ were given (e.g. ``--lambdas=grid:1000``), for the message.
  """
  if count > MAX_UNETS:
    given = f"{what} gives" if what else "the stack has"
    raise errors.InputError(
        f"{given} {count:,} λ, more than {MAX_UNETS:,}: each is a whole Unet trained in one "
        "program; give fewer")


def stack_config(config, lambdas, *, loss_scales=None):
  """A copy of ``config`` for the stack of plain Unets at ``lambdas``.

  Args:
    config: a full experiment config (left unchanged).
    lambdas: the λ vectors, each of K − 1 values in [0, 1].
    loss_scales: replaces ``config.loss_scales`` (e.g. all 1.0 when the
      scales are what the stack measures); default: kept, so each Unet trains
      on exactly HyperRecon's objective at its λ.

  Returns:
    The copy with ``model.hyper_dim = 0``, ``hparams.baselines = lambdas``
    and UHS sampling (DHS ranks samples by λ-dependent losses, which means
    nothing at one fixed λ).
  """
  c = config.copy_and_resolve_references()
  c.model.hyper_dim = 0
  c.hparams.baselines = tuple(tuple(float(v) for v in lam) for lam in lambdas)
  if loss_scales is not None:
    c.loss_scales = tuple(loss_scales)
  c.sampling.method = "uhs"
  return c


def validation_term_means(config, model, variables, lams=None, *,
                          split: str = "validation") -> list[dict[str, float]]:
  """Mean of every term of ``config.losses`` over a whole split, at each λ.

  Scored by the evaluator's program (`evaluate.evaluate_grid` with
  ``terms``, and `grid.weight_terms` for the terms of the weights):
  evaluation mode, every slice measured with ``streams.key(config,
  'validation')`` and its ids (the key the training loop validates with), so
  the numbers are reproducible and a HyperRecon model and a stack of Unets
  see the same noise.

  Args:
    config: the run's config (data, task, losses, batch size, seed).
    model: a model of `hyperrecon_jax.models` (e.g. from ``load_trained``).
    variables: its variables.
    lams: (G, K − 1) λ to reconstruct at; default ``[config.hparams.fixed]``.
    split: 'train', 'validation' or 'test'.

  Returns:
    One ``{term name: mean over the split's slices}`` per λ (NaN where no
    slice has a finite value).
  """
  from hyperrecon_jax import data
  from hyperrecon_jax import evaluate
  from hyperrecon_jax import grid
  names = tuple(config.losses)
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  lams = np.asarray([config.hparams.fixed] if lams is None else lams, np.float32)
  batches = data.batches(config.data, split, batch_size=int(config.train.batch_size),
                         training=False)
  # An empty split is refused by the pipeline, naming the split and dataset.
  result = evaluate.evaluate_grid(
      model, variables, operator, batches, lams, key=streams.key(config, "validation"),
      chunk=int(config.eval.chunk), per_slice=False,
      terms=[n for n in names if n not in losses.NEEDS_WEIGHTS])
  means = {n: [np.nan if v is None else v for v in values]
           for n, values in result.get("loss_terms", {}).get("mean", {}).items()}
  means.update(grid.weight_terms(model, variables, hparams.coefficients(lams), names))
  return [{n: float(means[n][g]) for n in names} for g in range(len(lams))]


def compare_objectives(config, model, variables, stack, stack_variables, *,
                       split: str = "validation") -> dict:
  """HyperRecon and each per-λ Unet on the objective that Unet was trained for.

  At each λ of the stack, both reconstruct a split, by default the
  validation split (`validation_term_means`, with ``config``'s noise key
  for both), and are scored by the training objective at that λ,
  ``L(λ) = Σ_k c_k(λ) · mean term_k / s_k`` (`losses.composite` with
  ``config.loss_scales``). Where PSNR rewards whatever is closest to the
  ground truth, this asks the question of the paper's §6.1: does HyperRecon
  at λ solve the problem the Unet at λ solves, as well as it does?

  Args:
    config: HyperRecon's config.
    model: HyperRecon's ``HyperUnet``.
    variables: its variables.
    stack: the `models.UnetStack` of Unets.
    stack_variables: its variables.
    split: the split of ``config.data`` to reconstruct.

  Returns:
    ``{'split': split, 'losses': [K], 'loss_scales': [K], 'lambdas':
    [L λ vectors], 'hyperrecon': [L {'terms': {name: value}, 'objective':
    x}], 'baselines': [L, the same]}``.
  """
  names = tuple(config.losses)
  scales = np.asarray(config.loss_scales, np.float64)

  def scored(terms, lam):
    coeffs = hparams.coefficients(jnp.asarray([lam], jnp.float32))
    values = jnp.asarray([[terms[n] for n in names]], jnp.float32)
    return {"terms": terms,
            "objective": float(losses.composite(values, coeffs, scales)[0])}

  out = {"split": split, "losses": list(names),
         "loss_scales": [float(v) for v in scales],
         "lambdas": [list(lam) for lam in stack.lambdas]}
  for who, net, v in (("hyperrecon", model, variables), ("baselines", stack, stack_variables)):
    terms = validation_term_means(config, net, v, stack.lambdas, split=split)
    out[who] = [scored(t, lam) for t, lam in zip(terms, stack.lambdas)]
  return out


def _one_hot_scales(names, lambdas, terms):
  """s_k from the stack's one-hot Unets, or None when one is missing.

  A Unet is found by its loss weighting (`hparams.weighting`), whatever λ
  wrote it: for three terms 1:1 is the first term's Unet as 1:0 is.
  """
  index = {hparams.weighting(lam): i for i, lam in enumerate(lambdas)}
  scales = []
  for k, name in enumerate(names):
    i = index.get(hparams.weighting(one_hot_lambda(k, len(names))))
    if i is None:
      return None
    scale = terms[i][name]
    if not np.isfinite(scale) or scale <= 0:
      raise errors.InputError(f"the Unet trained on {name} alone has mean validation "
                              f"{name} = {scale}; a loss scale must be positive")
    scales.append(scale)
  return scales


def train_baselines(config, workdir: str, lambdas=None, *,
                    loss_scales=None) -> dict:
  """Trains (or resumes) the stack of Unets at ``lambdas`` and measures them.

  Args:
    config: a full experiment config (its model and sampling are replaced).
    workdir: the stack's run folder; the result goes to
      ``<workdir>/baselines.json``.
    lambdas: the λ vectors; default the one-hot ones (the loss scales).
    loss_scales: see `stack_config`.

  Returns:
    ``{'losses': [K names], 'lambdas': [L λ vectors], 'split':
    'validation', 'step': checkpoint step, 'terms': [L {term: mean validation
    value}], 'loss_scales': [K floats] or None}``; ``loss_scales`` is set when
    every one-hot λ is in the stack.

  Raises:
    ConfigError: an impossible config, or a workdir holding another run.
    WorkdirBusyError: another trainer owns the workdir (at the start, or
      when this one returns to measure its Unets).
    InputError: more than `MAX_UNETS` λ.
    ValueError: a loss scale is not a positive finite number.
  """
  names = tuple(config.losses)
  if len(names) < 2:
    raise configuration.ConfigError(
        f"config.losses={names} has one term: baselines need 2 or more terms")
  lambdas = one_hot_lambdas(len(names)) if lambdas is None else lambdas
  check_count(len(lambdas))
  c = stack_config(config, lambdas, loss_scales=loss_scales)
  loop_lib.train_and_evaluate(c, workdir)  # returns at once when finished
  # Measured and written under the trainer's lock again: a trainer started
  # on the workdir meanwhile would save checkpoints that the result, of an
  # earlier step, does not describe. One that took the lock first is named.
  with workdir_lock.run_lock(workdir):
    c, model, variables, step = trained.load_trained(workdir)
    stack = model.lambdas
    terms = validation_term_means(c, model, variables, stack)
    result = {"losses": list(names), "lambdas": [list(lam) for lam in stack],
              "split": "validation", "step": int(step), "terms": terms,
              "loss_scales": _one_hot_scales(names, stack, terms)}
    if workdir_lock.is_primary():  # every process of a multi-host run gets the result
      atomic_writes.write_text(os.path.join(workdir, RESULT_FILE),
                               json.dumps(result, indent=2))
  return result


def compute_loss_scales(config, workdir: str) -> dict:
  """The loss scales s_k: the one-hot stack, trained on the raw terms.

  Every loss scale is 1.0 during this training (the one-hot Unet's loss is
  its raw term), so the result does not depend on the scales being measured.
  """
  return train_baselines(config, workdir,
                         loss_scales=(1.0,) * configuration.num_coeffs(config))


def override_flag(loss_scales) -> str:
  """The command-line override that uses ``loss_scales`` in a training run."""
  return ("--config.loss_scales=\"("
          + ", ".join(f"{s:.4g}" for s in loss_scales) + ")\"")
