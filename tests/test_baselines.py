"""Tests of the per-λ baselines and loss scales (hyperrecon_jax.train.baselines).

One module-scoped run trains the stack of both single-term Unets of
``demo.py:quick`` (MAE and SSIM, plain Unets at 32×32, 2 steps) on the
embedded mni152 data built in a temporary folder; the tests read its result
and rerun it.
"""

import functools
import json
import math
import os
import shutil

import configs
import jax
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import errors
from hyperrecon_jax import evaluate
from hyperrecon_jax import hparams
from hyperrecon_jax import models
from hyperrecon_jax import physics
from hyperrecon_jax import streams
from hyperrecon_jax import train
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.train import baselines


def load_config(name, arg="quick"):
  return configs.load(name, arg)


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


@pytest.mark.parametrize("name", ["demo", "demo_ao", "knee_cs_ao"])
def test_stack_config_is_a_changed_copy(name):
  config = load_config(name)
  before = config.to_json()
  lambdas = baselines.one_hot_lambdas(len(config.losses))
  c = baselines.stack_config(config, lambdas, loss_scales=(1.0,) * len(lambdas))
  assert c.model.hyper_dim == 0
  assert [tuple(lam) for lam in c.hparams.baselines] == lambdas
  assert tuple(c.loss_scales) == (1.0,) * len(config.losses)
  assert c.sampling.method == "uhs"  # knee_cs_ao uses DHS
  assert tuple(c.losses) == tuple(config.losses)
  assert c.data.image_size == config.data.image_size
  train.check_config(c)
  assert config.to_json() == before
  # Without loss_scales, the stack trains HyperRecon's own objective.
  kept = baselines.stack_config(config, [(0.5,) * (len(config.losses) - 1)])
  assert tuple(kept.loss_scales) == tuple(config.loss_scales)


@pytest.fixture(scope="module")
def run(tmp_path_factory, compilation_cache):
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
  with open(os.path.join(workdir, "baselines.json")) as f:
    written = json.load(f)
  assert written == result
  assert written["losses"] == list(config.losses) == ["mae", "ssim"]
  assert written["split"] == "validation"
  assert written["lambdas"] == [[0.0], [1.0]]
  assert written["step"] == 2
  assert len(written["loss_scales"]) == 2
  for k, (name, scale) in enumerate(zip(written["losses"],
                                        written["loss_scales"])):
    assert math.isfinite(scale) and scale > 0
    assert written["terms"][k][name] == scale
  assert not [f for f in os.listdir(workdir) if ".tmp" in f]
  assert baselines.override_flag(written["loss_scales"]) == (
      '--config.loss_scales="({:.4g}, {:.4g})"'.format(*written["loss_scales"]))


def test_the_baselines_are_one_run_of_a_stack_of_plain_unets(run):
  _, workdir, _ = run
  config, model, variables, _ = train.load_trained(workdir)
  assert config.model.hyper_dim == 0
  assert model.lambdas == ((0.0,), (1.0,))
  assert tuple(config.loss_scales) == (1.0, 1.0)
  for leaf in jax.tree_util.tree_leaves(variables):
    assert leaf.shape[0] == 2
  # Independent initializations, as separate runs would have.
  kernel = np.asarray(variables["params"]["enc0_a_kernel"])
  assert not np.allclose(kernel[0], kernel[1])


def test_mae_scale_matches_an_independent_computation(run):
  config, workdir, result = run
  cfg, model, variables, step = train.load_trained(workdir)
  assert step == 2
  mae_unet = jax.tree_util.tree_map(lambda v: v[0], variables)  # λ = 0
  # Noise-free CS-MRI: the measurement does not depend on the key.
  assert cfg.task.name == "csmri" and cfg.task.noise_sigma == 0
  operator = physics.make_operator(cfg.task, (32, 32))
  coeffs = hparams.coefficients(np.asarray([[0.0]] * 4))

  @jax.jit
  def reconstruct(x):
    zf = operator.zero_filled(operator.measure(x, jax.random.key(7)))
    return models.Unet(channels=model.channels, batch_norm=model.batch_norm).apply(
        mae_unet, zf, coeffs)

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
    mngr = checkpoints.reader(workdir)
    out = (mngr.all_steps(),
           os.stat(os.path.join(workdir, "checkpoints")).st_mtime_ns,
           os.stat(os.path.join(workdir, "metrics.jsonl")).st_mtime_ns,
           os.stat(os.path.join(workdir, "config.json")).st_mtime_ns)
    mngr.close()
    return out

  before = snapshot()
  again = baselines.compute_loss_scales(config, workdir)
  assert snapshot() == before
  assert again == result


