"""hyperrecon_jax.data.nifti: the nifti dataset's build, on tiny synthetic NIfTI volumes.

Which files a folder holds and how they pair are tested in
`tests/test_data_nifti_files.py`, the headers' checks in
`tests/test_data_nifti_headers.py`; both take the volumes and the config of
this module (`synthetic_volume`, `save_nifti`, `nifti_config`).
"""

import functools
import os
import re
import time

import configs
import nibabel as nib
import numpy as np
import pytest

import hyperrecon_jax as hr
from hyperrecon_jax.data import nifti
from hyperrecon_jax.data import nifti_files

SIZE = 32
SHAPE = (20, 24, 16)  # RAS voxels; axial slices are the last axis.
BRAIN_Z = range(3, 13)  # Axial slices with brain; the others are background.


def synthetic_volume(rng):
  """A noisy ellipsoid 'brain' with 3 label classes, zero outside z in BRAIN_Z."""
  x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
  r = np.sqrt(x ** 2 / 0.8 + y ** 2 / 0.9 + z ** 2)
  label = np.select([r < 0.35, r < 0.6, r < 0.9], [3, 2, 1], 0).astype(np.int16)
  label[..., [k for k in range(SHAPE[2]) if k not in BRAIN_Z]] = 0
  image = np.where(label > 0, 100.0 * label + rng.normal(0, 5, SHAPE), 0.0)
  return image.astype(np.float32), label


def save_nifti(array, path):
  nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("nifti")
  rng = np.random.default_rng(0)
  os.makedirs(folder / "labels" / "site_b")
  os.makedirs(folder / "site_b")
  for i in range(5):
    image, label = synthetic_volume(rng)
    rel = f"sub-{i:02d}_T1w.nii.gz" if i < 3 else os.path.join("site_b", f"sub-{i:02d}.nii")
    save_nifti(image, folder / rel)
    save_nifti(label, folder / "labels" / rel)
  return str(folder)


nifti_config = functools.partial(configs.folder_data, "nifti", image_size=SIZE)


@pytest.fixture(scope="module")
def cfg(manual_dir, tmp_path_factory):
  c = nifti_config(manual_dir, tmp_path_factory.mktemp("tfds"))
  hr.data.prepare(c)
  return c


def test_settings_reads_the_fields_runs_are_compared_by(cfg):
  # summarize.py compares runs' data by these fields: one the build does not
  # read refused runs of the same data, one it reads and the table lacks
  # put runs of other data side by side.
  from hyperrecon_jax.data import config_fields
  from hyperrecon_jax.data import nifti
  assert configs.fields_read(nifti.settings, cfg) == sorted(
      config_fields.SETTINGS_FIELDS["nifti"])


def test_build_examples(cfg):
  assert hr.data.has_labels(cfg)
  names, ids = [], []
  for split in hr.data.SPLITS:
    source = hr.data.load_split(cfg, split)
    vols = hr.data.volumes(cfg, split)
    assert len(source) == sum(len(v.slices) for v in vols)
    for v in vols:
      assert v.slices == tuple(BRAIN_Z)  # Background slices dropped.
      for i, k in zip(v.indices, v.slices):
        ex = source[i]
        assert (int(ex["volume"]), int(ex["slice"])) == (v.id, k)
        assert ex["image"].shape == ex["label"].shape == (SIZE, SIZE)
        assert 0 <= ex["image"].min() and ex["image"].max() <= 1
        assert set(np.unique(ex["label"])) <= {0, 1, 2, 3}
      names.append(v.name)
      ids.append(v.id)
  # Every subject in exactly one split, ids in sorted-name order.
  assert sorted(ids) == list(range(5))
  expected = sorted(["sub-00_T1w.nii.gz", "sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz",
                     os.path.join("site_b", "sub-03.nii"), os.path.join("site_b", "sub-04.nii")])
  assert [n for _, n in sorted(zip(ids, names))] == expected


