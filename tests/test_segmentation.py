"""Segmentation Dice (paper §5.5.1): loss and metric values, the Unet, training, scoring.

Values are checked against NumPy written from the formulas; the trained
segmenter is a few steps of the tiny 32×32 data (a real one is not needed to
check that the evaluator scores what it segments).
"""

import functools
import json
import os
import re

import configs
import flax.linen as nn
import jax
import jax.numpy as jnp
import loop_support
import numpy as np
import pytest

from hyperrecon_jax import data as hr_data
from hyperrecon_jax import evaluate
from hyperrecon_jax import hparams
from hyperrecon_jax import physics
from hyperrecon_jax import results
from hyperrecon_jax import segmentation
from hyperrecon_jax.models import count_params
from hyperrecon_jax.models.topology import conv_specs

C = 4


def numpy_soft_dice_loss(logits, labels, num_classes, eps=1.0):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  p = e / e.sum(-1, keepdims=True)
  t = np.eye(num_classes)[labels]
  out = []
  for b in range(len(p)):
    d = [(2 * (p[b, ..., c] * t[b, ..., c]).sum() + eps)
         / (p[b, ..., c].sum() + t[b, ..., c].sum() + eps)
         for c in range(1, num_classes)]
    out.append(1 - np.mean(d))
  return np.array(out)


def numpy_foreground_dice(pred, true, num_classes):
  out = []
  for b in range(len(pred)):
    d = []
    for c in range(1, num_classes):
      p, t = pred[b] == c, true[b] == c
      total = p.sum() + t.sum()
      d.append(1.0 if total == 0 else 2 * (p & t).sum() / total)
    out.append(np.mean(d))
  return np.array(out)


def test_soft_dice_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 8, 8, C)).astype(np.float32) * 3
  labels = rng.integers(0, C, size=(3, 8, 8))
  labels[2] = 0  # every foreground class absent: only the smoothing remains
  got = segmentation.soft_dice_loss(jnp.asarray(logits), jnp.asarray(labels), C)
  # float32 softmax and sums of 64 terms: relative error ~1e-6.
  np.testing.assert_allclose(np.asarray(got), numpy_soft_dice_loss(
      logits.astype(np.float64), labels, C), rtol=1e-5, atol=1e-6)


def test_soft_dice_loss_of_a_confident_exact_prediction_is_near_zero():
  labels = np.random.default_rng(1).integers(0, C, size=(2, 8, 8))
  logits = 50.0 * np.eye(C)[labels]
  loss = np.asarray(segmentation.soft_dice_loss(jnp.asarray(logits), jnp.asarray(labels), C))
  assert np.all(loss < 1e-6)


def test_foreground_dice_matches_numpy_and_a_hand_case():
  rng = np.random.default_rng(2)
  pred = rng.integers(0, C, size=(4, 6, 6))
  true = rng.integers(0, C, size=(4, 6, 6))
  pred[3], true[3] = 0, 0  # no foreground anywhere: every class scores 1
  got = np.asarray(segmentation.foreground_dice(jnp.asarray(pred), jnp.asarray(true), C))
  np.testing.assert_allclose(got, numpy_foreground_dice(pred, true, C), rtol=1e-6)
  assert got[3] == 1.0
  # Hand case: class 1 on 2 predicted and 2 true pixels, overlapping on 1
  # (Dice 2·1/4); classes 2 and 3 absent from both (1 each): mean 5/6.
  p = np.zeros((1, 2, 2), int)
  t = np.zeros((1, 2, 2), int)
  p[0, 0, :] = 1
  t[0, :, 0] = 1
  np.testing.assert_allclose(
      np.asarray(segmentation.foreground_dice(jnp.asarray(p), jnp.asarray(t), C)), [5 / 6])


