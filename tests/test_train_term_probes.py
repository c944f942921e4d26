"""Tests for hyperrecon_jax/train/term_probes.py: own loss terms known by their values."""

import json

import configs
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import train
from hyperrecon_jax.train import loop
from hyperrecon_jax.train import term_probes


def _own_config(losses=("dc", "grad_diff", "weight_l2")):
  config = configs.load("demo_ao", "quick")
  config.data.image_size = 32
  config.losses, config.loss_scales = losses, (1.0,) * len(losses)
  config.extensions = ("own_terms",)
  train.check_config(config)  # imports own_terms
  return config


def test_a_run_of_built_in_terms_records_nothing_and_loads_without_a_probe():
  config = configs.load("demo_ao", "quick")
  assert term_probes.probe(config) == {}
  recorded = term_probes.recorded(config)
  assert dict(recorded.term_probes) == {}
  assert tuple(recorded.losses) == tuple(config.losses)


def test_the_recorded_values_are_the_terms_on_the_documented_probe(own_terms):
  config = _own_config()
  probes = term_probes.probe(config)
  assert sorted(probes) == ["grad_diff", "weight_l2"]  # built-in dc is not probed
  # The probe as its docstring gives it, rebuilt here: PCG64 images, the
  # target uniform in [0, 1), the reconstruction 0.1 σ Gaussian noise off it.
  rng = np.random.default_rng(term_probes._SEED)
  target = rng.random((2, 32, 32), dtype=np.float32).astype(np.float64)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape, dtype=np.float32), 0, 1)
  d = np.diff(recon, axis=2) - np.diff(target, axis=2)
  expected = np.sum(d * d, axis=(1, 2))
  # float32 sums of 2·32·31 squares against a float64 reference: 1e-5 relative.
  np.testing.assert_allclose(probes["grad_diff"], expected, rtol=1e-5)
  # The weights probe: one value per sample of a sum of squares, positive.
  assert len(probes["weight_l2"]) == 2 and min(probes["weight_l2"]) > 0
  # JSON as stored in config.json, and read back the same.
  stored = json.loads(term_probes.recorded(config).to_json())["term_probes"]
  assert stored == probes


def test_a_term_changed_since_training_is_refused_when_the_run_loads(own_terms, tmp_path):
  config = _own_config()
  stored = json.loads(term_probes.recorded(config).to_json())
  assert tuple(train.from_stored(stored).losses) == ("dc", "grad_diff", "weight_l2")
  # The module now computes another formula under the same name: twice the value.
  own_terms.register_term("grad_diff", lambda recon, target, **_: 2 * jnp.sum(
      jnp.square(jnp.diff(recon, axis=2) - jnp.diff(target, axis=2)), axis=(1, 2)),
      needs=("target",), replace=True)
  with pytest.raises(train.ConfigError, match=r"trained with other loss terms under the same "
                     r"names: 'grad_diff' gives .* on the probe, where the run recorded .*"
                     r"config\.extensions \('own_terms',\) changed since training"):
    train.from_stored(stored)
  # The same refusal on resuming training in the run's folder.
  with pytest.raises(train.ConfigError, match=r"the run in .* was trained with other loss "
                     r"terms.*'grad_diff'"):
    loop.check_workdir(config, str(tmp_path), stored)


def test_a_term_of_the_weights_changed_since_training_is_refused(own_terms):
  stored = json.loads(term_probes.recorded(_own_config()).to_json())
  own_terms.register_term("weight_l2", lambda recon, target, *, weights, **_: sum(
      jnp.sum(jnp.abs(w).reshape(w.shape[0], -1), axis=1)
      for w in __import__("jax").tree_util.tree_leaves(weights)),
      needs=("weights",), replace=True)
  with pytest.raises(train.ConfigError, match=r"'weight_l2' gives"):
    train.from_stored(stored)


def test_a_term_that_now_raises_on_the_probe_is_named(own_terms):
  stored = json.loads(term_probes.recorded(_own_config()).to_json())

  def broken(recon, target, **_):
    raise ValueError("a bug of the new version")
  own_terms.register_term("grad_diff", broken, needs=("target",), replace=True)
  with pytest.raises(train.ConfigError, match=r"computing them again failed .*'grad_diff' "
                     r"raised ValueError: a bug of the new version"):
    train.from_stored(stored)


def test_differences_within_roundoff_pass_and_beyond_it_are_named():
  stored = {"t": [2.0, 1e-8, "nan"]}
  # A relative 1e-5 (far above another CPU's roundoff, RTOL's reason), a value
  # near 0 within ATOL, NaN where NaN was recorded: the same term.
  assert term_probes.differences(stored, {"t": [2.0 * (1 + 1e-5), 5e-7, "nan"]}) == []
  assert term_probes.differences(stored, {"other": [1.0]}) == []
  changed = term_probes.differences(stored, {"t": [2.0 * 1.01, 1e-8, "nan"]})
  assert len(changed) == 1 and changed[0].startswith("'t' gives [2.02")
  assert term_probes.differences(stored, {"t": [2.0, 1e-8, 0.0]})  # NaN became a number


def test_a_non_finite_value_is_stored_by_name(own_terms):
  own_terms.register_term("log_zero", lambda recon, target, **_: jnp.log(
      jnp.zeros(recon.shape[0])), replace=True)
  config = _own_config(("dc", "log_zero"))
  probes = term_probes.probe(config)
  assert probes == {"log_zero": ["-inf", "-inf"]}
  stored = json.loads(term_probes.recorded(config).to_json())
  assert tuple(train.from_stored(stored).losses) == ("dc", "log_zero")
