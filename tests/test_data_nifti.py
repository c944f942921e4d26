"""Tests of the nifti manual dataset on tiny synthetic NIfTI volumes."""

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

SIZE = 32
SHAPE = (20, 24, 16)  # RAS voxels; axial slices are the last axis.
BRAIN_Z = range(3, 13)  # Axial slices with brain; the others are background.


def _volume(rng):
  """A noisy ellipsoid 'brain' with 3 label classes, zero outside z in BRAIN_Z."""
  x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
  r = np.sqrt(x ** 2 / 0.8 + y ** 2 / 0.9 + z ** 2)
  label = np.select([r < 0.35, r < 0.6, r < 0.9], [3, 2, 1], 0).astype(np.int16)
  label[..., [k for k in range(SHAPE[2]) if k not in BRAIN_Z]] = 0
  image = np.where(label > 0, 100.0 * label + rng.normal(0, 5, SHAPE), 0.0)
  return image.astype(np.float32), label


def _save(array, path):
  nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("nifti")
  rng = np.random.default_rng(0)
  os.makedirs(folder / "labels" / "site_b")
  os.makedirs(folder / "site_b")
  for i in range(5):
    image, label = _volume(rng)
    rel = f"sub-{i:02d}_T1w.nii.gz" if i < 3 else os.path.join("site_b", f"sub-{i:02d}.nii")
    _save(image, folder / rel)
    _save(label, folder / "labels" / rel)
  return str(folder)


_config = functools.partial(configs.folder_data, "nifti", image_size=SIZE)


@pytest.fixture(scope="module")
def cfg(manual_dir, tmp_path_factory):
  c = _config(manual_dir, tmp_path_factory.mktemp("tfds"))
  hr.data.prepare(c)
  return c


def test_settings_reads_the_fields_runs_are_compared_by(cfg):
  # summarize.py compares runs' data by these fields: one the build does not
  # read refused runs of the same data, one it reads and the table lacks
  # put runs of other data side by side.
  from hyperrecon_jax.data import common
  from hyperrecon_jax.data import nifti
  assert configs.fields_read(nifti.settings, cfg) == sorted(
      common.SETTINGS_FIELDS["nifti"])


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
  coronal = _config(cfg.manual_dir, cfg.data_dir, axis="coronal")
  assert hr.data.make_builder(coronal).data_dir != hr.data.make_builder(cfg).data_dir
  vols = hr.data.volumes(coronal, "test")
  assert all(max(v.slices) < SHAPE[1] for v in vols)


def test_seg_suffix_convention(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    _save(label, tmp_path / f"s{i}_seg.nii.gz")
  cfg = _config(tmp_path, tmp_path / "tfds")
  assert hr.data.has_labels(cfg)
  assert sum(hr.data.num_examples(cfg, s) for s in hr.data.SPLITS) == 3 * len(BRAIN_Z)


def test_without_labels(tmp_path):
  rng = np.random.default_rng(2)
  for i in range(3):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii")
  cfg = _config(tmp_path, tmp_path / "tfds")
  assert not hr.data.has_labels(cfg)
  assert not hr.data.make_builder(cfg).is_prepared()  # told without a build
  b = next(hr.data.batches(cfg, "test", batch_size=2))
  assert set(b) == {"image", "volume", "slice", "valid"}


def test_some_labels_missing(tmp_path):
  rng = np.random.default_rng(3)
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    if i:
      _save(label, tmp_path / f"s{i}_seg.nii.gz")
  with pytest.raises(hr.data.DataError, match="s0.nii.gz"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))


@pytest.mark.parametrize("kind", ["garbage", "2d", "label_shape", "label_axes"])
def test_bad_file_is_named(tmp_path, kind):
  rng = np.random.default_rng(4)
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    if kind == "label_shape":
      _save(label[:, :, :5] if i == 1 else label, tmp_path / f"s{i}_seg.nii.gz")
    if kind == "label_axes":
      # The image's voxels under a header whose first axis points left: it was
      # turned to RAS mirrored against its image.
      affine = np.diag([-1.0, 1.0, 1.0, 1.0]) if i == 1 else np.eye(4)
      nib.save(nib.Nifti1Image(label, affine), str(tmp_path / f"s{i}_seg.nii.gz"))
  if kind == "garbage":
    (tmp_path / "s1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
  elif kind == "2d":
    _save(np.ones((8, 8), np.float32), tmp_path / "s1.nii.gz")
  bad = "s1_seg.nii.gz" if kind.startswith("label") else "s1.nii.gz"
  if kind == "label_axes":
    bad += r": its voxel axes point LAS, those of the image .*s1\.nii\.gz RAS"
  with pytest.raises(hr.data.DataError, match=bad):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))