def test_segmenter_is_the_unet_body_with_one_input_and_a_head_per_class():
  net = segmentation.Segmenter(num_classes=C, channels=4)
  variables = net.init(jax.random.key(0), jnp.zeros((2, 16, 16)))
  expected = sum(s.num_weights for s in conv_specs(4, in_channels=1, out_channels=C))
  bn = 2 * 4 * 14  # a scale and a bias per channel for each of 14 3×3 convolutions
  assert count_params(variables["params"]) == expected + bn
  assert net.apply(variables, jnp.ones((2, 16, 16))).shape == (2, 16, 16, C)
  with pytest.raises(ValueError, match=r"\(B, H, W\)"):
    net.apply(variables, jnp.ones((2, 16, 16, 1)))
  # It failed in a concatenation ("Cannot concatenate arrays ... (1, 5, 5, 4)").
  with pytest.raises(ValueError, match=r"image: images of 20×20 cannot be max-pooled 3 times"):
    net.apply(variables, jnp.ones((2, 20, 20)))
  with pytest.raises(ValueError, match=r"channels must be a whole number ≥ 1, got 0"):
    segmentation.Segmenter(num_classes=C, channels=0).init(jax.random.key(0),
                                                           jnp.zeros((2, 16, 16)))


SETTINGS = dict(channels=4, steps=3, batch_size=4, lr=1e-3, seed=0)


@pytest.fixture(scope="module")
def trained(data_dir, compilation_cache):
  del compilation_cache
  config = loop_support.make_config(data_dir)
  seg = segmentation.train(config.data, num_classes=C, **SETTINGS)
  return config, seg


def test_training_reports_a_validation_dice_and_the_data(trained):
  config, seg = trained
  assert 0.0 <= seg.info["validation_dice"] <= 1.0
  assert seg.info["data"]["image_size"] == config.data.image_size
  assert seg.info["num_classes"] == C and seg.info["steps"] == 3


def test_the_validation_dice_is_the_mean_over_the_split_without_padding(trained):
  config, seg = trained
  n = hr_data.num_examples(config.data, "validation")
  assert n % 8  # The default batch size of 8 pads the last batch.
  (whole,) = hr_data.batches(config.data, "validation", batch_size=n)
  assert whole["valid"].all()
  pred = np.asarray(segmentation.labels(seg, whole["image"]))
  expected = np.mean(numpy_foreground_dice(pred, whole["label"], C))
  # Per-slice Dice values are ratios of voxel counts, exact up to float32
  # rounding (about 1e-7 relative); their mean over n slices stays within 1e-6.
  assert seg.info["validation_dice"] == pytest.approx(expected, abs=1e-6)
  assert segmentation.validation_dice(seg, config.data, batch_size=n) == pytest.approx(
      expected, abs=1e-6)


def test_the_log_reports_about_ten_steps_and_the_last(trained):
  config, _ = trained
  logged = []
  segmentation.train(config.data, num_classes=C, **{**SETTINGS, "steps": 25},
                     log=lambda step, loss: logged.append(step))
  # Every 25 // 10 = 2nd step, and step 25, which is not one of them.
  assert logged == list(range(2, 25, 2)) + [25]


def test_a_diverging_segmenter_is_an_error_not_a_file(trained):
  config, _ = trained
  with pytest.raises(ValueError, match="non-finite"):
    segmentation.train(config.data, num_classes=C, **{**SETTINGS, "lr": 1e38},
                       log=lambda *_: None)


def test_bad_settings_are_named(trained):
  config, _ = trained
  with pytest.raises(ValueError, match="num_classes must be an integer ≥ 2"):
    segmentation.train(config.data, num_classes=1, **SETTINGS)
  # Classes the labels lack scored a perfect Dice on every slice (0.4147 at 6).
  with pytest.raises(ValueError, match=rf"num_classes=6, but the labels of mni152 hold {C} "
                                       rf"classes \(0 … {C - 1}\): give num_classes={C}"):
    segmentation.train(config.data, num_classes=6, **SETTINGS)
  with pytest.raises(ValueError, match="lr must be a positive finite number"):
    segmentation.train(config.data, num_classes=C, **{**SETTINGS, "lr": float("nan")})


