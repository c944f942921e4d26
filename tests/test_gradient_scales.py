"""Tests of the gradient-matched loss scales (hyperrecon_jax.train.gradient_scales).

``demo_ao.py:quick`` (HyperRecon at 32×32) with three terms, DC, TV and the
generated weights' ℓ1 norm, and measurement noise, on the embedded mni152 data
built in a temporary folder; the reference gradient norms are computed here
from the loss functions themselves, flattened and summed in float64.
"""

import json
import os

import configs
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import data
from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax.train import gradient_scales
from hyperrecon_jax.train import state as state_lib


@pytest.fixture(scope="module")
def config(data_dir):
  c = configs.load("demo_ao", "quick")
  c.data.data_dir = data_dir
  # A term of the generated weights (the model returns them only when asked),
  # and noise that each batch draws for itself.
  c.losses = ("dc", "tv", "weight_l1")
  c.loss_scales = (2.0, 30.0, 1.0)
  c.task.noise_sigma = 0.1
  c.train.batch_size = 8  # the validation split's 12 slices: 8, then 4 and 4 of padding
  return c


@pytest.fixture(scope="module")
def result(config):
  return gradient_scales.gradient_scales(config, num_batches=2)


def _dc(recon, weights, y, operator):
  del weights
  return losses.data_consistency(recon, y, operator)


def _tv(recon, weights, y, operator):
  del weights, y, operator
  return losses.total_variation(recon)


def _weight_l1(recon, weights, y, operator):
  del recon, y, operator
  return losses.weight_l1(weights)


def _reference_norms(config, num_batches, terms=(_dc, _tv, _weight_l1)):
  """‖∇θ mean(term)‖ of each term per batch over its real rows, from the loss functions.

  Args:
    config: the run's config (its K terms are ``terms``).
    num_batches: validation batches averaged.
    terms: one function per loss term, ``(recon, weights, y, operator) -> (B,)``.

  Returns:
    The mean norm of each term over the batches.
  """
  size = config.data.image_size
  operator = physics.make_operator(config.task, (size, size))
  model = state_lib.build_model(config)
  state = state_lib.create_state(config, model, jax.random.key(config.train.seed))
  k = len(terms)
  coeffs = hparams.coefficients(jnp.full((1, k - 1), 0.5))
  batches = data.batches(config.data, "validation", batch_size=config.train.batch_size,
                         training=False)

  @jax.jit  # compiled once per batch shape: op by op, these gradients take a minute
  def grads(params, y, rows):
    def mean_term(p, fn):
      (recon, weights), _ = model.apply({"params": p, "batch_stats": state.batch_stats},
                                        operator.zero_filled(y), rows, train=True,
                                        return_weights=True, mutable=["batch_stats"])
      return jnp.mean(fn(recon, weights, y, operator))
    return [jax.grad(lambda p, fn=fn: mean_term(p, fn))(params) for fn in terms]

  norms, padded = [], 0
  for i, batch in zip(range(num_batches), batches):
    valid = np.asarray(batch["valid"], bool)
    padded += int((~valid).sum())
    image = jnp.asarray(np.asarray(batch["image"])[valid], jnp.float32)
    # Each batch its own measurement noise (where the task adds any).
    y = operator.measure(image, jax.random.fold_in(
        jax.random.key(config.train.seed + 2), i))
    rows = jnp.broadcast_to(coeffs, (image.shape[0], k))
    norms.append([np.linalg.norm(np.asarray(jax.flatten_util.ravel_pytree(g)[0], np.float64))
                  for g in grads(state.params, y, rows)])
  # The validation split's 12 slices fill one batch of 8 and half of another:
  # its padding rows (empty images) take no part.
  assert padded == 2 * config.train.batch_size - 12 > 0
  return np.mean(norms, axis=0)


def test_gradient_norms_match_the_loss_functions(config, result):
  assert result["losses"] == ["dc", "tv", "weight_l1"] and result["lambda"] == [0.5, 0.5]
  assert result["num_batches"] == 2
  expected = _reference_norms(config, 2)
  # Both sum the same float32 gradients, in another order: relative roundoff
  # of a sum of ~10⁴ squares, far below 1e-4. (Where the second batch reused
  # the first one's noise, DC's mean norm moved by ~1.6 %.)
  np.testing.assert_allclose(result["gradient_norms"], expected, rtol=1e-4)