def test_missing_or_empty_manual_dir(tmp_path):
  (tmp_path / "notes.txt").write_text("no volumes here")
  for folder in ("", str(tmp_path / "nope"), str(tmp_path)):
    with pytest.raises(hr.data.DataError, match="ABIDE") as info:
      hr.data.num_examples(_config(folder, tmp_path / "tfds"), "train")
    assert ".nii" in str(info.value)


@pytest.mark.parametrize("affine, problem", [
    (np.diag([1.0, 1.0, 0.0, 1.0]), "is singular"),  # a zero voxel size
    (np.array([[1.0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]]), "is singular"),
    (np.diag([1.0, np.nan, 1.0, 1.0]), "holds NaN or ±Inf"),
])
@pytest.mark.parametrize("which", ["s1.nii.gz", "s1_seg.nii.gz"])
def test_a_volume_without_orientation_is_named_by_the_build(tmp_path, affine, problem, which):
  # It read "cannot be read as a NIfTI image (sequence item 0: expected str
  # instance, NoneType found)".
  rng = np.random.default_rng(6)
  for i in range(3):
    image, label = _volume(rng)
    for array, name in ((image, f"s{i}.nii.gz"), (label, f"s{i}_seg.nii.gz")):
      img = nib.Nifti1Image(array, np.eye(4) if name != which else None)
      if name == which:  # the header alone: nibabel builds no image of such an affine
        img.header.set_sform(affine, 2)
        img.header.set_qform(None, 0)
      nib.save(img, str(tmp_path / name))
  np.testing.assert_array_equal(nib.load(str(tmp_path / which)).affine, affine)
  with pytest.raises(hr.data.DataError, match=rf"^{re.escape(str(tmp_path / which))}: its "
                                              rf"affine \(the header's voxel-to-world matrix\) "
                                              rf"{problem}.*, so the volume has no orientation; "
                                              r"fix the header\.$"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))