def test_the_settings_come_from_the_config_segmenter_section():
  config = configs.load("demo_ao")
  config.segmenter.update(channels=0, steps=7, lr=0.5)
  assert segmentation.settings(config) == {
      "channels": config.model.channels, "steps": 7, "lr": 0.5,
      "batch_size": config.train.batch_size, "seed": config.train.seed}
  config.segmenter.channels = 3
  assert segmentation.settings(config)["channels"] == 3
  # Named as the config fields a user sets (the library's names were "steps", "lr").
  for field, value, message in (("steps", 0, r"config\.segmenter\.steps must be an integer "
                                                r"≥ 1, got 0"),
                                ("channels", -1, r"config\.segmenter\.channels must be an "
                                                 r"integer ≥ 0, got -1"),
                                ("lr", float("inf"), r"config\.segmenter\.lr must be a "
                                                     r"positive finite number, got inf")):
    bad = config.copy_and_resolve_references()
    bad.segmenter[field] = value
    with pytest.raises(ValueError, match=message):
      segmentation.settings(bad)
  bad = config.copy_and_resolve_references()
  bad.train.batch_size = 0  # named "batch_size", which no config has
  with pytest.raises(ValueError, match=r"config\.train\.batch_size must be an integer ≥ 1, "
                                       r"got 0"):
    segmentation.settings(bad)
  # The data section and the seed, as train.py checks them: a percentile of
  # 200 and a min_foreground of 2 ended in NumPy's tracebacks after a build.
  for field, value, message in (
      ("data.percentile", 200.0, r"config\.data\.percentile must lie in \(0, 100\], got 200"),
      ("data.min_foreground", 2.0, r"config\.data\.min_foreground must lie in \[0, 1\)"),
      ("data.gap_slices", -3, r"config\.data\.gap_slices must be an integer ≥ 0"),
      ("train.seed", -1, r"config\.train\.seed must be an integer from 0 to")):
    bad = config.copy_and_resolve_references()
    section, name = field.split(".")
    bad[section][name] = value
    with pytest.raises(ValueError, match=message):
      segmentation.settings(bad)


def test_the_width_and_rate_are_refused_as_the_config_fields_they_come_from():
  config = configs.load("demo_ao")
  config.segmenter.update(channels=0, lr=1e-3)
  config.model.channels = 0
  # segmenter.channels 0 takes the width from model.channels: that field is named.
  with pytest.raises(ValueError, match=r"^config\.model\.channels must be an integer ≥ 1, "
                                       r"got 0 \(the segmenter's width, since "
                                       r"config\.segmenter\.channels is 0\)$"):
    segmentation.settings(config)
  config.segmenter.channels = 3  # model.channels is then not the segmenter's
  assert segmentation.settings(config)["channels"] == 3
  # The bound is float32's largest number, (2 - 2**-23)·2**127 written out, as
  # train.lr's: it passes; a larger rate, such as 1e39 (∞ in float32), is refused.
  largest = float(2**128 - 2**104)
  with np.errstate(over="ignore"):
    assert np.float32(1e39) == np.inf and np.float32(largest) == largest
  config.segmenter.lr = largest
  assert segmentation.settings(config)["lr"] == largest
  for lr in (1e39, float(np.nextafter(largest, np.inf))):
    config.segmenter.lr = lr
    with pytest.raises(ValueError, match=r"^config\.segmenter\.lr must be a positive number "
                                         r"at most float32's largest, 3\.4028234663852886e\+38 "
                                         r"\(the training step computes in float32\), got "
                                         rf"{re.escape(repr(lr))}$"):
      segmentation.settings(config)
  # The library's own check, before any data is read.
  with pytest.raises(ValueError, match=r"^lr must be a positive number at most float32's "
                                       r"largest, .*, got 1e\+39$"):
    segmentation.check_settings(None, 4, 3, 4, 1e39)


