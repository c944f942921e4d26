"""hyperrecon_jax.evaluators.lambda_set: the λ a report scores, and its settings.

Unit calls on the experiment configs (no model, no dataset): the λ set is
the config's alone.
"""

import configs
import numpy as np
import pytest

from hyperrecon_jax import evaluators
from hyperrecon_jax import hparams
from hyperrecon_jax.evaluators import lambda_set


def _context(config):
  return evaluators.Context(config=config, model=None, variables=None, step=0, where="run",
                            operator=None, out="")


def test_a_plain_unet_is_scored_at_its_one_lambda_and_refuses_a_design():
  config = configs.load("demo", "quick")
  config.model.hyper_dim, config.hparams.fixed = 0, (0.25,)
  lam, design = lambda_set.lambda_set(config)
  assert lam.tolist() == [[0.25]] and design == {"kind": "fixed"}
  config.eval.samples = 12
  with pytest.raises(ValueError, match=r"^a plain Unet has one λ: config\.eval\.samples does "
                                       r"not apply$"):
    lambda_set.lambda_set(config)


@pytest.mark.parametrize("name, k", [("demo", 2), ("knee_cs_ao", 3), ("demo_k4", 4)])
def test_a_design_needs_at_least_the_vertices_of_the_simplex(name, k):
  config = configs.load(name, "quick")
  assert len(config.losses) == k
  config.eval.samples = k
  lam, design = lambda_set.lambda_set(config)
  assert lam.shape == (k, k - 1) and design["kind"] == "samples" and design["num"] == k
  # k points are the k vertices: each term alone. λ of 0 and 1 give
  # coefficients that are products of 0 and 1, exact in float32.
  coeffs = np.asarray(hparams.coefficients(lam))
  np.testing.assert_array_equal(coeffs[np.argsort(coeffs.argmax(axis=1))], np.eye(k))
  config.eval.samples = k - 1
  with pytest.raises(ValueError, match=rf"^config\.eval\.samples={k - 1}: a design on the "
                                       rf"simplex of {k} terms needs at least its {k} vertices$"):
    lambda_set.lambda_set(config)


def test_a_gallery_tolerance_of_zero_db_is_accepted():
  # 0 dB: the gallery draws from the best reconstructions alone.
  config = configs.load("demo", "quick")
  for tolerance in (0.0, 0, 1.5):
    config.eval.gallery_tolerance_db = tolerance
    lambda_set.check(config, config.evals.lambda_set)
  config.eval.gallery_tolerance_db = -1e-9
  with pytest.raises(ValueError, match=r"gallery_tolerance_db must be a finite number ≥ 0 "
                                       r"\(dB\), got -1e-09"):
    lambda_set.check(config, config.evals.lambda_set)


def test_only_a_design_scores_the_loss_terms():
  # A grid report scores the metrics alone; a design also each loss term that
  # needs no model weights (weight_l1 does).
  config = configs.load("knee_cs_ao", "quick")
  assert tuple(config.losses) == ("dc", "weight_l1", "tv")
  context = _context(config)
  lambda_set.prepare(context, {"segmenter": ""})
  assert context.result["design"] == {"kind": "grid", "num": config.eval.grid}
  assert context.terms == () and context.lam_grid.shape == (config.eval.grid ** 2, 2)
  config.eval.samples = 5
  context = _context(config)
  lambda_set.prepare(context, {"segmenter": ""})
  assert context.result["design"]["kind"] == "samples" and context.lam_grid.shape == (5, 2)
  assert context.terms == ("dc", "tv")


def test_a_model_short_of_its_training_is_said_to_be_so():
  assert lambda_set.unfinished(4000, 4000) is None
  assert lambda_set.unfinished(4001, 4000) is None  # a run trained on past a lowered num_steps
  assert lambda_set.unfinished(2, 4000) == (
      "the run is at step 2 of its config.train.num_steps=4000 (still training, or stopped): "
      "these are not the finished model's scores")
