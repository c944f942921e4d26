"""hyperrecon_jax.segmenter_files: a segmenter's folder and the data it may label.

The segmenter is an untrained one with random variables: saving, loading and
the refusals do not depend on what it learned (a trained one is saved and
scored in `tests/test_cli_runs.py`), and its variables differ from a fresh
initialization, so loading them back is checked.
"""

import hashlib
import json
import os

import configs
import jax
import loop_support
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax import checksums
from hyperrecon_jax import segmentation
from hyperrecon_jax import segmenter_files
from hyperrecon_jax.data import mni152


@pytest.fixture(scope="module")
def saved(data_dir, tmp_path_factory):
  config = loop_support.make_config(data_dir)
  module = segmentation.Segmenter(num_classes=4, channels=4)
  size = config.data.image_size
  shapes = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, size, size), np.float32))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda x: rng.uniform(0.5, 2.0, x.shape).astype(np.float32), shapes)
  seg = segmentation.Trained(module, variables, {
      "num_classes": 4, "channels": 4, "data": json.loads(config.data.to_json())})
  folder = str(tmp_path_factory.mktemp("segmenter"))
  segmenter_files.save(seg, folder)
  return config, seg, folder


def test_save_and_load_give_the_same_segmenter(saved):
  _, seg, folder = saved
  again = segmenter_files.load(folder)
  assert again.module == seg.module
  leaves = jax.tree_util.tree_leaves_with_path(seg.variables)
  assert leaves and all(np.all(np.asarray(x) >= 0.5) for _, x in leaves)
  for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(again.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  with open(os.path.join(folder, segmenter_files.INFO_FILE)) as f:
    info = json.load(f)
  assert info["format"] == segmenter_files.FORMAT and info["num_classes"] == 4
  with open(os.path.join(folder, segmenter_files.WEIGHTS_FILE), "rb") as f:
    assert info["sha256"] == hashlib.sha256(f.read()).hexdigest()


def _copy(folder, to):
  to.mkdir()
  for name in (segmenter_files.INFO_FILE, segmenter_files.WEIGHTS_FILE):
    with open(os.path.join(folder, name), "rb") as f:
      (to / name).write_bytes(f.read())
  return to


def test_a_damaged_missing_or_foreign_segmenter_is_named(saved, tmp_path):
  _, _, folder = saved
  with pytest.raises(ValueError, match="no trained segmenter"):
    segmenter_files.load(str(tmp_path))
  # A scan given as the segmenter "holds no trained segmenter", as if a folder.
  (tmp_path / "scan.nii.gz").write_bytes(b"")
  with pytest.raises(ValueError, match=r"scan\.nii\.gz is a file: a segmenter is the folder "
                                       r"experiments/segmenter\.py writes"):
    segmenter_files.load(str(tmp_path / "scan.nii.gz"))
  damaged = _copy(folder, tmp_path / "damaged")
  blob = bytearray((damaged / segmenter_files.WEIGHTS_FILE).read_bytes())
  blob[-1] ^= 1
  (damaged / segmenter_files.WEIGHTS_FILE).write_bytes(bytes(blob))
  with pytest.raises(ValueError, match="is damaged"):
    segmenter_files.load(str(damaged))
  other = _copy(folder, tmp_path / "other")
  info = json.loads((other / segmenter_files.INFO_FILE).read_text())
  (other / segmenter_files.INFO_FILE).write_text(json.dumps(dict(info, format="x/2")))
  with pytest.raises(ValueError, match=r"not a readable segmenter \(format 'x/2', expected "):
    segmenter_files.load(str(other))

  # An edit of the settings (a 64×64 segmenter passed off as 32×32) breaks the
  # JSON's own digest; a JSON that is not an object is named as such.
  edited = _copy(folder, tmp_path / "edited")
  info = json.loads((edited / segmenter_files.INFO_FILE).read_text())
  (edited / segmenter_files.INFO_FILE).write_text(json.dumps(
      dict(info, data=dict(info["data"], image_size=64))))
  with pytest.raises(ValueError, match=r"differs from the digest it was written with "
                                       r"\(info_sha256\): it was edited"):
    segmenter_files.load(str(edited))
  # Deleting the digest does not switch the check off (the probe's relabelling
  # without `info_sha256` scored a 32×32 run with a 64×64 segmenter).
  info_edited = dict(info, data=dict(info["data"], image_size=64))
  info_edited.pop(segmenter_files.INFO_DIGEST)
  (edited / segmenter_files.INFO_FILE).write_text(json.dumps(info_edited))
  with pytest.raises(ValueError, match=r"holds no digest of its content \(info_sha256\): it "
                                       r"was edited"):
    segmenter_files.load(str(edited))
  (edited / segmenter_files.INFO_FILE).write_text("[1, 2]")
  with pytest.raises(ValueError, match=r"not a readable segmenter \(a JSON list"):
    segmenter_files.load(str(edited))
  # Settings that do not fit the weights (rewritten with a fresh digest), and
  # weights that are gone, are named, not a traceback at the first call.
  info.pop(segmenter_files.INFO_DIGEST)
  info["num_classes"] = 3
  info[segmenter_files.INFO_DIGEST] = checksums.json_digest(info)
  (edited / segmenter_files.INFO_FILE).write_text(json.dumps(info))
  with pytest.raises(ValueError, match=r"segmenter\.msgpack does not fit the settings in "
                                       r"segmenter\.json"):
    segmenter_files.load(str(edited))
  os.remove(edited / segmenter_files.WEIGHTS_FILE)
  with pytest.raises(ValueError, match=r"segmenter\.msgpack, the segmenter's weights, cannot "
                                       r"be read \(No such file or directory\)"):
    segmenter_files.load(str(edited))


def test_train_into_refuses_a_folder_that_holds_a_segmenter(saved):
  config, _, folder = saved
  before = os.path.getmtime(os.path.join(folder, segmenter_files.INFO_FILE))
  with pytest.raises(ValueError, match="already holds a trained segmenter"):
    segmenter_files.train_into(folder, config.data, num_classes=4, channels=4, steps=1,
                               batch_size=2, lr=1e-3, seed=0)
  assert os.path.getmtime(os.path.join(folder, segmenter_files.INFO_FILE)) == before


def test_train_into_refuses_a_training_run_or_bad_settings_before_any_work(saved, tmp_path):
  config, _, _ = saved
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(ValueError, match=r"holds checkpoints, config\.json, which is not a "
                                       r"segmenter's"):
    segmenter_files.train_into(str(tmp_path), config.data, num_classes=4, channels=4,
                               steps=1, batch_size=2, lr=1e-3, seed=0)
  assert sorted(os.listdir(tmp_path)) == ["checkpoints", "config.json"]
  with pytest.raises(ValueError, match=r"lr must be a positive finite number, got -1"):
    segmenter_files.train_into(str(tmp_path / "new"), config.data, num_classes=4,
                               channels=4, steps=1, batch_size=2, lr=-1, seed=0)
  assert not (tmp_path / "new").exists()


def test_a_segmenter_of_other_images_is_refused(saved):
  config, seg, _ = saved
  other = config.data.copy_and_resolve_references()
  other.image_size = 64
  other.percentile = 99.0
  with pytest.raises(ValueError, match=r"trained on other images than the model: "
                                       r"data\.image_size: 32 vs 64; data\.percentile: "):
    segmenter_files.check_data(seg, other, "the model")
  segmenter_files.check_data(seg, config.data, "the model")


def test_label_files_changed_after_training_are_refused(saved, tmp_path):
  # Classes renumbered under a trained segmenter (2 ↔ 3) would score its old
  # classes against the new labels: same images, other meaning.
  _, seg, _ = saved
  rng = np.random.default_rng(1)
  (tmp_path / "labels").mkdir()
  for i in range(3):
    image = rng.uniform(0, 1, (12, 12, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / f"s{i}.nii"))
    label = rng.integers(0, 4, image.shape).astype(np.int16)
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "labels" / f"s{i}.nii"))
  data = configs.folder_data("nifti", tmp_path, tmp_path / "tfds", image_size=32)
  assert sorted(segmentation.label_files(data)) == ["s0.nii", "s1.nii", "s2.nii"]
  mine = segmentation.Trained(seg.module, seg.variables, {
      "data": json.loads(data.to_json()), "label_files": segmentation.label_files(data)})
  segmenter_files.check_data(mine, data, "the model")
  # The same folder through a link is the same images (it was "other images").
  os.symlink(tmp_path, tmp_path.parent / f"{tmp_path.name}_link")
  linked = configs.folder_data("nifti", tmp_path.parent / f"{tmp_path.name}_link",
                               tmp_path / "tfds", image_size=32)
  segmenter_files.check_data(mine, linked, "the model")
  path = str(tmp_path / "labels" / "s1.nii")
  label = np.asarray(nib.load(path).dataobj)
  nib.save(nib.Nifti1Image(np.choose(label, [0, 1, 3, 2]).astype(np.int16), np.eye(4)), path)
  with pytest.raises(ValueError, match=r"the label files of s1\.nii in .* changed after the "
                                       r"segmenter learned them"):
    segmenter_files.check_data(mine, data, "the model")