class _Scale(nn.Module):
  """A stand-in model whose reconstruction is |zf| times the first coefficient.

  It follows the models' convention (`hyperrecon_jax.models`): (B, K)
  coefficients, one per row, or (K,) for the whole batch, and a λ-major grid's
  ``evaluation_weights`` / ``reconstruct_with``.
  """

  def __call__(self, zf, coeffs):
    first = coeffs[..., :1] if coeffs.ndim == 2 else coeffs[None, :1]
    return self.variables["params"]["gain"] * physics.magnitude(zf) * first[:, :, None]

  def evaluation_weights(self, coeffs):
    return {"first": coeffs[:, 0]}

  def reconstruct_with(self, weights, zf):
    return self.variables["params"]["gain"] * physics.magnitude(zf) * weights["first"]


_scale = _Scale()
_GAIN = {"params": {"gain": jnp.float32(1.0)}}


def test_evaluate_grid_scores_the_dice_of_each_reconstruction(trained):
  config, seg = trained
  from hyperrecon_jax import data
  batches = list(data.batches(config.data, "test", batch_size=4, training=False))[:2]
  size = config.data.image_size
  operator = physics.make_operator(config.task, (size, size))
  lam = np.array([[0.0], [0.5], [1.0]], np.float32)
  key = jax.random.key(7)
  variables = _GAIN
  result = evaluate.evaluate_grid(_scale, variables, operator, batches, lam,
                                  key=key, chunk=4, segmenter=seg)
  assert result["metrics"][-1] == "dice"
  # Independently: measure, reconstruct, segment and score slice by slice.
  coeffs = np.asarray(hparams.coefficients(lam))
  expected, expected_zf, truth = [], [], []
  for batch in batches:
    valid = np.asarray(batch["valid"], bool)
    zf = evaluate.measure_slices(operator, jnp.asarray(batch["image"]),
                                 evaluate.slice_keys(key, batch["volume"], batch["slice"]))
    mag = np.asarray(physics.magnitude(zf))
    rows = [numpy_foreground_dice(np.asarray(segmentation.labels(seg, mag * c[0])),
                                  np.asarray(batch["label"]), C) for c in coeffs]
    expected.append(np.stack(rows, 1)[valid])
    expected_zf.append(numpy_foreground_dice(np.asarray(segmentation.labels(seg, mag)),
                                             np.asarray(batch["label"]), C)[valid])
    truth.append(numpy_foreground_dice(np.asarray(segmentation.labels(seg, batch["image"])),
                                       np.asarray(batch["label"]), C)[valid])
  # The same labels on both sides (the segmenter run on the same images), so
  # the Dice agree to float32 summation order: 1e-6.
  np.testing.assert_allclose(np.array(result["per_slice"]["dice"]),
                             np.concatenate(expected), atol=1e-6)
  np.testing.assert_allclose(result["zero_filled"]["per_slice"]["dice"],
                             np.concatenate(expected_zf), atol=1e-6)
  np.testing.assert_allclose(result["ground_truth_dice"]["mean"],
                             np.concatenate(truth).mean(), atol=1e-6)
  assert result["best"]["dice"]["value"] == pytest.approx(max(result["mean"]["dice"]))
  json.loads(results.to_json(result))


def test_a_reconstruction_that_is_not_finite_scores_a_nan_dice(trained):
  # argmax of NaN logits is class 0 everywhere, which scored a NaN
  # reconstruction's Dice as if it were an empty segmentation.
  config, seg = trained
  from hyperrecon_jax import data
  from hyperrecon_jax import grid
  batch = next(data.batches(config.data, "test", batch_size=2, training=False))
  size = config.data.image_size
  operator = physics.make_operator(config.task, (size, size))
  zf = evaluate.measure_slices(operator, jnp.asarray(batch["image"]),
                               evaluate.slice_keys(jax.random.key(0), batch["volume"],
                                                   batch["slice"]))
  lam = np.array([[0.5], [1.0]], np.float32)
  coeffs = hparams.coefficients(lam)
  finite = grid.grid_metrics(_scale, _GAIN, zf, batch["image"], coeffs, segmenter=seg,
                             labels=batch["label"])
  assert np.all(np.isfinite(np.asarray(finite["dice"])))
  broken = grid.grid_metrics(_scale, {"params": {"gain": jnp.float32(np.nan)}}, zf,
                             batch["image"], coeffs, segmenter=seg, labels=batch["label"])
  assert np.all(np.isnan(np.asarray(broken["psnr"])))
  assert np.all(np.isnan(np.asarray(broken["dice"])))


