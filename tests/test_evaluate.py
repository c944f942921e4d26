"""Tests for hyperrecon_jax.evaluate: a split over a λ grid, measured, scored and
aggregated; Fig. 7 pairs."""

import functools
import json
import re

from evaluation_support import SIZE
from evaluation_support import per_lambda
from evaluation_support import smooth_images
from evaluation_support import tiny_hyperunet
import jax
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import evaluate
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import physics
from hyperrecon_jax import results

# Three batches of 2 slices of evaluation_support's size, volumes
# 7 (2 slices) and 9 (3 slices); the last row of the last batch is padding.
LAM = hparams.grid(5)
# An "rbg" key: threefry takes ~7 s to compile on 2 cores, rbg under 1 s.
KEY = jax.random.key(42, impl="rbg")
CHUNK = 4  # S·G = 10 per batch: three calls of 4, two pairs padded


def _operator():
  mask = np.zeros((SIZE, SIZE), np.float32)
  mask[SIZE // 2 - 3:SIZE // 2 + 3] = 1.0
  mask[::3] = 1.0
  return physics.CSMRI(mask, noise_sigma=0.02)  # noise: the key matters


def _batches(pad_seed=0):
  pad = np.random.default_rng(pad_seed).random((1, SIZE, SIZE)).astype(np.float32) * 5
  images = smooth_images(5, 10)
  return [
      {"image": images[:2], "volume": np.array([7, 7]), "slice": np.array([0, 1]),
       "valid": np.array([True, True])},
      {"image": images[2:4], "volume": np.array([9, 9]), "slice": np.array([0, 1]),
       "valid": np.array([True, True])},
      {"image": np.concatenate([images[4:], pad]), "volume": np.array([9, pad_seed]),
       "slice": np.array([2, 99]), "valid": np.array([True, False])},
  ]


@functools.cache
def _result(pad_seed=0):
  net, variables, _ = tiny_hyperunet()
  return evaluate.evaluate_grid(net, variables, _operator(), _batches(pad_seed), LAM,
                                key=KEY, chunk=CHUNK)


def _direct():
  """Per-slice metrics (S, G) and zero-filled metrics (S,), from per-λ model calls."""
  op, coeffs, g = _operator(), np.asarray(hparams.coefficients(LAM)), len(LAM)
  recons, targets, zf_mags = [], [], []
  for batch in _batches():
    keep = batch["valid"]
    # Each slice measured alone, with the key of its (volume, slice) ids.
    zf = np.concatenate([np.asarray(op.zero_filled(op.measure(
        image[None], jax.random.fold_in(jax.random.fold_in(KEY, int(v)), int(s)))))
                         for image, v, s in zip(batch["image"], batch["volume"],
                                                batch["slice"])])
    recons.append(per_lambda(zf, coeffs)[keep])
    targets.append(batch["image"][keep])
    zf_mags.append(np.sqrt(np.sum(zf[keep] ** 2, -1)))
  x, zf_mag = np.concatenate(targets), np.concatenate(zf_mags)
  s = x.shape[0]
  # All (slice, λ) pairs as one flat batch of metric calls.
  flat, xs, zs = np.concatenate(recons).reshape(s * g, SIZE, SIZE), np.repeat(x, g, 0), np.repeat(
      zf_mag, g, 0)
  grid, base = {}, {}
  for m in results.METRICS:
    if m == "rpsnr":
      grid[m], base[m] = metrics.rpsnr(flat, zs, xs), metrics.rpsnr(zf_mag, zf_mag, x)
    else:
      grid[m], base[m] = getattr(metrics, m)(flat, xs), getattr(metrics, m)(zf_mag, x)
  return ({m: np.asarray(v).reshape(s, g) for m, v in grid.items()},
          {m: np.asarray(v) for m, v in base.items()})


def test_evaluate_grid_matches_direct_computation():
  result = _result()
  grid, base = _direct()
  assert result["num_slices"] == 5 and result["num_volumes"] == 2
  assert result["metrics"] == list(results.METRICS)
  np.testing.assert_allclose(result["lambdas"], LAM)
  for m in results.METRICS:
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["per_slice"][m], grid[m], **tol)
    np.testing.assert_allclose(result["mean"][m], grid[m].mean(0), **tol)
    np.testing.assert_allclose(result["std"][m], grid[m].std(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(result["zero_filled"]["mean"][m], base[m].mean(), **tol)
  np.testing.assert_allclose(result["zero_filled"]["mean"]["rpsnr"], 0.0, atol=1e-6)


def test_evaluate_grid_groups_volumes():
  result = _result()
  assert result["volumes"] == [7, 9]
  assert result["slices"] == {"volume": [7, 7, 9, 9, 9], "slice": [0, 1, 0, 1, 2]}
  for m in results.METRICS:
    per_slice = np.asarray(result["per_slice"][m])
    np.testing.assert_allclose(result["volume_mean"][m],
                               [per_slice[:2].mean(0), per_slice[2:].mean(0)], rtol=1e-12)
    z = np.asarray(result["zero_filled"]["per_slice"][m])
    np.testing.assert_allclose(result["zero_filled"]["volume_mean"][m],
                               [z[:2].mean(), z[2:].mean()], rtol=1e-12)


def test_evaluate_grid_ignores_padding_and_is_deterministic():
  a, b = _result(0), _result(1)  # padding rows differ in image and ids
  assert results.to_json(a) == results.to_json(b)
  net, variables, _ = tiny_hyperunet()
  again = evaluate.evaluate_grid(net, variables, _operator(), _batches(0), LAM, key=KEY,
                                 chunk=CHUNK)
  assert results.to_json(again) == results.to_json(a)


def test_a_batch_of_another_image_size_is_named_as_the_batch_s():
  # It read "x has images of shape (8, 8), expected (16, 16) (full shape
  # (1, 8, 8))": a batch of one slice named x, from inside the measurement.
  net, variables, _ = tiny_hyperunet()
  batches = _batches()
  small = {**batches[1], "image": batches[1]["image"][:, ::2, ::2]}
  with pytest.raises(errors.InputError, match=re.escape(
      f"batch 1: image has slices of {SIZE // 2}×{SIZE // 2} pixels (shape (2, {SIZE // 2}, "
      f"{SIZE // 2})), but the operator measures {SIZE}×{SIZE} images (its mask's shape)")):
    evaluate.evaluate_grid(net, variables, _operator(), [batches[0], small], LAM, key=KEY,
                           chunk=CHUNK)


def test_the_noise_of_a_slice_does_not_depend_on_its_batch():
  # The same five slices as one padded batch of 6 in reverse order: every
  # slice keeps its measurement, so its metrics are those of the 3 batches.
  batches = _batches()
  images = np.concatenate([b["image"] for b in batches])[::-1]
  volumes = np.concatenate([b["volume"] for b in batches])[::-1]
  slices = np.concatenate([b["slice"] for b in batches])[::-1]
  valid = np.concatenate([b["valid"] for b in batches])[::-1]
  net, variables, _ = tiny_hyperunet()
  one = evaluate.evaluate_grid(
      net, variables, _operator(),
      [{"image": images, "volume": volumes, "slice": slices, "valid": valid}], LAM,
      key=KEY, chunk=CHUNK)
  three = _result()
  for m in ("psnr", "ssim"):
    # Same inputs, other chunk boundaries: float32 roundoff of the model only.
    np.testing.assert_allclose(np.asarray(one["per_slice"][m])[::-1],
                               three["per_slice"][m], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(one["zero_filled"]["per_slice"][m])[::-1],
                               three["zero_filled"]["per_slice"][m], rtol=1e-6)


def test_slice_keys_depend_on_the_ids_only():
  a = evaluate.slice_keys(KEY, ["file1.h5", "file1.h5", "file2.h5"], [3, 4, 3])
  b = evaluate.slice_keys(KEY, ["file2.h5", "file1.h5"], [3, 3])
  data = lambda k: np.asarray(jax.random.key_data(k))
  np.testing.assert_array_equal(data(a[0]), data(b[1]))
  np.testing.assert_array_equal(data(a[2]), data(b[0]))
  assert not np.array_equal(data(a[0]), data(a[1]))
  assert not np.array_equal(data(a[0]), data(a[2]))


def test_ids_images_and_keys_of_other_lengths_are_named():
  # Unchecked, each is a bare "scan got values with different leading axis sizes".
  with pytest.raises(errors.InputError, match=r"volumes and slices must be \(B,\) vectors of "
                                              r"one length.* got shapes \(3,\) and \(2,\)\."):
    evaluate.slice_keys(KEY, [0, 0, 1], [1, 2])
  with pytest.raises(errors.InputError, match=r"got shapes \(\) and \(\)\."):
    evaluate.slice_keys(KEY, 7, 1)
  images = smooth_images(2, 11)
  keys = evaluate.slice_keys(KEY, [7, 7], [0, 1])
  op = _operator()
  for fn in (evaluate.measure, evaluate.measure_slices):
    with pytest.raises(errors.InputError, match=rf"images must have shape \(B, H, W\), got "
                                                rf"shape \({SIZE}, {SIZE}\)\."):
      fn(op, images[0], keys[:1])
    with pytest.raises(errors.InputError, match=rf"keys must hold one key per image.*images have "
                                                rf"shape \(2, {SIZE}, {SIZE}\), keys shape "
                                                r"\(1,\)\."):
      fn(op, images, keys[:1])
  # One key per image: each slice is the operator's own measurement with its key.
  got = np.asarray(evaluate.measure_slices(op, images, keys))
  for i in range(2):
    want = op.zero_filled(op.measure(images[i:i + 1], keys[i]))[0]
    # The same FFTs in another program: an inverse and forward 2-D FFT of
    # 16×16 values ≤ ~1 round by at most about 2·log2(256)·2⁻²⁴ ≈ 1e-6 each.
    np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-6)


def test_result_json_round_trip():
  result = _result()
  assert results.from_json(results.to_json(result)) == result
  assert results.from_json(results.to_json(result, indent=1)) == result
  with pytest.raises(ValueError, match="format"):
    results.from_json('{"mean": {}}')


def test_reconstructions_not_finite_are_the_psnrs_a_result_cannot_hold():
  # None is how a result stores a value that is not finite; +inf (an exact
  # match) counts too: a result cannot tell it from NaN once stored.
  got = results.reconstructions_not_finite([[20.0, None, np.nan], [-np.inf, np.inf, 0.0]])
  np.testing.assert_array_equal(got, [[False, True, True], [True, True, False]])
  assert results.reconstructions_not_finite([]).shape == (0, 0)


def test_a_result_changed_after_it_was_written_is_refused():
  # A digit changed in a report (18.79 dB → 19.79) was summarized as measured.
  result = _result()
  text = results.to_json(result, indent=1)
  best = result["mean"]["psnr"][0]
  changed = text.replace(json.dumps(best), json.dumps(best + 1.0), 1)
  assert changed != text
  with pytest.raises(ValueError, match=r"run/eval/lambda_grid.json: its content differs from "
                                       r"the digest it was written with \(content_sha256\)"):
    results.from_json(changed, "run/eval/lambda_grid.json")
  # Layout is not content: the same values written compactly read back.
  compact = json.dumps(json.loads(text), separators=(",", ":"))
  assert results.from_json(compact) == result
  # NaN as Python's json.dump writes it by default: a ValueError of the
  # digest's strict JSON, a traceback from summarize.py.
  for constant in ("NaN", "Infinity", "-Infinity"):
    nan = text.replace(json.dumps(best), constant, 1)
    with pytest.raises(errors.InputError, match=rf"run/eval/lambda_grid.json is not valid "
                                                rf"JSON \({constant} is not a number of "
                                                r"strict JSON, which a report writes as null\)"):
      results.from_json(nan, "run/eval/lambda_grid.json")
  # Deleting the digest with the edit does not switch the check off.
  without = json.loads(changed)
  del without[results.DIGEST]
  with pytest.raises(ValueError, match=r"run/eval/lambda_grid.json holds no digest of its "
                                       r"content \(content_sha256\): it was edited"):
    results.from_json(json.dumps(without), "run/eval/lambda_grid.json")


def test_best_lambda():
  result = _result()
  for m in results.METRICS:
    mean = np.asarray(result["mean"][m])
    best = results.best_lambda(result, m)
    index = np.argmin(mean) if m in ("mae", "nmse", "hfen") else np.argmax(mean)
    assert best.index == index and best.value == pytest.approx(mean[index])
    assert best.lam == pytest.approx(LAM[index].tolist())
    assert result["best"][m] == best._asdict()
  with pytest.raises(ValueError, match="metric"):
    results.best_lambda(result, "dice")


def test_evaluate_grid_bad_input():
  net, variables, _ = tiny_hyperunet()
  run = functools.partial(evaluate.evaluate_grid, net, variables, _operator(), key=KEY)
  batch = _batches()[0]
  with pytest.raises(ValueError, match="lam_grid"):
    run([batch], np.linspace(0, 1, 5))
  # Coefficients given as λ: it said "coeffs ... got shape (1, 3)".
  with pytest.raises(ValueError, match=r"lam_grid must have 1 column\(s\), the λ of a model of "
                                       r"2 loss terms .* got shape \(1, 2\)"):
    run([batch], np.array([[0.5, 0.5]]))
  with pytest.raises(ValueError, match="valid"):
    run([{k: v for k, v in batch.items() if k != "valid"}], LAM)
  with pytest.raises(ValueError, match="image"):
    run([{**batch, "image": batch["image"][0]}], LAM)
  with pytest.raises(ValueError, match="no valid slice"):
    run([], LAM)
  with pytest.raises(ValueError, match=r"give key=jax\.random\.key\(seed\), got key=None"):
    evaluate.evaluate_grid(net, variables, _operator(), [batch], LAM, key=None)


def test_summarize_checks_shapes():
  grid = {m: np.zeros((2, 3)) for m in results.METRICS}
  base = {m: np.zeros(2) for m in results.METRICS}
  result = results.summarize(grid, base, hparams.grid(3), ["a", "b"], [0, 0], per_slice=False)
  assert result["volumes"] == ["a", "b"] and "per_slice" not in result
  with pytest.raises(ValueError, match="psnr"):
    results.summarize(grid, base, hparams.grid(4), ["a", "b"], [0, 0])


def test_unscorable_slices_are_left_out_and_listed():
  # Slice (7, 3) has an all-zero ground truth: its NMSE is inf at every λ.
  grid = {m: np.array([[1.0, 2.0], [3.0, 4.0]]) for m in results.METRICS}
  grid["nmse"] = np.array([[np.inf, np.inf], [0.5, 0.25]])
  base = {m: np.zeros(2) for m in results.METRICS}
  result = results.summarize(grid, base, hparams.grid(2), [7, 8], [3, 4])
  assert result["unscored"] == {"nmse": [[7, 3]]}
  assert result["mean"]["nmse"] == [0.5, 0.25]
  assert result["mean"]["psnr"] == [2.0, 3.0]  # other metrics keep both
  assert result["volume_mean"]["nmse"] == [[None, None], [0.5, 0.25]]
  assert results.best_lambda(result, "nmse").index == 1
  results.to_json(result)


def test_a_metric_no_slice_can_score_has_no_best_lambda():
  grid = {m: np.zeros((1, 2)) for m in results.METRICS}
  grid["psnr"] = np.array([[np.inf, 30.0]])
  base = {m: np.zeros(1) for m in results.METRICS}
  result = results.summarize(grid, base, hparams.grid(2), [0], [0])
  assert result["mean"]["psnr"] == [None, None]
  assert result["best"]["psnr"] is None
  assert result["best"]["ssim"]["index"] == 0
  results.to_json(result)


def test_diverse_pair_one_dimensional_images():
  # Kept at the 70th percentile of 0..9: indices 7, 8, 9, with values 0, 5, -3.
  recons = np.full((10, 1), 100.0)
  recons[7:, 0] = [0.0, 5.0, -3.0]
  i, j, dist = evaluate.diverse_pair(recons, np.arange(10.0), percentile=70)
  assert (i, j) == (8, 9) and dist == pytest.approx(8.0)


def test_diverse_pair_images_and_single_survivor():
  rng = np.random.default_rng(0)
  recons = rng.random((20, 4, 4))
  psnrs = rng.random(20) * 10 + 20
  i, j, dist = evaluate.diverse_pair(recons, psnrs, percentile=50)
  kept = np.flatnonzero(psnrs >= np.percentile(psnrs, 50))
  dists = {(a, b): np.linalg.norm(recons[a] - recons[b]) for a in kept for b in kept if a < b}
  assert (i, j) == max(dists, key=dists.get) and dist == pytest.approx(max(dists.values()))
  best = int(np.argmax(psnrs))
  assert evaluate.diverse_pair(recons, psnrs, percentile=100) == (best, best, 0.0)


def test_diverse_pair_of_near_identical_images_with_a_large_common_part():
  # Differences of 1e-6 on values near 500: |a|² + |b|² − 2a·b cancels to
  # rounding (float64 keeps 16 digits of 10⁹), so the uncentred Gram form
  # picked the 28th-farthest of 45 pairs.
  rng = np.random.default_rng(0)
  recons = rng.random((64, 64)) * 1000.0 + 1e-6 * rng.normal(size=(20, 64, 64))
  psnrs = rng.normal(30, 1, 20)
  kept = np.flatnonzero(psnrs >= np.percentile(psnrs, 50))
  dists = {(a, b): np.linalg.norm(recons[a] - recons[b]) for a in kept for b in kept if a < b}
  i, j, dist = evaluate.diverse_pair(recons, psnrs, percentile=50)
  assert (i, j) == max(dists, key=dists.get) and dist == pytest.approx(max(dists.values()))


def test_diverse_pair_with_two_exact_reconstructions():
  # The 90th percentile of (inf, inf, 30, 29) interpolates inf − inf: NaN,
  # which kept nothing and returned "no pair".
  recons = np.arange(4.0)[:, None] * np.ones((4, 3))
  i, j, dist = evaluate.diverse_pair(recons, np.array([np.inf, np.inf, 30.0, 29.0]),
                                     percentile=90)
  assert (i, j) == (0, 1) and dist == pytest.approx(np.sqrt(3.0))


@pytest.mark.parametrize("recons, psnrs, percentile, match", [
    (np.zeros(5), np.zeros(5), 90, "recons"),
    (np.zeros((5, 3)), np.zeros(4), 90, "psnrs"),
    (np.zeros((5, 3)), np.zeros(5), 120, "percentile"),
    (np.zeros((5, 3)), np.full(5, np.nan), 90, "NaN"),
])
def test_diverse_pair_bad_input(recons, psnrs, percentile, match):
  with pytest.raises(ValueError, match=match):
    evaluate.diverse_pair(recons, psnrs, percentile=percentile)


def test_a_large_grid_runs_in_lambda_blocks_with_progress():
  # chunk=1 with batches of 2 slices: blocks of at most 32·1 // 2 = 16 λ, so a
  # 40-λ grid takes 3 calls per batch, balanced to 14 λ each (42 computed,
  # the last block wraps around and is cut), not 16 + 16 + 16 (48 computed).
  net, variables, _ = tiny_hyperunet()
  lam = hparams.grid(40)
  assert [(len(i), used) for i, used in evaluate._lambda_blocks(40, 2, 1)] == [
      (14, 14), (14, 14), (14, 12)]
  assert [len(i) for i, _ in evaluate._lambda_blocks(100, 32, 32)] == [25] * 4
  counts = []
  blocked = evaluate.evaluate_grid(net, variables, _operator(), _batches(), lam,
                                   key=KEY, chunk=1, progress=counts.append)
  # The last batch's padding row is run but is not work: the counts add up
  # to the 5 slices times 40 λ that a progress bar's total is.
  assert counts == [2 * 14, 2 * 14, 2 * 12] * 2 + [14, 14, 12]
  assert sum(counts) == 5 * 40
  whole = evaluate.evaluate_grid(net, variables, _operator(), _batches(), lam,
                                 key=KEY, chunk=128)
  for m in results.METRICS:
    np.testing.assert_allclose(blocked["per_slice"][m], whole["per_slice"][m],
                               rtol=1e-4, atol=1e-5)


def test_an_all_zero_slice_is_left_out_of_the_metrics_it_breaks():
  net, variables, _ = tiny_hyperunet()
  batches = _batches()
  batches[1] = dict(batches[1], image=np.concatenate(
      [batches[1]["image"][:1], np.zeros((1, SIZE, SIZE), np.float32)]))
  result = evaluate.evaluate_grid(net, variables, _operator(), batches, LAM,
                                  key=KEY, chunk=CHUNK)
  # NMSE and HFEN divide by the ground truth's energy; rPSNR and PSNR do not.
  assert result["unscored"] == {"nmse": [[9, 1]], "hfen": [[9, 1]]}
  for m in ("nmse", "hfen"):
    per_slice = np.asarray(result["per_slice"][m], np.float64)  # None → nan
    scored = np.delete(per_slice, 3, axis=0)
    np.testing.assert_allclose(result["mean"][m], scored.mean(0), rtol=1e-12)
  assert result["best"]["nmse"] is not None
  results.to_json(result)


TERMS = ("dc", "tv", "wavelet")


def test_evaluate_grid_scores_loss_terms_as_computed_directly():
  from hyperrecon_jax import losses
  net, variables, _ = tiny_hyperunet()
  op, coeffs = _operator(), np.asarray(hparams.coefficients(LAM))
  result = evaluate.evaluate_grid(net, variables, op, _batches(), LAM, key=KEY,
                                  chunk=CHUNK, terms=TERMS)
  expected = {n: [] for n in TERMS}
  for batch in _batches():
    keep = batch["valid"]
    y = np.concatenate([np.asarray(op.measure(
        image[None], jax.random.fold_in(jax.random.fold_in(KEY, int(v)), int(s))))
                        for image, v, s in zip(batch["image"], batch["volume"], batch["slice"])])
    recons = per_lambda(np.asarray(op.zero_filled(y)), coeffs)  # (S, G, H, W)
    values = np.stack([np.asarray(losses.compute_terms(
        TERMS, recons[:, g], batch["image"], operator=op, measurement=y))
                       for g in range(len(LAM))], 1)  # (S, G, K)
    for k, n in enumerate(TERMS):
      expected[n].append(values[keep, :, k])
  t = result["loss_terms"]
  assert t["names"] == list(TERMS) and t["num_scored"] == {n: 5 for n in TERMS}
  for n in TERMS:
    per_slice = np.concatenate(expected[n])  # (S, G)
    # Sums over 256 pixels of float32 values: the same roundoff as the
    # metrics of the test above.
    np.testing.assert_allclose(t["per_slice"][n], per_slice, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t["mean"][n], per_slice.mean(0), rtol=1e-4, atol=1e-5)
  # The image metrics are those of a run without terms.
  np.testing.assert_allclose(result["per_slice"]["psnr"], _result()["per_slice"]["psnr"],
                             rtol=1e-6)


def test_terms_of_the_weights_are_refused_by_evaluate_grid():
  net, variables, _ = tiny_hyperunet()
  with pytest.raises(ValueError, match="depend on the model's weights"):
    evaluate.evaluate_grid(net, variables, _operator(), _batches(), LAM, key=KEY,
                           terms=("dc", "weight_l1"))