@pytest.mark.parametrize("kind", ["image_inf", "image_nan", "label_inf", "label_nan"])
def test_non_finite_voxels_fail_the_build(tmp_path, kind):
  rng = np.random.default_rng(5)
  volumes = [_volume(rng) for _ in range(3)]

  def write(broken):
    for i, (image, label) in enumerate(volumes):
      image, label = image.copy(), label.astype(np.float32)  # A float label file.
      if broken and i == 1:
        target = label if kind.startswith("label") else image
        target[5:8, 5:9, 6] = np.inf if kind.endswith("inf") else np.nan
      _save(image, tmp_path / f"s{i}.nii.gz")
      _save(label, tmp_path / f"s{i}_seg.nii.gz")

  write(broken=True)
  cfg = _config(tmp_path, tmp_path / "tfds")
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
    image, _ = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
  with pytest.raises(hr.errors.InputError, match=r"split_fractions must be three positive "
                                                 r"numbers .*got \(0\.8, 0\.0, 0\.2\)"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", split_fractions=(0.8, 0.0, 0.2)))
  # Three volumes give one to each split, whatever the fractions; two cannot.
  (tmp_path / "s2.nii.gz").unlink()
  with pytest.raises(hr.data.DataError, match=rf"{tmp_path} holds 2 volumes; training needs "
                                              "at least 3, one for each of the train"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  _save(image, tmp_path / "s2.nii.gz")
  # Fractions that leave no volume for training: 4 volumes at 0.45 give
  # round(1.8) = 2 each to validation and test.
  image, _ = _volume(rng)
  _save(image, tmp_path / "s3.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"{tmp_path} holds 4 volumes, too few .* "
                                              "give 2 to validation and 2 to test and "
                                              "leave 0 for training"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", split_fractions=(0.1, 0.45, 0.45)))
  (tmp_path / "s3.nii.gz").unlink()
  # Every slice of every volume below the foreground threshold: TFDS would
  # fail on its first empty split with an AssertionError.
  with pytest.raises(hr.data.DataError, match=r"the train split of nifti .* would hold no "
                                              r"slice: .*data\.min_foreground=0\.99"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", min_foreground=0.99))
  assert not list((tmp_path / "tfds").glob("nifti/*"))
  cfg = _config(tmp_path, tmp_path / "tfds")
  assert [len(hr.data.volumes(cfg, s)) for s in hr.data.SPLITS] == [1, 1, 1]


def test_too_few_volumes_are_refused_before_a_build_is_announced(tmp_path, capfd):
  rng = np.random.default_rng(6)
  for i in range(2):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"^{tmp_path} holds 2 volumes; training needs "
                                              "at least 3"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  assert "building" not in capfd.readouterr().err
  assert not (tmp_path / "tfds").exists()


def test_a_volume_rewritten_in_place_at_the_same_size_builds_again(tmp_path):
  rng = np.random.default_rng(7)
  images = [_volume(rng)[0] for _ in range(3)]
  for i, image in enumerate(images):
    _save(image, tmp_path / f"s{i}.nii")  # uncompressed: the size is the shape's
  cfg = _config(tmp_path, tmp_path / "tfds")
  first = hr.data.make_builder(cfg).data_dir
  def every_slice():
    return np.stack([ex["image"] for s in hr.data.SPLITS for ex in hr.data.load_split(cfg, s)])

  before = every_slice()
  path = tmp_path / "s0.nii"
  size, mtime = path.stat().st_size, path.stat().st_mtime_ns
  # The change time has the kernel's tick resolution (10 ms at the coarsest,
  # HZ=100); the build above took longer, and this makes sure.
  time.sleep(0.05)
  _save(images[0][::-1].copy(), path)  # processed again: other voxels, same shape
  os.utime(path, ns=(mtime, mtime))  # and its modification time set back (touch -r)
  assert path.stat().st_size == size and path.stat().st_mtime_ns == mtime
  assert hr.data.make_builder(cfg).data_dir != first
  after = every_slice()
  assert before.shape == after.shape and not np.array_equal(before, after)


def test_a_folder_built_for_evaluation_only_holds_every_volume_in_test(tmp_path):
  rng = np.random.default_rng(8)
  for i in range(2):  # two volumes: too few for a training folder
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  cfg = _config(tmp_path, tmp_path / "tfds", split_fractions=hr.data.EVALUATION_ONLY)
  volumes = hr.data.volumes(cfg, "test")
  assert [v.name for v in volumes] == ["s0.nii.gz", "s1.nii.gz"]
  assert hr.data.num_examples(cfg, "test") == 2 * len(BRAIN_Z)
  # The same slices as a training build cuts from the same volumes.
  two = [ex["image"] for ex in hr.data.load_split(cfg, "test")]
  _save(_volume(rng)[0], tmp_path / "s2.nii.gz")
  three = _config(tmp_path, tmp_path / "tfds")
  same = sorted(((int(ex["volume"]), int(ex["slice"])), ex["image"])
                for s in hr.data.SPLITS for ex in hr.data.load_split(three, s)
                if int(ex["volume"]) < 2)
  np.testing.assert_array_equal(np.stack(two), np.stack([image for _, image in same]))
  # Its labels play no part: one volume with a label file does not stop it.
  _save(_volume(rng)[1], tmp_path / "s0_seg.nii.gz")
  assert [v.name for v in hr.data.volumes(cfg, "test")] == ["s0.nii.gz", "s1.nii.gz", "s2.nii.gz"]
  assert not hr.data.has_labels(cfg)
  for split in ("train", "validation"):
    with pytest.raises(hr.data.DataError, match=rf"is built for evaluation only .* so it "
                                                rf"has no {split} split"):
      hr.data.load_split(cfg, split)
  # No other zero fractions: a training folder's splits must all hold volumes.
  with pytest.raises(hr.errors.InputError, match=r"or \(0\.0, 0\.0, 1\.0\) for a folder "
                                                 r"that is only evaluated; got \(0\.0, 0\.5"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", split_fractions=(0, 0.5, 0.5)))


def test_a_folder_scored_whole_is_not_told_to_change_the_model_s_data_settings(tmp_path):
  # evaluate.py --data builds the folder with the model's axis and
  # min_foreground, which it does not let a user change (--config.data is
  # refused): its refusals must not advise changing them.
  rng = np.random.default_rng(13)
  _save(_volume(rng)[0], tmp_path / "s0.nii.gz")
  _save(_volume(rng)[0][..., 5:8], tmp_path / "s1.nii.gz")  # 3 axial slices
  scored = functools.partial(_config, tmp_path, tmp_path / "tfds",
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
  _save(speck, tmp_path / "s2.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"the test split of nifti .* would hold no "
                                              r"slice: .*min_foreground=0\.01") as empty:
    hr.data.prepare(scored())
  assert "lower it" not in str(empty.value)
  assert "the model's" in str(empty.value)
  assert not list((tmp_path / "tfds").glob("nifti/*"))


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.0, 0.0, 1.0)])
def test_a_reconstruct_output_in_the_folder_is_refused_not_taken_for_a_scan(tmp_path, fractions):
  # reconstruct.py --output=site/a_recon.nii.gz beside site/a.nii.gz: the
  # model's own output would be scored (evaluate.py --data) or trained on as
  # another subject's scan. Its header's description says what it is.
  rng = np.random.default_rng(14)
  for i in range(3):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  recon = nib.Nifti1Image(_volume(rng)[0], np.eye(4))
  recon.header["descrip"] = b"hyperrecon lam=0.5"
  nib.save(recon, str(tmp_path / "s0_recon.nii.gz"))
  with pytest.raises(hr.data.DataError, match=r"s0_recon\.nii\.gz: .*reconstruct\.py's output "
                                              r"\(its header says 'hyperrecon lam=0\.5'\)"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", split_fractions=fractions))
  assert not list((tmp_path / "tfds").glob("nifti/*"))


def test_a_volume_without_a_kept_slice_is_in_the_index_and_checks(tmp_path):
  # The index lists a volume whose slices all fell below the foreground
  # threshold, with no slices; the check of the index against the records
  # must take it (evaluate.py --data lists it under without_slices).
  rng = np.random.default_rng(12)
  for i in range(2):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  speck = np.zeros(SHAPE, np.float32)
  speck[10, 12, 8] = 1.0  # one voxel: no slice has 1 % foreground
  _save(speck, tmp_path / "s1a.nii.gz")
  cfg = _config(tmp_path, tmp_path / "tfds", split_fractions=hr.data.EVALUATION_ONLY)
  volumes = hr.data.volumes(cfg, "test")
  assert [(v.name, len(v.slices)) for v in volumes] == [
      ("s0.nii.gz", len(BRAIN_Z)), ("s1.nii.gz", len(BRAIN_Z)), ("s1a.nii.gz", 0)]
  assert volumes[2].indices == range(2 * len(BRAIN_Z), 2 * len(BRAIN_Z))


def test_hidden_folders_are_not_searched_and_linked_ones_are_once(tmp_path):
  rng = np.random.default_rng(9)
  site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
  for folder in (site / ".Trash-1000" / "files", site / ".snapshot", elsewhere):
    folder.mkdir(parents=True)
  for rel in ("sub-00.nii.gz", "sub-01.nii.gz", ".Trash-1000/files/sub-01.nii.gz",
              ".snapshot/sub-00.nii.gz", "../elsewhere/sub-02.nii.gz"):
    _save(_volume(rng)[0], site / rel)
  os.symlink(elsewhere, site / "scanner2")  # a site's scans linked in
  os.symlink(elsewhere, site / "scanner2_again")  # the same folder twice
  os.symlink(site, site / "scanner2" / "back")  # a cycle
  found = [image for image, _ in nifti.find_files(str(site), labels=False)]
  assert found == ["scanner2/sub-02.nii.gz", "sub-00.nii.gz", "sub-01.nii.gz"]


def test_a_link_to_a_volume_that_is_gone_is_named_as_such(tmp_path):
  # It read "[Errno 2] No such file or directory: '…/sub-08.nii.gz'", of a
  # file the user could see listed.
  rng = np.random.default_rng(11)
  for i in range(3):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  os.symlink(tmp_path / "moved" / "s3.nii.gz", tmp_path / "s3.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"s3\.nii\.gz is a symbolic link to "
                                              r"'.*moved/s3\.nii\.gz', which does not exist"):
    nifti.find_files(str(tmp_path), labels=False)


def test_a_suffix_in_another_case_is_named_not_left_out(tmp_path):
  # A.NII and B.Nii.Gz were left out of the build without a word.
  rng = np.random.default_rng(12)
  for name in ("A.NII", "B.Nii.Gz", "c.nii"):
    _save(_volume(rng)[0], tmp_path / f"{name.lower()}.tmp.nii")
    os.rename(tmp_path / f"{name.lower()}.tmp.nii", tmp_path / name)  # nibabel mends the case
  with pytest.raises(hr.data.DataError, match=rf"{re.escape(str(tmp_path))} holds A\.NII, "
                                              r"B\.Nii\.Gz, whose suffix is not in lower case "
                                              r"\(\.nii\.gz, \.nii\): rename them"):
    nifti.find_files(str(tmp_path), labels=False)


def test_a_folder_that_cannot_be_listed_is_named_not_left_out(tmp_path, monkeypatch):
  # os.walk skipped a folder it could not list: its volumes were left out of
  # the build without a word, and a user with other permissions got other
  # splits. A scandir that fails stands for `chmod 000`, which root ignores.
  rng = np.random.default_rng(13)
  (tmp_path / "site2").mkdir()
  (tmp_path / "lost+found").mkdir()  # a file system's root: root's alone, and no subject
  for rel in ("s0.nii.gz", "s1.nii.gz", "site2/s2.nii.gz"):
    _save(_volume(rng)[0], tmp_path / rel)
  scandir, unreadable = os.scandir, {"lost+found"}

  def failing(path):
    if os.path.basename(os.fspath(path)) in unreadable:
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return scandir(path)

  monkeypatch.setattr(os, "scandir", failing)
  found = [image for image, _ in nifti.find_files(str(tmp_path), labels=False)]
  assert found == ["s0.nii.gz", "s1.nii.gz", "site2/s2.nii.gz"]
  unreadable.add("site2")
  with pytest.raises(hr.data.DataError, match=rf"{re.escape(str(tmp_path / 'site2'))} cannot be "
                                              r"searched \(Permission denied\): the volumes in "
                                              r"it would be left out"):
    nifti.find_files(str(tmp_path), labels=False)


def test_a_name_that_is_not_utf8_is_refused_before_the_build(tmp_path):
  # TFDS failed on it after reading every earlier volume, with a traceback
  # that named no file.
  rng = np.random.default_rng(14)
  for name in ("s0.nii.gz", "s1.nii.gz"):
    _save(_volume(rng)[0], tmp_path / name)
  os.rename(os.fsencode(tmp_path / "s1.nii.gz"), os.fsencode(tmp_path) + b"/s_pl\xe9in.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"holds 's_pl\\xe9in\.nii\.gz', whose path is "
                                              r"not valid UTF-8 .*: rename them"):
    nifti.find_files(str(tmp_path), labels=False)


@pytest.mark.parametrize("copy", ["copy-of-s1.nii", "copy-of-s1.nii.gz"])
def test_a_volume_in_the_folder_twice_is_refused(tmp_path, copy):
  rng = np.random.default_rng(10)
  for i in range(3):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  if copy.endswith(".gz"):  # the same bytes
    (tmp_path / copy).write_bytes((tmp_path / "s1.nii.gz").read_bytes())
  else:  # the same voxels in other bytes: gunzipped
    nib.save(nib.load(str(tmp_path / "s1.nii.gz")), str(tmp_path / copy))
  # Either is found by its digest, not as a near copy.
  names = rf"({re.escape(copy)} and s1\.nii\.gz|s1\.nii\.gz and {re.escape(copy)})"
  with pytest.raises(hr.data.DataError, match=rf"{names} in .* hold the same volume "
                                              r"\(identical voxels once normalized\)"):
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  assert not list((tmp_path / "tfds").glob("nifti/*"))  # no dataset left


def test_a_volume_saved_with_another_slope_is_refused(tmp_path):
  # The same stored voxels with scl_slope 3 instead of 1: normalized by a
  # percentile of their own, the float32 values differ in the last place at
  # a sixth of the voxels, and the exact digest let the copy into a split of
  # its own.
  rng = np.random.default_rng(12)
  for i in range(3):
    stored = _volume(rng)[0]
    _save(stored, tmp_path / f"s{i}.nii.gz")
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
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  assert not list((tmp_path / "tfds").glob("nifti/*"))


@pytest.mark.parametrize("kind", ["thin", "complex", "fractional_labels", "beyond_float32",
                                  "subnormal"])
def test_volumes_the_model_cannot_read_right_are_refused_by_name(tmp_path, kind):
  rng = np.random.default_rng(11)
  for i in range(3):
    image, label = _volume(rng)
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
    _save(image, tmp_path / f"s{i}.nii.gz")
    _save(label, tmp_path / f"s{i}_seg.nii.gz")
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
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds", axis="coronal"))


def test_a_build_off_a_terminal_draws_no_bar_and_leaves_tfds_setting(tmp_path, capfd):
  # Under pytest stderr is not a terminal, as in a log file. TFDS's tqdm bars
  # end in carriage returns, which would hide the next line from grep.
  rng = np.random.default_rng(3)
  for i in range(3):
    _save(_volume(rng)[0], tmp_path / f"s{i}.nii")
  bars = hr.data.builder.tfds.core.utils.tqdm_utils
  assert bars._active
  hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  err = capfd.readouterr().err
  assert err.startswith("building the nifti dataset of ") and "\r" not in err
  assert bars._active


def test_voxel_sizes_are_the_affine_s_however_the_file_is_stored(tmp_path):
  # The sform says 3 mm slices, pixdim 1 mm (no qform). nibabel keeps a RAS
  # file's header and derives a reoriented one's from the affine: the voxel
  # sizes, and so the slices' aspect, depended on the storage alone.
  image, _ = _volume(np.random.default_rng(0))
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
    _save(_volume(rng)[0], tmp_path / name)
  units = [[0], [1, 2], [3, 4], [5]]  # in the order of their first volume
  expected = {split: sorted(names[v] for u in ids for v in units[u])
              for split, ids in _split_of(len(units)).items()}
  cfg = _config(tmp_path, tmp_path / "tfds")
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
  _save(_volume(rng)[0], tmp_path / "sub-01" / "sub-05_T1w.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"sub-01/sub-05_T1w\.nii\.gz: its path names 2 "
                                              r"BIDS subjects \(sub-01, sub-05\)"):
    hr.data.prepare(cfg)


def test_a_folder_of_one_volume_per_subject_keeps_its_split_and_build(cfg, tmp_path):
  # The module's folder (sub-00 … sub-04, in two folders) and one without
  # subject names: split volume by volume, as before subjects were read, and
  # with the same settings, so an existing build of them is used as it is.
  rng = np.random.default_rng(14)
  for i in range(7):
    _save(_volume(rng)[0], tmp_path / f"scan{i}.nii")
  plain = _config(tmp_path, tmp_path / "tfds")
  for c in (cfg, plain):
    names = [image for image, _ in nifti.find_files(c.manual_dir)]
    assert _planned(c) == {s: sorted(names[i] for i in ids)
                           for s, ids in _split_of(len(names)).items()}
    assert "split_by" not in nifti.settings(c)
  assert [v.name for v in hr.data.volumes(cfg, "test")] == _planned(cfg)["test"]


# float32's relative spacing, and the affines' tolerance for 1 mm voxels at
# the origin: 4·sqrt(3·2⁻²³) mm (nifti._affine_tolerance).
EPS32 = 2.0 ** -23
TOLERANCE_1MM = 4 * np.sqrt(3 * EPS32)


@pytest.mark.parametrize("affine, differ", [
    (np.diag([1.2, 1.2, 1.2, 1.0]), r"voxel sizes \(1\.2, 1\.2, 1\.2\) mm, origin \(0, 0, 0\) mm"),
    (np.array([[1.0, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     r"voxel sizes \(1, 1, 1\) mm, origin \(0\.5, 0, 0\) mm"),
    (np.array([[1.0, 0, 0, 0.0025], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     r"voxel sizes \(1, 1, 1\) mm, origin \(0\.0025, 0, 0\) mm"),
])
def test_a_label_of_another_grid_of_the_same_shape_is_refused(tmp_path, affine, differ):
  rng = np.random.default_rng(15)
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine if i == 1 else np.eye(4)),
             str(tmp_path / f"s{i}_seg.nii.gz"))
  assert TOLERANCE_1MM < 0.0025  # 2.39e-3 mm: the last case is just beyond it
  with pytest.raises(hr.data.DataError) as info:
    hr.data.prepare(_config(tmp_path, tmp_path / "tfds"))
  assert re.fullmatch(
      rf"{re.escape(str(tmp_path / 's1_seg.nii.gz'))}: its affine \(voxel-to-world matrix\) "
      rf"differs from that of the image {re.escape(str(tmp_path / 's1.nii.gz'))} by up to .* "
      rf"mm, more than float32 storage explains \(0\.00239 mm\): the label's {differ}, the "
      r"image's voxel sizes \(1, 1, 1\) mm, origin \(0, 0, 0\) mm; a label of another scan\? "
      r".*save it with the image's header \(affine\)\.", str(info.value)), str(info.value)
  assert not list((tmp_path / "tfds").glob("nifti/*"))


def test_a_label_on_its_image_s_grid_passes_whichever_header_form_holds_it(tmp_path):
  # An oblique grid near a half turn about x: the image keeps it as float32
  # rows (sform), the label as a float32 quaternion (qform), which nibabel
  # reads back 1e-3 mm off, about 8,400 float32 steps, yet within
  # 4·sqrt(3·2⁻²³) = 2.39e-3 mm.
  from scipy.spatial.transform import Rotation
  affine = np.eye(4)
  affine[:3, :3] = Rotation.from_rotvec([np.pi - 1e-3, 0, 0]).as_matrix()
  affine[:3, 3] = (-10.0, 12.0, 8.0)
  image, label = _volume(np.random.default_rng(16))
  as_sform = nib.Nifti1Image(image, affine)
  as_sform.header.set_qform(None, code=0)
  as_qform = nib.Nifti1Image(label, None)
  as_qform.header.set_qform(affine, code=1)
  as_qform.header.set_sform(None, code=0)
  nib.save(as_sform, str(tmp_path / "s0.nii.gz"))
  nib.save(as_qform, str(tmp_path / "s0_seg.nii.gz"))
  stored = [nib.load(str(tmp_path / n)).affine for n in ("s0.nii.gz", "s0_seg.nii.gz")]
  difference = np.abs(stored[0] - stored[1]).max()
  assert 1000 * EPS32 < difference < TOLERANCE_1MM + 2 * EPS32 * 12, difference
  nifti._check_header(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", "axial")


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
  image, label = _volume(np.random.default_rng(17))
  _save(image, tmp_path / "s0.nii.gz")
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


@pytest.mark.parametrize("labelled", [(1, 2), (0,)])
def test_a_folder_with_some_volumes_unlabelled_is_refused(tmp_path, labelled):
  rng = np.random.default_rng(18)
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    if i in labelled:
      _save(label, tmp_path / f"s{i}_seg.nii.gz")
  missing = [f"s{i}.nii.gz" for i in range(3) if i not in labelled]
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: {len(missing)} of 3 volumes in {str(tmp_path)!r} have no label volume "
      f"(e.g. {missing}); give every volume a label or none.")):
    nifti.find_files(str(tmp_path))


@pytest.mark.parametrize("label_name", ["labels/sub-01.nii.gz", "sub-01_seg.nii.gz",
                                        "labels/site/s0.nii.gz"])
def test_a_label_volume_of_no_image_is_named_not_left_unread(tmp_path, label_name):
  # Labels named after the subject (sub-01_seg) for images named after the
  # scan (sub-01_T1w) paired with nothing: every image went unlabelled, and
  # the folder was built as one without labels, without a word.
  rng = np.random.default_rng(30)
  (tmp_path / "labels" / "site").mkdir(parents=True)
  for name in ("sub-00_T1w.nii.gz", "sub-01_T1w.nii.gz", "s0.nii.gz"):
    _save(_volume(rng)[0], tmp_path / name)
  _save(_volume(rng)[1], tmp_path / label_name)
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: {str(tmp_path)!r} holds {label_name}, named as a label volume but of no image "
      "(the label of <dir>/<stem>.nii.gz is <dir>/<stem>_seg.nii.gz or "
      "labels/<dir>/<stem>.nii.gz, either suffix): rename them")):
    nifti.find_files(str(tmp_path))
  # A folder that is only scored reads no label: the same files are fine.
  found = [image for image, _ in nifti.find_files(str(tmp_path), labels=False)]
  assert found == ["s0.nii.gz", "sub-00_T1w.nii.gz", "sub-01_T1w.nii.gz"]


def test_scans_of_another_format_in_the_folder_are_named_not_left_out(tmp_path):
  # FreeSurfer's brain.mgz, an Analyze pair and a fastMRI file beside the
  # NIfTI volumes were left out of the build without a word.
  rng = np.random.default_rng(33)
  for name in ("s0.nii.gz", "s1.nii", "s2.nii.gz"):
    _save(_volume(rng)[0], tmp_path / name)
  (tmp_path / "notes.txt").write_text("scanned 2026-11-02")  # not a scan: no matter
  (tmp_path / "sourcedata").mkdir()
  (tmp_path / "sourcedata" / "s0.dcm").write_bytes(b"")  # BIDS keeps DICOMs beside NIfTI
  assert len(nifti.find_files(str(tmp_path))) == 3
  (tmp_path / "fs").mkdir()
  for name in ("fs/brain.mgz", "s3.hdr", "s3.img", "knee.h5"):
    (tmp_path / name).write_bytes(b"")
  for labels in (True, False):
    with pytest.raises(hr.data.DataError, match=re.escape(
        f"nifti: {str(tmp_path)!r} holds fs/brain.mgz, knee.h5, s3.hdr and 1 more, scans of "
        "another format (Analyze, FreeSurfer, HDF5, fastMRI's) than the .nii.gz, .nii files "
        "that nifti reads: they would be left out of the dataset. Convert them, or move them "
        "out of the folder.")):
      nifti.find_files(str(tmp_path), labels=labels)


def test_an_image_with_two_label_volumes_is_refused(tmp_path):
  # labels/s1.nii.gz won over s1_seg.nii.gz without a word.
  rng = np.random.default_rng(31)
  (tmp_path / "labels").mkdir()
  for i in range(3):
    image, label = _volume(rng)
    _save(image, tmp_path / f"s{i}.nii.gz")
    _save(label, tmp_path / f"s{i}_seg.nii.gz")
  _save(_volume(rng)[1], tmp_path / "labels" / "s1.nii")
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: s1.nii.gz in {str(tmp_path)!r} has 2 label volumes, labels/s1.nii and "
      "s1_seg.nii.gz: keep one.")):
    nifti.find_files(str(tmp_path))


@pytest.mark.parametrize("labels", [True, False])
def test_masks_and_segmentations_named_as_bids_names_them_are_not_taken_for_scans(tmp_path,
                                                                                 labels):
  # fMRIPrep's folder holds sub-00_desc-brain_mask.nii.gz and sub-00_dseg.nii.gz
  # beside the image: each was one more scan to train on and to score.
  rng = np.random.default_rng(32)
  (tmp_path / "anat").mkdir()
  for name in ("sub-00_desc-preproc_T1w.nii.gz", "anat/sub-01_T1w.nii.gz", "sub-02_T1w.nii"):
    image, label = _volume(rng)
    _save(image, tmp_path / name)
    _save(label, tmp_path / name.replace("_T1w.nii", "_T1w_seg.nii"))
  for name in ("sub-00_desc-brain_mask.nii.gz", "sub-00_dseg.nii",
               "anat/sub-01_label-GM_probseg.nii.gz", "sub-02_brainmask.nii.gz"):
    _save(_volume(rng)[1], tmp_path / name)
  pairs = nifti.find_files(str(tmp_path), labels=labels)
  images = ["anat/sub-01_T1w.nii.gz", "sub-00_desc-preproc_T1w.nii.gz", "sub-02_T1w.nii"]
  assert [image for image, _ in pairs] == images
  assert [label for _, label in pairs] == ([
      "anat/sub-01_T1w_seg.nii.gz", "sub-00_desc-preproc_T1w_seg.nii.gz", "sub-02_T1w_seg.nii"]
      if labels else [None] * 3)


def test_planes_as_wide_as_the_minimum_are_kept(tmp_path):
  # Coronal planes of an (X, Y, Z) RAS volume are X×Z: Z = 8 is just wide
  # enough, Z = 7 a strip.
  from hyperrecon_jax.data import slicing
  assert slicing.MIN_PLANE == 8
  image, _ = _volume(np.random.default_rng(19))
  for z in (8, 7):
    _save(image[..., :z], tmp_path / f"z{z}.nii.gz")
  nifti._check_header(str(tmp_path), "z8.nii.gz", None, "coronal")
  with pytest.raises(hr.data.DataError, match=r"z7\.nii\.gz: has RAS shape \(20, 24, 7\), so "
                                              r"its coronal planes are 20×7 voxels, narrower "
                                              r"than 8"):
    nifti._check_header(str(tmp_path), "z7.nii.gz", None, "coronal")


def test_a_complex_label_volume_is_refused_by_name(tmp_path):
  # Read as its real part, a label's classes would be whatever the phase left.
  image, label = _volume(np.random.default_rng(20))
  _save(image, tmp_path / "s0.nii.gz")
  _save(label.astype(np.complex64), tmp_path / "s0_seg.nii.gz")
  with pytest.raises(hr.data.DataError, match=rf"^{re.escape(str(tmp_path / 's0_seg.nii.gz'))}: "
                                              r"its voxels are of type complex64; expected "
                                              r"real numbers \(a magnitude label volume\)\.$"):
    nifti.read_volume(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", 99.5)