def test_scoring_dice_needs_labels(trained):
  config, seg = trained
  size = config.data.image_size
  operator = physics.make_operator(config.task, (size, size))
  batch = {"image": np.zeros((2, size, size), np.float32), "volume": np.zeros(2, int),
           "slice": np.arange(2), "valid": np.ones(2, bool)}
  with pytest.raises(ValueError, match="batch 0 has no 'label'"):
    evaluate.evaluate_grid(_scale, _GAIN, operator, [batch],
                           np.array([[0.5]], np.float32), key=jax.random.key(0),
                           segmenter=seg)


def test_labels_that_are_not_classes_are_named_before_they_are_scored(trained):
  # Float labels were truncated (2.9 → 2), and labels ≥ C scored by the grid
  # without a word (Dice 0.2345 → 0.5678 with class 3 renumbered 7).
  config, seg = trained
  from hyperrecon_jax import data
  from hyperrecon_jax import grid
  batch = next(data.batches(config.data, "test", batch_size=2, training=False))
  size = config.data.image_size
  operator = physics.make_operator(config.task, (size, size))
  lam = np.array([[0.5]], np.float32)
  floats = {**batch, "label": np.asarray(batch["label"], np.float32) + 0.9}
  with pytest.raises(ValueError, match=r"batch 0's labels must be integer labels, got dtype "
                                       r"float32"):
    evaluate.evaluate_grid(_scale, _GAIN, operator, [floats], lam, key=jax.random.key(0),
                           segmenter=seg)
  beyond = np.where(np.asarray(batch["label"]) == C - 1, 7, batch["label"])
  zf = evaluate.measure_slices(operator, jnp.asarray(batch["image"]),
                               evaluate.slice_keys(jax.random.key(0), batch["volume"],
                                                   batch["slice"]))
  for score in (lambda labels: grid.grid_metrics(
                    _scale, _GAIN, zf, batch["image"], hparams.coefficients(lam),
                    segmenter=seg, labels=labels),
                lambda labels: grid.zero_filled_metrics(zf, batch["image"], segmenter=seg,
                                                        labels=labels)):
    with pytest.raises(ValueError, match=rf"labels: [\d,]+ of [\d,]+ labels lie outside "
                                         rf"\[0, {C}\) \(values 0\.\.7\)"):
      score(beyond)


_nifti = functools.partial(configs.folder_data, "nifti", image_size=32)


def test_the_classes_of_a_labelled_folder_run_from_0_to_its_largest_label(trained, tmp_path):
  import nibabel as nib
  config, _ = trained
  assert segmentation.label_classes(config.data) == C  # mni152: its tissue classes
  # Three volumes, the train split's labelled 1, 2, 3 and the others 1, 2.
  train = _seed_of(tmp_path, "train")
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3),
                                 labels={None: (2, 2, 1), train: (3, 2, 1)})
  largest = max(int(np.asarray(nib.load(os.path.join(site, f)).dataobj).max())
                for f in os.listdir(site) if f.endswith("_seg.nii.gz"))
  assert largest == 3
  assert segmentation.label_classes(_nifti(site, tmp_path / "tfds")) == largest + 1


def _seed_of(tmp_path, split):
  """The seed of the one of ``write_site``'s volumes 1, 2, 3 in a split."""
  probe = loop_support.write_site(tmp_path / "probe", (1, 2, 3), labels=(3, 2, 1))
  config = _nifti(probe, tmp_path / "probe_tfds")
  return int(hr_data.volumes(config, split)[0].name[4:6])