def test_labels_follow_intensity(cfg):
  source = hr.data.load_split(cfg, "train")
  ex = source[len(source) // 2]
  # Label 3 (the brightest class) must be the brightest region after resizing.
  assert ex["image"][ex["label"] == 3].mean() > ex["image"][ex["label"] == 1].mean()
  assert (ex["image"][ex["label"] == 0] < 0.2).mean() > 0.9


def test_evaluation_pass_and_training(cfg):
  for split in ("validation", "test"):
    seen = []
    for b in hr.data.batches(cfg, split, batch_size=4):
      assert b["label"].dtype == np.int32 and b["label"].shape == (4, SIZE, SIZE)
      seen += list(zip(b["volume"][b["valid"]], b["slice"][b["valid"]]))
    assert seen == [(v.id, k) for v in hr.data.volumes(cfg, split) for k in v.slices]
  b = next(hr.data.batches(cfg, "train", batch_size=4))
  assert set(b["volume"]) <= {v.id for v in hr.data.volumes(cfg, "train")}


def test_axis_builds_distinct_version(cfg):
  coronal = nifti_config(cfg.manual_dir, cfg.data_dir, axis="coronal")
  assert hr.data.make_builder(coronal).data_dir != hr.data.make_builder(cfg).data_dir
  vols = hr.data.volumes(coronal, "test")
  assert all(max(v.slices) < SHAPE[1] for v in vols)


def test_without_labels(tmp_path):
  rng = np.random.default_rng(2)
  for i in range(3):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii")
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  assert not hr.data.has_labels(cfg)
  assert not hr.data.make_builder(cfg).is_prepared()  # told without a build
  b = next(hr.data.batches(cfg, "test", batch_size=2))
  assert set(b) == {"image", "volume", "slice", "valid"}


@pytest.mark.parametrize("kind", ["image_inf", "image_nan", "label_inf", "label_nan"])
def test_non_finite_voxels_fail_the_build(tmp_path, kind):
  rng = np.random.default_rng(5)
  volumes = [synthetic_volume(rng) for _ in range(3)]

  def write(broken):
    for i, (image, label) in enumerate(volumes):
      image, label = image.copy(), label.astype(np.float32)  # A float label file.
      if broken and i == 1:
        target = label if kind.startswith("label") else image
        target[5:8, 5:9, 6] = np.inf if kind.endswith("inf") else np.nan
      save_nifti(image, tmp_path / f"s{i}.nii.gz")
      save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")

  write(broken=True)
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  with pytest.raises(hr.data.DataError) as info:
    hr.data.prepare(cfg)
  bad = tmp_path / ("s1_seg.nii.gz" if kind.startswith("label") else "s1.nii.gz")
  assert str(info.value) == (
      f"{bad}: 12 of 7,680 voxels are not finite (NaN or ±Inf); fix or remove the file.")
  # TFDS deleted its temporary folder and the build its config's: no dataset,
  # finished or not, and no empty folder is left.
  assert not list((tmp_path / "tfds").glob("nifti/*"))
  write(broken=False)  # Fixed: the next run builds.
  assert sum(hr.data.num_examples(cfg, s) for s in hr.data.SPLITS) == 3 * len(BRAIN_Z)


def test_splits_that_would_be_empty_are_refused_by_name(tmp_path):
  rng = np.random.default_rng(6)
  for i in range(3):
    image, _ = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
  with pytest.raises(hr.errors.InputError, match=r"split_fractions must be three positive "
                                                 r"numbers .*got \(0\.8, 0\.0, 0\.2\)"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", split_fractions=(0.8, 0.0, 0.2)))
  # Three volumes give one to each split, whatever the fractions; two cannot.
  (tmp_path / "s2.nii.gz").unlink()
  with pytest.raises(hr.data.DataError, match=rf"{tmp_path} holds 2 volumes; training needs "
                                              "at least 3, one for each of the train"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  save_nifti(image, tmp_path / "s2.nii.gz")
  # Fractions that leave no volume for training: 4 volumes at 0.45 give
  # round(1.8) = 2 each to validation and test.
  image, _ = synthetic_volume(rng)
  save_nifti(image, tmp_path / "s3.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"{tmp_path} holds 4 volumes, too few .* "
                                              "give 2 to validation and 2 to test and "
                                              "leave 0 for training"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", split_fractions=(0.1, 0.45, 0.45)))
  (tmp_path / "s3.nii.gz").unlink()
  # Every slice of every volume below the foreground threshold: TFDS would
  # fail on its first empty split with an AssertionError.
  with pytest.raises(hr.data.DataError, match=r"the train split of nifti .* would hold no "
                                              r"slice: .*data\.min_foreground=0\.99"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", min_foreground=0.99))
  assert not list((tmp_path / "tfds").glob("nifti/*"))
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  assert [len(hr.data.volumes(cfg, s)) for s in hr.data.SPLITS] == [1, 1, 1]


def test_too_few_volumes_are_refused_before_a_build_is_announced(tmp_path, capfd):
  rng = np.random.default_rng(6)
  for i in range(2):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"^{tmp_path} holds 2 volumes; training needs "
                                              "at least 3"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  assert "building" not in capfd.readouterr().err
  assert not (tmp_path / "tfds").exists()


def test_a_volume_rewritten_in_place_at_the_same_size_builds_again(tmp_path):
  rng = np.random.default_rng(7)
  images = [synthetic_volume(rng)[0] for _ in range(3)]
  for i, image in enumerate(images):
    save_nifti(image, tmp_path / f"s{i}.nii")  # uncompressed: the size is the shape's
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  first = hr.data.make_builder(cfg).data_dir
  def every_slice():
    return np.stack([ex["image"] for s in hr.data.SPLITS for ex in hr.data.load_split(cfg, s)])

  before = every_slice()
  path = tmp_path / "s0.nii"
  size, mtime = path.stat().st_size, path.stat().st_mtime_ns
  # The change time has the kernel's tick resolution (10 ms at the coarsest,
  # HZ=100); the build above took longer, and this makes sure.
  time.sleep(0.05)
  save_nifti(images[0][::-1].copy(), path)  # processed again: other voxels, same shape
  os.utime(path, ns=(mtime, mtime))  # and its modification time set back (touch -r)
  assert path.stat().st_size == size and path.stat().st_mtime_ns == mtime
  assert hr.data.make_builder(cfg).data_dir != first
  after = every_slice()
  assert before.shape == after.shape and not np.array_equal(before, after)


def test_a_folder_built_for_evaluation_only_holds_every_volume_in_test(tmp_path):
  rng = np.random.default_rng(8)
  for i in range(2):  # two volumes: too few for a training folder
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  cfg = nifti_config(tmp_path, tmp_path / "tfds", split_fractions=hr.data.EVALUATION_ONLY)
  volumes = hr.data.volumes(cfg, "test")
  assert [v.name for v in volumes] == ["s0.nii.gz", "s1.nii.gz"]
  assert hr.data.num_examples(cfg, "test") == 2 * len(BRAIN_Z)
  # The same slices as a training build cuts from the same volumes.
  two = [ex["image"] for ex in hr.data.load_split(cfg, "test")]
  save_nifti(synthetic_volume(rng)[0], tmp_path / "s2.nii.gz")
  three = nifti_config(tmp_path, tmp_path / "tfds")
  same = sorted(((int(ex["volume"]), int(ex["slice"])), ex["image"])
                for s in hr.data.SPLITS for ex in hr.data.load_split(three, s)
                if int(ex["volume"]) < 2)
  np.testing.assert_array_equal(np.stack(two), np.stack([image for _, image in same]))
  # Its labels play no part: one volume with a label file does not stop it.
  save_nifti(synthetic_volume(rng)[1], tmp_path / "s0_seg.nii.gz")
  assert [v.name for v in hr.data.volumes(cfg, "test")] == ["s0.nii.gz", "s1.nii.gz", "s2.nii.gz"]
  assert not hr.data.has_labels(cfg)
  for split in ("train", "validation"):
    with pytest.raises(hr.data.DataError, match=rf"is built for evaluation only .* so it "
                                                rf"has no {split} split"):
      hr.data.load_split(cfg, split)
  # No other zero fractions: a training folder's splits must all hold volumes.
  with pytest.raises(hr.errors.InputError, match=r"or \(0\.0, 0\.0, 1\.0\) for a folder "
                                                 r"that is only evaluated; got \(0\.0, 0\.5"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", split_fractions=(0, 0.5, 0.5)))


def test_a_folder_scored_whole_is_not_told_to_change_the_model_s_data_settings(tmp_path):
  # evaluate.py --data builds the folder with the model's axis and
  # min_foreground, which it does not let a user change (--config.data is
  # refused): its refusals must not advise changing them.
  rng = np.random.default_rng(13)
  save_nifti(synthetic_volume(rng)[0], tmp_path / "s0.nii.gz")
  save_nifti(synthetic_volume(rng)[0][..., 5:8], tmp_path / "s1.nii.gz")  # 3 axial slices
  scored = functools.partial(nifti_config, tmp_path, tmp_path / "tfds",
                             split_fractions=hr.data.EVALUATION_ONLY)
  with pytest.raises(hr.data.DataError, match=r"s1\.nii\.gz: has RAS shape \(20, 24, 3\), so "
                                              r"its coronal planes .* narrower than 8") as thin:
    hr.data.prepare(scored(axis="coronal"))
  assert "config.data.axis" not in str(thin.value)
  assert "the model's coronal planes" in str(thin.value)
  assert "reconstruct.py" in str(thin.value)
  (tmp_path / "s0.nii.gz").unlink()
  (tmp_path / "s1.nii.gz").unlink()
  speck = np.zeros(SHAPE, np.float32)
  speck[10, 12, 8] = 1.0  # one voxel: no slice has 1 % foreground
  save_nifti(speck, tmp_path / "s2.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"the test split of nifti .* would hold no "
                                              r"slice: .*min_foreground=0\.01") as empty:
    hr.data.prepare(scored())
  assert "lower it" not in str(empty.value)
  assert "the model's" in str(empty.value)
  assert not list((tmp_path / "tfds").glob("nifti/*"))


def test_a_volume_without_a_kept_slice_is_in_the_index_and_checks(tmp_path):
  # The index lists a volume whose slices all fell below the foreground
  # threshold, with no slices; the check of the index against the records
  # must take it (evaluate.py --data lists it under without_slices).
  rng = np.random.default_rng(12)
  for i in range(2):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  speck = np.zeros(SHAPE, np.float32)
  speck[10, 12, 8] = 1.0  # one voxel: no slice has 1 % foreground
  save_nifti(speck, tmp_path / "s1a.nii.gz")
  cfg = nifti_config(tmp_path, tmp_path / "tfds", split_fractions=hr.data.EVALUATION_ONLY)
  volumes = hr.data.volumes(cfg, "test")
  assert [(v.name, len(v.slices)) for v in volumes] == [
      ("s0.nii.gz", len(BRAIN_Z)), ("s1.nii.gz", len(BRAIN_Z)), ("s1a.nii.gz", 0)]
  assert volumes[2].indices == range(2 * len(BRAIN_Z), 2 * len(BRAIN_Z))


@pytest.mark.parametrize("copy", ["copy-of-s1.nii", "copy-of-s1.nii.gz"])
def test_a_volume_in_the_folder_twice_is_refused(tmp_path, copy):
  rng = np.random.default_rng(10)
  for i in range(3):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  if copy.endswith(".gz"):  # the same bytes
    (tmp_path / copy).write_bytes((tmp_path / "s1.nii.gz").read_bytes())
  else:  # the same voxels in other bytes: gunzipped
    nib.save(nib.load(str(tmp_path / "s1.nii.gz")), str(tmp_path / copy))
  # Either is found by its digest, not as a near copy.
  names = rf"({re.escape(copy)} and s1\.nii\.gz|s1\.nii\.gz and {re.escape(copy)})"
  with pytest.raises(hr.data.DataError, match=rf"{names} in .* hold the same volume "
                                              r"\(identical voxels once normalized\)"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  assert not list((tmp_path / "tfds").glob("nifti/*"))  # no dataset left


def test_a_volume_saved_with_another_slope_is_refused(tmp_path):
  # The same stored voxels with scl_slope 3 instead of 1: normalized by a
  # percentile of their own, the float32 values differ in the last place at
  # a sixth of the voxels, and the exact digest let the copy into a split of
  # its own.
  rng = np.random.default_rng(12)
  for i in range(3):
    stored = synthetic_volume(rng)[0]
    save_nifti(stored, tmp_path / f"s{i}.nii.gz")
  img = nib.Nifti1Image(stored, np.eye(4))
  img.header.set_slope_inter(3.0, 0.0)
  nib.save(img, str(tmp_path / "s2-rescaled.nii.gz"))
  assert np.array_equal(nib.load(str(tmp_path / "s2-rescaled.nii.gz")).dataobj.get_unscaled(),
                        stored)
  digests = {n: nifti.content_digest(str(tmp_path), n, 99.5)
             for n in ("s2.nii.gz", "s2-rescaled.nii.gz")}
  assert len(set(digests.values())) == 2  # not bit for bit: the near-copy check finds it
  with pytest.raises(hr.data.DataError, match=r"s2-rescaled\.nii\.gz and s2\.nii\.gz|s2\.nii\.gz "
                                              r"and s2-rescaled\.nii\.gz"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  assert not list((tmp_path / "tfds").glob("nifti/*"))


@pytest.mark.parametrize("kind", ["thin", "complex", "fractional_labels", "beyond_float32",
                                  "subnormal"])
def test_volumes_the_model_cannot_read_right_are_refused_by_name(tmp_path, kind):
  rng = np.random.default_rng(11)
  for i in range(3):
    image, label = synthetic_volume(rng)
    if i == 1 and kind == "thin":
      image, label = image[..., 5:8], label[..., 5:8]  # 3 axial slices
    if i == 1 and kind == "complex":
      # A phase image: half of the brain has a negative real part.
      image = image * np.exp(1j * np.linspace(0, np.pi, SHAPE[0]))[:, None, None]
      image = image.astype(np.complex64)
    if i == 1 and kind in ("beyond_float32", "subnormal"):
      # Finite in float64, inf or a few grey levels in float32: the volume was
      # normalized into white slices, or built from subnormal numbers.
      image = image.astype(np.float64) * (1e42 if kind == "beyond_float32" else 1e-42)
    if i == 1 and kind == "fractional_labels":
      label = label.astype(np.float32)
      label[label == 2] = 2.5  # resampled with linear interpolation
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")
  message = {
      "thin": r"s1\.nii\.gz: has RAS shape \(20, 24, 3\), so its coronal planes are 20×3 "
              r"voxels, narrower than 8",
      "complex": r"s1\.nii\.gz: its voxels are of type complex64; expected real numbers",
      "fractional_labels": r"s1_seg\.nii\.gz: [\d,]+ of 7,680 label voxels are not whole "
                           r"numbers \(e\.g\. 2\.5\)",
      "beyond_float32": r"s1\.nii\.gz: [\d,]+ of 7,680 voxels are finite in its float64 but "
                        r"beyond float32's range",
      "subnormal": r"s1\.nii\.gz: the largest magnitude of its voxels, .* is below float32's "
                   r"smallest normal number",
  }[kind]
  with pytest.raises(hr.data.DataError, match=message):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", axis="coronal"))


def test_a_build_off_a_terminal_draws_no_bar_and_leaves_tfds_setting(tmp_path, capfd):
  # Under pytest stderr is not a terminal, as in a log file. TFDS's tqdm bars
  # end in carriage returns, which would hide the next line from grep.
  rng = np.random.default_rng(3)
  for i in range(3):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii")
  bars = hr.data.builder.tfds.core.utils.tqdm_utils
  assert bars._active
  hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  err = capfd.readouterr().err
  assert err.startswith("building the nifti dataset of ") and "\r" not in err
  assert bars._active


def test_voxel_sizes_are_the_affine_s_however_the_file_is_stored(tmp_path):
  # The sform says 3 mm slices, pixdim 1 mm (no qform). nibabel keeps a RAS
  # file's header and derives a reoriented one's from the affine: the voxel
  # sizes, and so the slices' aspect, depended on the storage alone.
  image, _ = synthetic_volume(np.random.default_rng(0))
  flip = np.array([[-1.0, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
  for name, data, affine in (("ras.nii", image, np.diag([1.0, 1.0, 3.0, 1.0])),
                             ("las.nii", image[::-1].copy(), np.diag([1.0, 1.0, 3.0, 1.0]) @ flip)):
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(None, code=0)
    img.header["pixdim"][1:4] = 1.0
    nib.save(img, str(tmp_path / name))
  (a, _, spacing_a), (b, _, spacing_b) = (
      nifti.read_volume(str(tmp_path), name, None, 99.5) for name in ("ras.nii", "las.nii"))
  assert spacing_a == spacing_b == (1.0, 1.0, 3.0)
  np.testing.assert_array_equal(a, b)


def _split_of(n, fractions=(0.7, 0.1, 0.2), seed=0):
  """The default split of n units, from its definition: validation, test, then train
  take the seeded permutation's first round(n·f) (at least 1), next round(n·f), rest."""
  order = list(np.random.default_rng(seed).permutation(n))
  n_val, n_test = max(round(n * fractions[1]), 1), max(round(n * fractions[2]), 1)
  return {"validation": order[:n_val], "test": order[n_val:n_val + n_test],
          "train": order[n_val + n_test:]}


def _planned(cfg):
  """{split: [names]} of a folder's build plan (its headers read, no slice cut)."""
  plan = hr.data.make_builder(cfg)._plan()
  return {split: [spec.name for spec in specs] for split, specs in plan.items()}


def test_the_volumes_of_one_subject_go_to_one_split(tmp_path):
  # Two sessions of sub-01 (BIDS folders) and of sub-02 (file names only),
  # one volume of sub-03 and one without a subject: 6 volumes, 4 subjects.
  rng = np.random.default_rng(13)
  names = ["extra.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
           "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz", "sub-02_ses-1_T1w.nii.gz",
           "sub-02_ses-2_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz"]
  for name in names:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    save_nifti(synthetic_volume(rng)[0], tmp_path / name)
  units = [[0], [1, 2], [3, 4], [5]]  # in the order of their first volume
  expected = {split: sorted(names[v] for u in ids for v in units[u])
              for split, ids in _split_of(len(units)).items()}
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  assert {s: sorted(v.name for v in hr.data.volumes(cfg, s)) for s in hr.data.SPLITS} == expected
  # Split volume by volume, sub-01 or sub-02 would be in two splits at this seed.
  by_volume = {v: s for s, ids in _split_of(len(names)).items() for v in ids}
  assert any(len({by_volume[v] for v in u}) > 1 for u in units)
  # A subject's volumes count once: two subjects cannot fill three splits.
  for name in names[:1] + names[5:]:
    (tmp_path / name).unlink()
  with pytest.raises(hr.data.DataError, match=rf"{tmp_path} holds 2 subjects; training needs "
                                              r"at least 3, .*\(a subject is never split"):
    hr.data.prepare(cfg)
  # A path that names two subjects is refused by name.
  save_nifti(synthetic_volume(rng)[0], tmp_path / "sub-01" / "sub-05_T1w.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"sub-01/sub-05_T1w\.nii\.gz: its path names 2 "
                                              r"BIDS subjects \(sub-01, sub-05\)"):
    hr.data.prepare(cfg)


def test_a_folder_of_one_volume_per_subject_keeps_its_split_and_build(cfg, tmp_path):
  # The module's folder (sub-00 … sub-04, in two folders) and one without
  # subject names: split volume by volume, as before subjects were read, and
  # with the same settings, so an existing build of them is used as it is.
  rng = np.random.default_rng(14)
  for i in range(7):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"scan{i}.nii")
  plain = nifti_config(tmp_path, tmp_path / "tfds")
  for c in (cfg, plain):
    names = [image for image, _ in nifti_files.find_files(c.manual_dir)]
    assert _planned(c) == {s: sorted(names[i] for i in ids)
                           for s, ids in _split_of(len(names)).items()}
    assert "split_by" not in nifti.settings(c)
  assert [v.name for v in hr.data.volumes(cfg, "test")] == _planned(cfg)["test"]


# Each type's value just beyond int32, and the smallest and largest it holds
# within: float32 has no 2³¹ − 1, its largest below 2³¹ is 2³¹ − 128.
@pytest.mark.parametrize("dtype, beyond, shown, within", [
    ("uint32", 2 ** 32 - 1, "4294967295", (0, 2 ** 31 - 1)),  # cast to -1
    ("int64", -2 ** 31 - 1, "-2147483649", (-2 ** 31, 2 ** 31 - 1)),  # to 2147483647
    ("float64", 2.0 ** 31, "2147483648", (-2 ** 31, 2 ** 31 - 1)),
    ("float32", 2.0 ** 31, "2147483648", (-2 ** 31, 2 ** 31 - 128)),
])
def test_label_classes_beyond_int32_are_refused_by_name(tmp_path, dtype, beyond, shown, within):
  # Labels are stored as int32; a class id beyond its range was cast
  # silently into another class, or a negative one.
  image, label = synthetic_volume(np.random.default_rng(17))
  save_nifti(image, tmp_path / "s0.nii.gz")
  stored = label.astype(dtype)
  stored[label == 2] = beyond
  nib.save(nib.Nifti1Image(stored, np.eye(4), dtype=dtype), str(tmp_path / "s0_seg.nii.gz"))
  count = int(np.count_nonzero(label == 2))
  assert 0 < count < label.size
  path = str(tmp_path / "s0_seg.nii.gz")
  with pytest.raises(hr.data.DataError) as info:
    nifti.read_volume(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", 99.5)
  assert str(info.value) == (
      f"{path}: {count:,} of {label.size:,} label voxels hold classes beyond int32's range, "
      f"in which labels are stored (e.g. {shown}): number the classes from -2,147,483,648 "
      "to 2,147,483,647.")
  # The same type with classes that int32 holds, its extremes included, is
  # read as it is.
  stored[label == 1], stored[label == 2] = within
  nib.save(nib.Nifti1Image(stored, np.eye(4), dtype=dtype), path)
  _, read, _ = nifti.read_volume(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", 99.5)
  assert read.dtype == np.int32
  np.testing.assert_array_equal(read.astype(np.int64), stored.astype(np.int64))


def test_a_complex_label_volume_is_refused_by_name(tmp_path):
  # Read as its real part, a label's classes would be whatever the phase left.
  image, label = synthetic_volume(np.random.default_rng(20))
  save_nifti(image, tmp_path / "s0.nii.gz")
  save_nifti(label.astype(np.complex64), tmp_path / "s0_seg.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"^{re.escape(str(tmp_path / 's0_seg.nii.gz'))}: "
                                              r"its voxels are of type complex64; expected "
                                              r"real numbers \(a magnitude label volume\)\.$"):
    nifti.read_volume(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", 99.5)