def test_the_unets_are_measured_under_the_trainers_lock(run, monkeypatch):
  # The measurement ran after the training's lock was released: a second
  # trainer started then saved later steps, and baselines.json described an
  # earlier one.
  config, workdir, result = run
  measure = baselines.validation_term_means
  refused = []

  def measured_while_another_trainer_starts(*args, **kwargs):
    with pytest.raises(workdir_lock.WorkdirBusyError, match="is being trained by process"):
      with workdir_lock.lock(workdir):
        pass
    refused.append(True)
    return measure(*args, **kwargs)

  monkeypatch.setattr(baselines, "validation_term_means", measured_while_another_trainer_starts)
  assert baselines.compute_loss_scales(config, workdir) == result
  assert refused == [True]
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE))


def test_incompatible_workdir_is_refused_before_training(run):
  config, workdir, _ = run
  other = config.copy_and_resolve_references()
  other.model.channels = 8
  with pytest.raises(train.ConfigError, match="incompatible"):
    baselines.compute_loss_scales(other, workdir)
  with pytest.raises(train.ConfigError, match="hparams.baselines"):
    baselines.train_baselines(config, workdir, [(0.0,), (0.5,), (1.0,)])


def test_scales_need_every_one_hot_unet():
  terms = [{"mae": 0.1, "ssim": 0.3}, {"mae": 0.2, "ssim": 0.4}]
  assert baselines._one_hot_scales(("mae", "ssim"), [(0.0,), (1.0,)], terms) == [0.1, 0.4]
  assert baselines._one_hot_scales(("mae", "ssim"), [(0.0,), (0.5,)], terms) is None


def test_scales_find_a_one_hot_unet_whatever_lambda_wrote_it():
  # Three and more terms: where λ_k = 1 the later λ do not count, so 1:1 and
  # 0:1 are the Unets trained on the first and the second term alone (as
  # evaluate.py and summarize.py match them), whatever their order.
  names = ("mae", "ssim", "tv")
  terms = [{"mae": 0.1, "ssim": 0.2, "tv": 0.3}, {"mae": 0.4, "ssim": 0.5, "tv": 0.6},
           {"mae": 0.7, "ssim": 0.8, "tv": 0.9}]
  assert baselines._one_hot_scales(names, [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)], terms) == [
      0.7, 0.5, 0.3]


def test_a_one_hot_unet_scoring_zero_gives_no_scale():
  # A scale of 0 divides its term by 0: the objective is infinite or NaN.
  terms = [{"mae": 0.0, "ssim": 0.3}, {"mae": 0.2, "ssim": 0.4}]
  with pytest.raises(errors.InputError, match=r"the Unet trained on mae alone has mean "
                                              r"validation mae = 0\.0; a loss scale must be "
                                              r"positive"):
    baselines._one_hot_scales(("mae", "ssim"), [(0.0,), (1.0,)], terms)


def test_a_stack_of_more_than_max_unets_is_refused():
  assert baselines.MAX_UNETS == 10_000
  baselines.check_count(10_000)
  with pytest.raises(errors.InputError, match=r"--lambdas=grid:10001 gives 10,001 λ, more than "
                                              r"10,000"):
    baselines.check_count(10_001, "--lambdas=grid:10001")


@pytest.fixture(scope="module")
def tiny(data_dir):
  """An untrained K = 2 HyperRecon and its config, on the 32×32 mni152 data."""
  from explorer_support import tiny_explorer
  ex = tiny_explorer(("mae", "ssim"))
  config = ex.config.copy_and_resolve_references()
  config.data.data_dir = data_dir
  config.data.num_threads = 0
  config.train.batch_size = 4
  return config, ex.model, ex.variables


def test_the_term_means_of_a_model_that_outputs_nan_are_nan(tiny):
  config, model, variables = tiny
  # A BatchNorm variance of −2 takes the square root of a negative number.
  bad = jax.tree_util.tree_map(np.array, variables)
  bad["batch_stats"] = jax.tree_util.tree_map_with_path(
      lambda p, x: np.full_like(x, -2.0) if p[-1].key == "var" else x, bad["batch_stats"])
  (means,) = baselines.validation_term_means(config, model, bad, [[0.5]])
  assert sorted(means) == ["mae", "ssim"]
  assert all(math.isnan(v) for v in means.values()), means


def test_the_term_means_measure_with_the_validation_noise(tiny):
  config, model, variables = tiny
  config = config.copy_and_resolve_references()
  config.task.noise_sigma = 0.2
  lams = np.asarray([[0.5]], np.float32)
  operator = physics.make_operator(config.task, (32, 32))

  def mae(stream):
    result = evaluate.evaluate_grid(
        model, variables, operator,
        data.batches(config.data, "validation", batch_size=4, training=False), lams,
        key=streams.key(config, stream), per_slice=False, terms=["mae"])
    return result["loss_terms"]["mean"]["mae"][0]

  (means,) = baselines.validation_term_means(config, model, variables, lams)
  # The same program on the same slices and key: equal up to the order of the
  # float32 sums, a few ulps of a mean of order 0.1 (1e-6 is ~100 of them).
  assert means["mae"] == pytest.approx(mae("validation"), abs=1e-6)
  # Another stream's noise moves the mean by ten times that at least (by
  # 2.6e-4 here).
  assert abs(mae("evaluation") - mae("validation")) > 1e-5


