"""Tests of the single-term baselines and loss scales (hyperrecon_jax.train.baselines).

One module-scoped run trains both baselines of ``demo.py:quick`` (MAE and
SSIM, plain Unets at 32×32, 2 steps each) on the embedded mni152 data built in
a temporary folder; the tests read its result and rerun it. The two baselines
compile the same initialization and validation programs, so a persistent
compilation cache (conftest.py) lets the second load them.
"""

import importlib.util
import json
import math
import os

import jax
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import hparams
from hyperrecon_jax import physics
from hyperrecon_jax import train
from hyperrecon_jax.train import baselines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, arg="quick"):
  path = os.path.join(REPO, "experiments", "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("num_terms", [2, 3, 4])
def test_one_hot_lambda_gives_one_hot_coefficients(num_terms):
  for k in range(num_terms):
    lam = baselines.one_hot_lambda(k, num_terms)
    assert len(lam) == num_terms - 1
    coeffs = np.asarray(hparams.coefficients(np.asarray([lam])))[0]
    np.testing.assert_array_equal(coeffs, np.eye(num_terms)[k])


def test_one_hot_lambda_follows_the_paper():
  assert baselines.one_hot_lambda(0, 2) == (0.0,)  # Eq. 9: L1 at λ = 0
  assert baselines.one_hot_lambda(1, 2) == (1.0,)
  assert baselines.one_hot_lambda(0, 3) == (1.0, 0.0)  # Eq. 10: L1 at λ1 = 1
  assert baselines.one_hot_lambda(2, 3) == (0.0, 0.0)


@pytest.mark.parametrize("k, num_terms", [(2, 2), (-1, 3), (0, 1)])
def test_one_hot_lambda_rejects_bad_indices(k, num_terms):
  with pytest.raises(ValueError, match="num_terms"):
    baselines.one_hot_lambda(k, num_terms)


@pytest.mark.parametrize("name", ["demo", "knee_cs_ao"])
def test_baseline_config_is_a_changed_copy(name):
  config = load_config(name)
  before = config.to_json()
  num_terms = len(config.losses)
  for k in range(num_terms):
    c = baselines.baseline_config(config, k)
    assert c.model.hyper_dim == 0
    assert tuple(c.hparams.fixed) == baselines.one_hot_lambda(k, num_terms)
    assert tuple(c.loss_scales) == (1.0,) * num_terms
    assert c.sampling.method == "uhs"  # knee_cs_ao uses DHS
    assert tuple(c.losses) == tuple(config.losses)
    assert c.data.image_size == config.data.image_size
    train.validate(c)
  assert config.to_json() == before


@pytest.fixture(scope="module")
def run(tmp_path_factory, compilation_cache):  # pylint: disable=unused-argument
  """Config, workdir and result of one compute_loss_scales on demo.py:quick."""
  config = load_config("demo")
  config.data.data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  config.data.num_threads = 0
  config.train.update(dict(num_steps=2, eval_every=2, checkpoint_every=2,
                           log_every=2))
  workdir = str(tmp_path_factory.mktemp("baselines"))
  return config, workdir, baselines.compute_loss_scales(config, workdir)


def test_writes_positive_finite_scales(run):
  config, workdir, result = run
  with open(os.path.join(workdir, "loss_scales.json")) as f:
    written = json.load(f)
  assert written == result
  assert written["losses"] == list(config.losses) == ["mae", "ssim"]
  assert written["split"] == "validation"
  assert written["baselines"] == {"mae": "term_0_mae", "ssim": "term_1_ssim"}
  assert len(written["loss_scales"]) == 2
  for name, scale in zip(written["losses"], written["loss_scales"]):
    assert math.isfinite(scale) and scale > 0
    assert written["terms"][name][name] == scale
    assert written["steps"][name] == 2
  assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]
  assert baselines.override_flag(written["loss_scales"]) == (
      '--config.loss_scales="(%.4g, %.4g)"' % tuple(written["loss_scales"]))


def test_baselines_are_single_term_unets(run):
  _, workdir, _ = run
  for k, name in enumerate(["mae", "ssim"]):
    config = train.load_config(os.path.join(workdir, f"term_{k}_{name}"))
    assert config.model.hyper_dim == 0
    assert tuple(config.hparams.fixed) == (float(k),)
    assert tuple(config.loss_scales) == (1.0, 1.0)


def test_mae_scale_matches_an_independent_computation(run):
  config, workdir, result = run
  subdir = os.path.join(workdir, result["baselines"]["mae"])
  cfg, model, variables, step = train.load_trained(subdir)
  assert step == 2
  # Noise-free CS-MRI: the measurement does not depend on the key.
  assert cfg.task.name == "csmri" and cfg.task.noise_sigma == 0
  operator = physics.make_operator(cfg.task, (32, 32))
  coeffs = hparams.coefficients(np.asarray([cfg.hparams.fixed] * 4))

  @jax.jit
  def reconstruct(x):
    zf = operator.zero_filled(operator.measure(x, jax.random.key(7)))
    return model.apply(variables, zf, coeffs, train=False)[0]

  errors = []
  for batch in data.batches(config.data, "validation", batch_size=4,
                            training=False):
    x = np.asarray(batch["image"], np.float32)
    recon = reconstruct(x)
    per_image = np.abs(np.asarray(recon, np.float64) - x).mean(axis=(1, 2))
    errors.extend(per_image[np.asarray(batch["valid"], bool)])
  assert len(errors) == data.num_examples(config.data, "validation")
  np.testing.assert_allclose(result["loss_scales"][0], np.mean(errors),
                             rtol=1e-5)


def test_rerun_does_not_train_again(run):
  config, workdir, result = run

  def snapshot():
    out = {}
    for name in result["baselines"].values():
      subdir = os.path.join(workdir, name)
      mngr = checkpoints.manager(subdir)
      out[name] = (mngr.latest_step(),
                   os.stat(os.path.join(subdir, "checkpoints")).st_mtime_ns,
                   os.stat(os.path.join(subdir, "metrics.jsonl")).st_mtime_ns,
                   os.stat(os.path.join(subdir, "config.json")).st_mtime_ns)
      mngr.close()
    return out

  before = snapshot()
  again = baselines.compute_loss_scales(config, workdir)
  assert snapshot() == before
  assert again == result


def test_incompatible_subfolder_is_refused_before_training(run, tmp_path):
  config, workdir, _ = run
  other = config.copy_and_resolve_references()
  other.model.channels = 8
  with pytest.raises(train.ConfigError, match="incompatible"):
    baselines.compute_loss_scales(other, workdir)


def test_a_single_term_is_refused(tmp_path):
  config = load_config("demo")
  config.losses = ("mae",)
  with pytest.raises(train.ConfigError, match="one term"):
    baselines.compute_loss_scales(config, str(tmp_path))
  assert not os.listdir(tmp_path)