def test_a_segmenter_of_other_mni152_labels_is_refused(saved, capsys):
  # Mni152 1.1.0 gave ties to the lower class (382 voxels moved); a segmenter
  # that learned 1.0.0's labels was accepted without a word.
  config, seg, _ = saved
  now = segmentation.label_files(config.data)
  assert list(now) == [segmentation.MNI152_LABELS]
  assert now[segmentation.MNI152_LABELS].startswith(f"{mni152.Mni152.VERSION} ")
  data = json.loads(config.data.to_json())
  same = segmentation.Trained(seg.module, seg.variables, {"data": data, "label_files": now})
  segmenter_files.check_data(same, config.data, "the model")
  assert capsys.readouterr().err == ""
  older = {segmentation.MNI152_LABELS: "1.0.0 " + now[segmentation.MNI152_LABELS].split()[1]}
  with pytest.raises(ValueError, match=r"the segmenter learned the MNI152 labels of release "
                                       r"and template '1\.0\.0 \w+', this package's are "):
    segmenter_files.check_data(segmentation.Trained(
        seg.module, seg.variables, {"data": data, "label_files": older}), config.data, "m")
  # One saved before the labels were recorded: scored, with a note.
  segmenter_files.check_data(seg, config.data, "the model")
  assert "note: the segmenter records no release of the MNI152 labels" in capsys.readouterr().err