def test_a_single_term_is_refused(tmp_path):
  config = load_config("demo")
  config.losses = ("mae",)
  with pytest.raises(train.ConfigError, match="one term"):
    baselines.compute_loss_scales(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_a_stack_answers_each_row_with_its_nearest_unet_in_evaluation_mode(run):
  # BatchNorm folded into the convolutions is exact arithmetic: float32
  # roundoff of a 15-layer network, ~1e-6 of the output scale.
  _, workdir, _ = run
  _, model, variables, _ = train.load_trained(workdir)
  rng = np.random.default_rng(0)
  zf = rng.random((3, 32, 32, 2)).astype(np.float32)
  # Rows at λ near 1, exactly 0 and near 0: the nearest Unet answers.
  coeffs = np.asarray(hparams.coefficients(np.array([[0.9], [0.0], [0.2]])))
  got = np.asarray(model.apply(variables, zf, coeffs))
  unet = models.Unet(channels=model.channels, batch_norm=model.batch_norm)
  for row, index in enumerate([1, 0, 0]):
    member = jax.tree_util.tree_map(lambda v, index=index: v[index], variables)
    want = np.asarray(unet.apply(member, zf[row:row + 1]))[0]
    np.testing.assert_allclose(got[row], want, rtol=0,
                               atol=1e-5 * np.abs(want).max())


def test_a_stack_runs_the_same_unrolled_or_vmapped(run):
  # The strategy only changes how XLA runs the L Unets (one grouped
  # convolution or L ordinary ones): float32 summation order, 1e-5 of scale.
  # In training the rows come as one block of the batch per Unet.
  _, workdir, _ = run
  config, _, variables, _ = train.load_trained(workdir)
  zf = np.tile(np.random.default_rng(1).random((2, 32, 32, 2)).astype(np.float32),
               (2, 1, 1, 1))
  coeffs = np.repeat(np.asarray(hparams.coefficients(np.array([[0.0], [1.0]]))), 2, 0)
  outs = []
  for strategy in ("vmap", "loop"):
    model = train.build_model(config, strategy=strategy)
    recon, _ = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, zf, coeffs)
    outs.append(np.asarray(recon))
  assert outs[0].shape == (4, 32, 32)
  np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-5 * np.abs(outs[0]).max())


# A stack of three Unets (λ = 0, 0.5, 1; 32×32, 4 channels, 2 steps) trained
# by commit c86c71a, when the stack was not yet a flax module: its checkpoint
# and its baselines.json as that code wrote them.
OLD_STACK = os.path.join(os.path.dirname(__file__), "data", "stack_c86c71a")


def test_a_stack_written_by_earlier_code_loads_and_scores_as_it_did(tmp_path, data_dir):
  workdir = str(tmp_path / "stack")
  shutil.copytree(OLD_STACK, workdir)
  config, model, variables, step = train.load_trained(workdir)
  assert isinstance(model, models.UnetStack) and step == 2
  assert model.lambdas == ((0.0,), (0.5,), (1.0,))
  with open(os.path.join(workdir, "baselines.json")) as f:
    stored = json.load(f)
  config.data.data_dir = data_dir  # the same embedded slices, built here
  again = baselines.validation_term_means(config, model, variables, model.lambdas)
  # The earlier code scored each Unet alone, BatchNorm folded per layer as
  # it ran; here the stack's folded weights run through the grid program:
  # the same float32 arithmetic, regrouped (rtol 1e-5; means of ~100 slices).
  for want, got in zip(stored["terms"], again):
    for name in stored["losses"]:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


def test_two_lambdas_of_one_loss_weighting_are_refused(tmp_path):
  config = load_config("demo_k4", "quick")  # four terms, three hyperparameters
  # (1, 0, 0) and (1, 1, 1) both weight data consistency alone: the stack
  # would train the second Unet and answer its λ with the first.
  with pytest.raises(train.ConfigError, match=r"λ = \(1\.0, 0\.0, 0\.0\) and \(1\.0, 1\.0, "
                                              r"1\.0\) weight the loss alike"):
    baselines.train_baselines(config, str(tmp_path / "b"),
                              [(1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
  assert not (tmp_path / "b").exists()
  # 0.1 and 0.1 + 1e-9 are two floats but one float32: both Unets trained at
  # one coefficient vector, and every score of the second λ was the first's.
  with pytest.raises(train.ConfigError, match=r"λ = \(0\.1, 0\.0, 0\.0\) and "
                                              r"\(0\.100000001, 0\.0, 0\.0\) are one λ in "
                                              r"float32"):
    baselines.train_baselines(config, str(tmp_path / "b"),
                              [(0.1, 0.0, 0.0), (0.100000001, 0.0, 0.0), (0.6, 0.0, 0.0)])
  assert not (tmp_path / "b").exists()