@pytest.mark.parametrize("split", ["test", "validation"])
def test_a_class_the_train_split_lacks_is_named(tmp_path, split):
  # Class 4 on the test volume only: the segmenter never learned it, and the
  # validation Dice scored it 1 on every slice (0.3333 of (0 + 0 + 1) / 3
  # after two steps). On the validation volume only, the segmenter would never
  # predict it, and the validation Dice would score it 0 wherever it is.
  other = _seed_of(tmp_path, split)
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3),
                                 labels={None: (3, 2, 1), other: (4, 2, 1)})
  with pytest.raises(ValueError, match=rf"class 4 of nifti .* is on the kept slices of the {split} "
                                       r"split only, none of the train split's: the segmenter "
                                       r"could not learn it"):
    segmentation.label_classes(_nifti(site, tmp_path / "tfds"))


@pytest.mark.parametrize("labels, message", [
    ({None: (3, 2, 1), 2: (40, 2, 1)}, r"go up to 40 \(sub-02_seg\.nii\.gz\), which makes 41 "
                                       r"classes, more than 32"),
    # One class past the limit: refused for it, not for the values 4..31 it skips.
    ({None: (3, 2, 1), 2: (32, 2, 1)}, r"go up to 32 \(sub-02_seg\.nii\.gz\), which makes 33 "
                                       r"classes, more than 32"),
    ({None: (3, 2, 1), 3: (3, -1, 1)}, r"hold the negative value -1 \(sub-03_seg\.nii\.gz\)"),
    ((0, 0, 0), r"hold background \(0\) only"),
    # Classes 3..19 would each score a Dice of 1 on every slice.
    ((20, 2, 1), r"skip 3, 4, 5, 6, 7, 8, 9, 10, … \(they run up to 20, in sub-0\d_seg\.nii\.gz\)"
                 r": a class that never occurs"),
    # Exactly eight skipped (3..10 of 0..11): all named, no "…".
    ((11, 2, 1), r"skip 3, 4, 5, 6, 7, 8, 9, 10 \(they run up to 11, in sub-0\d_seg\.nii\.gz\): "
                 r"a class that never occurs"),
])
def test_labels_a_segmenter_cannot_learn_are_named(tmp_path, labels, message):
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3), labels=labels)
  with pytest.raises(ValueError, match=message):
    segmentation.label_classes(_nifti(site, tmp_path / "tfds"))


@pytest.mark.parametrize("lost, also", [((4,), ""), ((4, 5), "; also 1 more")])
def test_a_class_on_no_kept_slice_is_named_with_its_file(tmp_path, lost, also):
  import nibabel as nib
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3), labels=(3, 2, 1))
  path = os.path.join(site, "sub-02_seg.nii.gz")
  label = np.asarray(nib.load(path).dataobj).copy()
  # One voxel of each lost class on axial slice 0, which holds no brain: its
  # foreground, a voxel or two of 20 × 24, is below min_foreground, so the
  # slice is dropped and the classes are in the files but on no slice the
  # segmenter sees.
  for x, value in enumerate(lost, start=10):
    label[x, 12, 0] = value
  nib.save(nib.Nifti1Image(label, np.eye(4)), path)
  with pytest.raises(ValueError, match=rf"class 4 of nifti .* \(sub-02_seg\.nii\.gz{also}\) is "
                                       r"on none of the kept 32×32 slices"):
    segmentation.label_classes(_nifti(site, tmp_path / "tfds"))


def test_a_folder_without_labels_or_built_for_evaluation_has_no_classes(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3))
  with pytest.raises(ValueError, match=r"has no label volumes to train a segmenter on"):
    segmentation.label_classes(_nifti(site, tmp_path / "tfds"))
  config = _nifti(site, tmp_path / "other")
  config.split_fractions = (0.0, 0.0, 1.0)
  with pytest.raises(ValueError, match=r"split_fractions must be three positive numbers"):
    segmentation.label_classes(config)
  assert not (tmp_path / "other").exists()  # refused before any build