def test_scales_keep_the_first_term_and_equalize_the_gradients(config, result):
  g = np.asarray(result["gradient_norms"])
  s = np.asarray(result["loss_scales"])
  assert s[0] == config.loss_scales[0]
  # Every scaled term pulls with the first one's strength: g_k / s_k equal.
  np.testing.assert_allclose(g / s, g[0] / s[0], rtol=1e-12)
  # The other configured scales play no part; the first sets the unit.
  other = config.copy_and_resolve_references()
  other.loss_scales = (4.0, 1.0, 7.0)
  again = gradient_scales.gradient_scales(other, num_batches=2)
  np.testing.assert_allclose(again["gradient_norms"], g, rtol=1e-6)
  np.testing.assert_allclose(again["loss_scales"], 2 * s, rtol=1e-6)


def test_the_scales_of_a_run_are_its_own_initialization(config, result):
  other = config.copy_and_resolve_references()
  other.train.seed = config.train.seed + 1
  again = gradient_scales.gradient_scales(other, num_batches=2)
  assert not np.allclose(again["gradient_norms"], result["gradient_norms"], rtol=1e-3)


def test_a_term_whose_gradient_is_not_finite_is_the_one_named(config):
  # √|r − r| is 0 with an infinite derivative: its gradient is NaN (0 · ∞),
  # and DC's, taken alone, stays finite.
  name = "sqrt_of_zero_scales"
  if name not in losses.TERMS:
    losses.register_term(name, lambda recon, target, **_: jnp.sum(
        jnp.sqrt(jnp.abs(recon - recon)), axis=(1, 2)))
  other = config.copy_and_resolve_references()
  other.losses = ("dc", name)
  other.loss_scales = (2.0, 30.0)
  with pytest.raises(errors.InputError,
                     match=rf"the gradient of {name} at initialization has norm nan"):
    gradient_scales.gradient_scales(other, num_batches=1)


def test_a_term_whose_gradient_is_zero_is_the_one_named(config):
  # A term that does not depend on the reconstruction pulls on nothing: no
  # scale makes its gradient match another's.
  name = "constant_scales"
  if name not in losses.TERMS:
    losses.register_term(name, lambda recon, target, **_: jnp.ones(recon.shape[:1]))
  other = config.copy_and_resolve_references()
  other.losses = ("dc", name)
  other.loss_scales = (2.0, 30.0)
  with pytest.raises(errors.InputError,
                     match=rf"the gradient of {name} at initialization has norm 0\.0: it "
                           r"cannot set a loss scale"):
    gradient_scales.gradient_scales(other, num_batches=1)


def test_no_batches_is_refused(config):
  with pytest.raises(errors.InputError, match="num_batches must be ≥ 1, got 0"):
    gradient_scales.gradient_scales(config, num_batches=0)


NOT_THEIR_FOLDER = r"holds config\.json, which is not a gradient-scale folder's"


def _run_folder(path, *, hyper_dim, baselines):
  """A folder holding a training run's config.json of those fields (no checkpoint)."""
  path.mkdir()
  (path / "config.json").write_text(json.dumps(
      {"model": {"hyper_dim": hyper_dim}, "hparams": {"baselines": baselines}}))
  return path


def test_the_scales_go_into_their_own_folder_or_a_stack_of_unets(tmp_path):
  result = {"losses": ["dc", "tv"], "loss_scales": [2.0, 3.0]}
  own = tmp_path / "own"
  assert gradient_scales.write(result, str(own)) == str(own / "gradient_scales.json")
  gradient_scales.write(result, str(own))  # measured again: replaced
  assert json.loads((own / "gradient_scales.json").read_text()) == result
  stack = _run_folder(tmp_path / "stack", hyper_dim=0, baselines=[[0.0], [1.0]])
  (stack / "baselines.json").write_text("{}")
  gradient_scales.write(result, str(stack))
  # Never into a HyperRecon run or a user's folder.
  run = _run_folder(tmp_path / "run", hyper_dim=32, baselines=[])
  with pytest.raises(errors.InputError, match=NOT_THEIR_FOLDER):
    gradient_scales.write(result, str(run))
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("mine")
  with pytest.raises(errors.InputError, match=r"holds notes\.txt"):
    gradient_scales.write(result, str(tmp_path / "mine"))
  assert sorted(os.listdir(run)) == ["config.json"]


def test_the_scales_never_go_into_a_plain_unets_run(tmp_path):
  # A plain Unet (hyper_dim 0, no baselines) is a training run like any
  # other, not a stack whose loss scales sit beside it.
  run = _run_folder(tmp_path / "unet", hyper_dim=0, baselines=[])
  with pytest.raises(errors.InputError, match=NOT_THEIR_FOLDER):
    gradient_scales.write({"losses": ["dc"], "loss_scales": [1.0]}, str(run))
  assert sorted(os.listdir(run)) == ["config.json"]
