"""Tests of the embedded mni152 dataset and of the grain pipeline (on mni152)."""

import json
import os
import signal
import subprocess
import sys
import tempfile

import configs
import numpy as np
import pytest

import hyperrecon_jax as hr
from hyperrecon_jax.data import builder
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import locations
from hyperrecon_jax.data import mni152
from hyperrecon_jax.data import pipeline

SIZE = 32


def _config(data_dir, **overrides):
  cfg = configs.default().data
  cfg.data_dir = str(data_dir)
  cfg.image_size = SIZE
  cfg.num_threads = 0
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
  c = _config(tmp_path_factory.mktemp("tfds"))
  hr.data.prepare(c)
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_dict_config_reuses_the_build_and_every_field_is_required(cfg):
  as_dict = cfg.to_dict()
  assert hr.data.make_builder(as_dict).data_dir == hr.data.make_builder(cfg).data_dir
  assert hr.data.num_examples(as_dict, "train") == 86
  for field in ("name", "data_dir", "percentile"):
    partial = {k: v for k, v in as_dict.items() if k != field}
    with pytest.raises(hr.data.DataError, match=f"data config lacks field '{field}'"):
      hr.data.make_builder(partial)
  for field, call in (("gap_slices", hr.data.split_ranges),
                      ("num_threads", lambda c: hr.data.batches(c, "test", batch_size=4))):
    partial = cfg.copy_and_resolve_references()
    del partial[field]
    with pytest.raises(hr.data.DataError, match=f"data config lacks field '{field}'"):
      call(partial)


def test_light_import_and_install_hint():
  # The default experiment config builds without the data extra's modules.
  code = ("import sys; sys.path.insert(0, 'experiments/configs'); import default; "
          "default.get_config(); "
          "print('tensorflow_datasets' in sys.modules or 'grain' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "False"
  with pytest.raises(ImportError, match=r'pip install -e ".*\[data\]"'):
    dependencies.require("no_such_module_for_hyperrecon")


def test_settings_reads_the_fields_runs_are_compared_by(cfg):
  # summarize.py compares runs' data by these fields (split_seed is not one:
  # the template's splits are blocks of slices).
  assert configs.fields_read(mni152.settings, cfg) == sorted(
      config_fields.SETTINGS_FIELDS["mni152"])


def test_documented_split_ranges():
  cfg = configs.default().data
  assert hr.data.split_ranges(cfg) == {
      "train": [(7, 50), (110, 153)], "validation": [(58, 70)], "test": [(78, 102)]}
  cfg.axis = "coronal"
  assert hr.data.split_ranges(cfg) == {
      "train": [(28, 82), (153, 207)], "validation": [(90, 106)], "test": [(114, 145)]}
  cfg.axis = "sagittal"
  assert hr.data.split_ranges(cfg) == {
      "train": [(27, 68), (128, 170)], "validation": [(76, 88)], "test": [(96, 120)]}


def test_splits_are_blocks_with_gaps(cfg):
  ranges = hr.data.split_ranges(cfg)
  stored = {}
  for split in hr.data.SPLITS:
    source = hr.data.load_split(cfg, split)
    slices = [int(source[i]["slice"]) for i in range(len(source))]
    assert slices == mni152.split_slices(ranges[split])
    assert hr.data.num_examples(cfg, split) == len(slices)
    stored[split] = np.array(slices)
  for a in hr.data.SPLITS:
    for b in hr.data.SPLITS:
      if a != b:  # No slice of one split within `gap` slices of another.
        dist = np.abs(stored[a][:, None] - stored[b][None, :]).min()
        assert dist > cfg.gap_slices


def test_labels_are_the_largest_probability_with_ties_to_the_lower_class():
  # Computed in floating point, 1 - gm/255 - wm/255 rounded below gm/255 at
  # 382 exact ties, which went to gray matter instead of the lower class.
  nib = pytest.importorskip("nibabel")
  maps = {k: np.asarray(nib.as_closest_canonical(nib.load(p)).dataobj).astype(np.int64)
          for k, p in mni152.template_paths().items()}
  mask = maps["t1"] > 0
  gm, wm = maps["gm"][mask], maps["wm"][mask]
  other = np.maximum(255 - gm - wm, 0)
  expected = np.where((other >= gm) & (other >= wm), 1, np.where(gm >= wm, 2, 3))
  _, label, brain = mni152.load_template()
  np.testing.assert_array_equal(brain, mask)
  assert np.count_nonzero((other == gm) & (other > wm)) > 0  # the ties the rule decides
  np.testing.assert_array_equal(label[mask], expected)
  assert not label[~mask].any()


def test_examples_images_and_labels(cfg):
  source = hr.data.load_split(cfg, "train")
  ex = source[len(source) // 2]
  assert ex["image"].shape == (SIZE, SIZE) and ex["image"].dtype == np.float32
  assert ex["label"].shape == (SIZE, SIZE)
  assert int(ex["volume"]) == 0
  labels = np.concatenate([source[i]["label"].ravel() for i in range(len(source))])
  assert set(np.unique(labels)) == {0, 1, 2, 3}
  images = np.stack([source[i]["image"] for i in range(len(source))])
  assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
  # White matter is bright in T1.
  assert images[labels.reshape(images.shape) == 3].mean() > 0.5
  vols = hr.data.volumes(cfg, "train")
  assert len(vols) == 1 and vols[0].id == 0 and vols[0].indices == range(len(source))
  assert vols[0].name == mni152.VOLUME_NAME


def test_an_index_without_the_split_is_damage(cfg, monkeypatch):
  # Every build writes the index; it scanned the split instead, and lost
  # every volume's digest for the split record without a word.
  from hyperrecon_jax.data import sources
  built = sources.prepare(cfg)
  volumes = built.info.metadata.pop("volumes")
  try:
    monkeypatch.setattr(sources, "prepare", lambda _: built)
    with pytest.raises(hr.data.DataError, match=r"metadata.json: lists no volumes of the "
                                                r"test split, so the built dataset is damaged"):
      sources.volumes(cfg, "test")
  finally:
    built.info.metadata["volumes"] = volumes


def test_another_template_builds_distinct_data(cfg, tmp_path, monkeypatch):
  # The build's name held the settings only: a nilearn whose template files
  # changed under the same names reused the data cut from the old ones.
  import shutil
  copies = {}
  for key, path in mni152.template_paths().items():
    copies[key] = str(tmp_path / os.path.basename(path))
    shutil.copy(path, copies[key])
  before = hr.data.make_builder(cfg).data_dir
  monkeypatch.setattr(mni152, "template_paths", lambda: dict(copies))
  assert hr.data.make_builder(cfg).data_dir == before  # the same content elsewhere
  with open(copies["gm"], "ab") as f:
    f.write(b"\0")
  assert hr.data.make_builder(cfg).data_dir != before


def test_changed_size_builds_distinct_version(cfg):
  other = _config(cfg.data_dir, image_size=24)
  b_other, b = hr.data.make_builder(other), hr.data.make_builder(cfg)
  assert b_other.data_dir != b.data_dir
  assert hr.data.load_split(other, "test")[0]["image"].shape == (24, 24)
  assert b.is_prepared() and hr.data.load_split(cfg, "test")[0]["image"].shape == (SIZE, SIZE)


def test_a_build_leaves_nothing_in_the_temporary_folder(tmp_path, monkeypatch):
  # TFDS's DatasetInfo makes an empty `tmp*tfds` folder for every builder of
  # a dataset not built yet (to look for a prebuilt copy on GCS) and never
  # removes it.
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  cfg = _config(tmp_path / "tfds", image_size=8)
  assert not hr.data.make_builder(cfg).is_prepared()
  hr.data.prepare(cfg)
  assert hr.data.make_builder(cfg).is_prepared()
  assert os.listdir(scratch) == []


def test_interrupted_build_is_not_reused(tmp_path, monkeypatch, capsys):
  cfg = _config(tmp_path, image_size=16)
  original = mni152.Mni152._slices
  def failing(self, spec):
    for i, s in enumerate(original(self, spec)):
      if i == 5:
        raise RuntimeError("interrupted")
      yield s
  monkeypatch.setattr(mni152.Mni152, "_slices", failing)
  with pytest.raises(RuntimeError, match="interrupted"):
    hr.data.prepare(cfg)
  b = hr.data.make_builder(cfg)
  assert not b.is_prepared()
  # Nothing is left, the build's lock file included: not even the config's folder.
  assert not os.path.exists(os.path.dirname(b.data_dir))
  # A killed build leaves an `incomplete.*` folder behind, with its lock file
  # that no process holds (or none, by an older version); it is never read,
  # and the next build removes it (it stayed for good, a partial copy of the
  # dataset). One that a running build writes to is left to it.
  junk = os.path.join(os.path.dirname(b.data_dir), f"incomplete.ABC123_{mni152.Mni152.VERSION}")
  killed = junk.replace("ABC123", "GHI789")
  live = junk.replace("ABC123", "DEF456")
  for folder in (junk, killed, live):
    os.makedirs(folder)
    with open(os.path.join(folder, "mni152-train.array_record-00000-of-00001"), "w") as f:
      f.write("partial")
  open(os.path.join(killed, builder.BUILD_LOCK), "w").close()

  def writing(self, spec):
    with open(os.path.join(live, "mni152-train.array_record-00000-of-00001"), "a") as f:
      f.write(" and more")
    yield from original(self, spec)

  monkeypatch.setattr(mni152.Mni152, "_slices", writing)
  capsys.readouterr()
  assert not hr.data.make_builder(cfg).is_prepared()
  assert hr.data.num_examples(cfg, "train") == 86
  assert not os.path.exists(junk) and not os.path.exists(killed) and os.path.exists(live)
  err = capsys.readouterr().err
  for folder in (junk, killed):
    assert f"removed {folder}, the unfinished copy of a build that was stopped" in err


def test_an_empty_unfinished_build_folder_is_removed(tmp_path, capsys):
  # A build killed after TFDS made its temporary folder and before the lock
  # file or any split was written leaves it empty: as stopped as any other.
  empty = tmp_path / f"incomplete.ABC123_{mni152.Mni152.VERSION}"
  empty.mkdir()
  before = builder.unfinished_builds(str(tmp_path))
  assert before == {str(empty): ()}
  builder.remove_stopped_builds(before, builder.unfinished_builds(str(tmp_path)))
  assert not empty.exists()
  assert (f"removed {empty}, the unfinished copy of a build that was stopped"
          in capsys.readouterr().err)


# A build that stops itself (SIGSTOP, as Ctrl-Z does) inside its temporary folder.
_PAUSED_BUILD = """
import json, os, signal, sys
import hyperrecon_jax as hr
from hyperrecon_jax.data import mni152
original = mni152.Mni152._slices
def pausing(self, spec):
  for i, s in enumerate(original(self, spec)):
    if i == 3 and not getattr(pausing, "done", False):
      pausing.done = True
      print(self.data_dir, file=sys.stderr, flush=True)
      os.kill(os.getpid(), signal.SIGSTOP)
    yield s
mni152.Mni152._slices = pausing
cfg = json.loads(sys.argv[1])
hr.data.prepare(cfg)
print(hr.data.num_examples(cfg, "train"))
"""


def test_a_build_paused_while_another_builds_keeps_its_folder(tmp_path, capsys):
  # The other build removed the paused one's folder as a stopped build's
  # (it did not change during a whole build), and the paused one failed on
  # its next write with a traceback of TFDS.
  cfg = _config(tmp_path, image_size=16)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
      + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
  paused = subprocess.Popen([sys.executable, "-c", _PAUSED_BUILD, cfg.to_json()], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    lines = iter(paused.stderr.readline, "")
    folder = next((line.strip() for line in lines if "incomplete." in line), "")
    assert folder, "the build did not start"
    _, status = os.waitpid(paused.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    capsys.readouterr()
    assert hr.data.num_examples(cfg, "train") == 86
    assert "removed" not in capsys.readouterr().err
    assert os.path.isdir(folder)
  finally:
    paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=120)
  # It finishes on the dataset the other build moved into place first.
  assert paused.returncode == 0 and out.split() == ["86"], err[-2000:]
  data_dir = hr.data.make_builder(cfg).data_dir
  assert os.listdir(os.path.dirname(data_dir)) == [os.path.basename(data_dir)]
  assert builder.BUILD_LOCK not in os.listdir(data_dir)


def test_unknown_name_and_split(cfg):
  with pytest.raises(ValueError, match="mni152, fastmri_knee, nifti"):
    hr.data.make_builder(_config(cfg.data_dir, name="imagenet"))
  with pytest.raises(ValueError, match="train, validation, test"):
    hr.data.load_split(cfg, "val")
  with pytest.raises(ValueError, match="axial"):
    hr.data.split_ranges(_config(cfg.data_dir, axis="oblique"))
  # A fraction above every slice's: an IndexError in TFDS's build.
  with pytest.raises(ValueError, match=r"min_foreground=0.99 keeps no slice of the template "
                                       r"along the axial axis: its largest brain fraction is "
                                       r"0\.4\d\d$"):
    hr.data.split_ranges(_config(cfg.data_dir, min_foreground=0.99))
  # Its splits are slice blocks of one volume: none is only evaluated.
  with pytest.raises(ValueError, match=r"three positive numbers .* got \(0.0, 0.0, 1.0\)"):
    hr.data.make_builder(_config(cfg.data_dir, split_fractions=hr.data.EVALUATION_ONLY))


def test_training_batches(cfg):
  it = hr.data.batches(cfg, "train", batch_size=8, seed=0)
  batches = _take(it, 12)  # More than one epoch of 86 slices.
  b = batches[0]
  assert set(b) == {"image", "volume", "slice", "valid", "label"}
  assert b["image"].shape == (8, SIZE, SIZE) and b["image"].dtype == np.float32
  assert b["label"].shape == (8, SIZE, SIZE) and b["label"].dtype == np.int32
  assert b["volume"].dtype == np.int32 and b["slice"].dtype == np.int32
  assert b["valid"].dtype == bool and b["valid"].all()
  train_slices = set(mni152.split_slices(hr.data.split_ranges(cfg)["train"]))
  seen = np.concatenate([x["slice"] for x in batches])
  assert set(seen) <= train_slices
  # The first epoch is a permutation of the split; the next one differs.
  assert sorted(seen[:86]) == sorted(train_slices)
  assert not np.array_equal(seen[86:96], seen[:10])


def test_seeds_and_threads(cfg):
  a = _take(hr.data.batches(cfg, "train", batch_size=4, seed=3), 3)
  b = _take(hr.data.batches(cfg, "train", batch_size=4, seed=3, num_threads=2), 3)
  c = _take(hr.data.batches(cfg, "train", batch_size=4, seed=4), 3)
  assert _same(a, b)
  assert not np.array_equal(np.concatenate([x["slice"] for x in a]),
                            np.concatenate([x["slice"] for x in c]))


def test_restored_iterator_continues(cfg):
  aug = _config(cfg.data_dir, augment_flip=True, augment_intensity=0.2)
  it = hr.data.batches(aug, "train", batch_size=4, seed=7, num_threads=2)
  _take(it, 5)
  text = hr.data.iterator_state_to_json(it.get_state())
  assert json.loads(text) == it.get_state()
  expected = _take(it, 4)
  fresh = hr.data.batches(aug, "train", batch_size=4, seed=7)
  fresh.set_state(hr.data.iterator_state_from_json(text))
  assert _same(_take(fresh, 4), expected)


@pytest.mark.parametrize("start, batch_size", [(20, 8), (20, 3), (83, 5)])
def test_a_stream_started_at_an_example_is_the_stream_from_there(cfg, start, batch_size):
  # A run resumed with another batch size starts its stream at the examples
  # read: the same examples and the same augmentation, across an epoch's end
  # (86 slices) too.
  aug = _config(cfg.data_dir, augment_flip=True, augment_intensity=0.2)
  whole = _take(hr.data.batches(aug, "train", batch_size=4, seed=7), 30)
  later = _take(hr.data.batches(aug, "train", batch_size=batch_size, seed=7, start=start), 4)
  n = 4 * batch_size
  for key in ("image", "label", "volume", "slice"):
    want = np.concatenate([b[key] for b in whole])[start:start + n]
    np.testing.assert_array_equal(np.concatenate([b[key] for b in later]), want)


@pytest.mark.parametrize("start, training", [(-1, True), (2.5, True), (True, True), (4, False)])
def test_a_start_outside_the_training_stream_is_refused(cfg, start, training):
  with pytest.raises(hr.errors.InputError, match=r"start must be a whole number ≥ 0, and 0 "
                                                 r"outside training"):
    hr.data.batches(cfg, "train", batch_size=4, training=training, start=start)


@pytest.mark.parametrize("split, training", [("train", True), ("test", False)])
def test_in_memory_split_gives_the_on_disk_batches(cfg, monkeypatch, split, training):
  # Small splits are decoded once and served from memory; the batches (their
  # order, augmentation and padding) and iterator states must be those of the
  # on-disk path, or a resumed run would change.
  aug = _config(cfg.data_dir, augment_flip=True, augment_intensity=0.2)
  memory = hr.data.batches(aug, split, batch_size=8, seed=5, training=training)
  assert isinstance(pipeline._in_memory(hr.data.load_split(aug, split)), pipeline._InMemory)
  monkeypatch.setattr(pipeline, "IN_MEMORY_BYTES", 0)
  assert not isinstance(pipeline._in_memory(hr.data.load_split(aug, split)),
                        pipeline._InMemory)
  disk = hr.data.batches(aug, split, batch_size=8, seed=5, training=training)
  n = 14 if training else 3  # past an epoch of 86 training slices; the padded test pass
  assert _same(_take(memory, n), _take(disk, n))
  assert memory.get_state() == disk.get_state()


def test_augmentation(cfg):
  plain = _take(hr.data.batches(cfg, "train", batch_size=16, seed=1), 2)
  aug_cfg = _config(cfg.data_dir, augment_flip=True, augment_intensity=0.3)
  aug = _take(hr.data.batches(aug_cfg, "train", batch_size=16, seed=1), 2)
  again = _take(hr.data.batches(aug_cfg, "train", batch_size=16, seed=1), 2)
  assert _same(aug, again)
  for p, a in zip(plain, aug):
    assert np.array_equal(p["slice"], a["slice"])  # Same order, new pixels.
    assert a["image"].min() >= 0 and a["image"].max() <= 1
    assert not np.array_equal(p["image"], a["image"])
    # Flips move labels with the image: each augmented label is a flip.
    for pl, al in zip(p["label"], a["label"]):
      assert any(np.array_equal(al, f) for f in
                 (pl, pl[::-1], pl[:, ::-1], pl[::-1, ::-1]))


@pytest.mark.parametrize("intensity", [1.0, 1.5, -0.3, float("nan")])
def test_an_intensity_outside_its_range_is_refused(cfg, intensity):
  # 1.5 scaled some images by a negative factor (black once clipped), and 1.0
  # can scale one by 0 (black); −0.3 and NaN turned the augmentation off.
  # check_config refuses them for train.py; the library's callers reach the
  # pipeline directly.
  bad = _config(cfg.data_dir, augment_intensity=intensity)
  with pytest.raises(hr.errors.InputError, match=r"data.augment_intensity must lie in \[0, 1\), "
                                                 rf"got {intensity}"):
    hr.data.batches(bad, "train", batch_size=4)


def test_batches_without_labels_are_the_same_batches(cfg):
  """labels=False (the training loop's) leaves the labels out and nothing else."""
  aug_cfg = _config(cfg.data_dir, augment_flip=True, augment_intensity=0.3)
  full = hr.data.batches(aug_cfg, "train", batch_size=8, seed=2)
  bare = hr.data.batches(aug_cfg, "train", batch_size=8, seed=2, labels=False)
  for f, b in zip(_take(full, 12), _take(bare, 12)):  # past an epoch: a new shuffle
    assert "label" in f and sorted(b) == sorted(k for k in f if k != "label")
    assert all(np.array_equal(f[k], b[k]) for k in b)
  assert full.get_state() == bare.get_state()


def test_augment_function_is_seeded():
  ex = {"image": np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4),
        "label": np.arange(16, dtype=np.int32).reshape(4, 4)}
  out1 = pipeline.augment(ex, np.random.default_rng(0), flip=True, intensity=0.5)
  out2 = pipeline.augment(ex, np.random.default_rng(0), flip=True, intensity=0.5)
  assert all(np.array_equal(out1[k], out2[k]) for k in ex)
  assert out1["image"].dtype == np.float32 and out1["image"].max() <= 1


def test_augment_flips_each_axis_independently():
  """None, left-right, up-down and both each come with probability 1/4."""
  image = np.arange(16, dtype=np.float32).reshape(4, 4) / 16  # no flip symmetry
  ex = {"image": image, "label": np.arange(16, dtype=np.int32).reshape(4, 4)}
  kinds = {"none": (slice(None), slice(None)), "lr": (slice(None), slice(None, None, -1)),
           "ud": (slice(None, None, -1), slice(None)),
           "both": (slice(None, None, -1), slice(None, None, -1))}
  draws = 400
  counts = dict.fromkeys(kinds, 0)
  for seed in range(draws):
    out = pipeline.augment(ex, np.random.default_rng(seed), flip=True, intensity=0.0)
    (kind,) = [k for k, at in kinds.items() if np.array_equal(out["image"], image[at])]
    assert np.array_equal(out["label"], ex["label"][kinds[kind]])  # The label moves along.
    counts[kind] += 1
  # Each count is Binomial(400, 1/4): mean 100, standard deviation √75 ≈ 8.7;
  # 5 standard deviations (±43) fail a correct augment with probability < 1e-5.
  assert all(abs(c - draws / 4) <= 43 for c in counts.values()), counts


@pytest.mark.parametrize("split", ["validation", "test"])
@pytest.mark.parametrize("whole", [False, True], ids=["batch_size=5", "batch_size=n"])
def test_evaluation_pass_is_padded_and_exact(cfg, split, whole):
  n = hr.data.num_examples(cfg, split)
  assert n % 5  # batch_size=5 pads the last batch
  batch_size = n if whole else 5
  batches = list(hr.data.batches(cfg, split, batch_size=batch_size))
  assert (len(batches) == -(-n // batch_size)
          == len(hr.data.dataset(cfg, split, batch_size=batch_size)))
  assert all(b["image"].shape == (batch_size, SIZE, SIZE) for b in batches)
  valid = np.concatenate([b["valid"] for b in batches])
  slices = np.concatenate([b["slice"] for b in batches])
  volumes = np.concatenate([b["volume"] for b in batches])
  assert valid.sum() == n and valid[:n].all()
  assert list(slices[valid]) == mni152.split_slices(hr.data.split_ranges(cfg)[split])
  assert (slices[~valid] == -1).all() and (volumes[~valid] == -1).all()
  assert (volumes[valid] >= 0).all()
  last = batches[-1]
  assert (last["image"][~last["valid"]] == 0).all()


def test_evaluation_iterator_restores(cfg):
  it = hr.data.batches(cfg, "test", batch_size=4)
  next(it)
  state = it.get_state()
  rest = list(it)
  again = hr.data.batches(cfg, "test", batch_size=4)
  again.set_state(state)
  assert _same(list(again), rest)


def test_a_data_folder_that_is_a_file_is_named_before_any_build(tmp_path, monkeypatch):
  # The build failed on its first folder with "[Errno 20] Not a directory:
  # '/…/downloads'", naming neither config.data.data_dir nor the variable.
  path = tmp_path / "a_file"
  path.write_text("")
  with pytest.raises(data_errors.DataError, match=rf"^config.data.data_dir={path}/cache: {path} is "
                                             r"a file, not a folder$"):
    hr.data.make_builder(_config(path / "cache"))
  monkeypatch.setenv(locations.DATA_DIR_ENV, str(path))
  with pytest.raises(data_errors.DataError, match=rf"^the data folder {path} \(HYPERRECON_DATA_DIR "
                                             r"or the default cache\): .* is a file"):
    hr.data.make_builder(_config(""))
  # The scripts fill config.data.data_dir from the variable: the user set the variable.
  with pytest.raises(data_errors.DataError, match=rf"^the data folder {path} \(HYPERRECON_DATA_DIR "
                                             r"or the default cache\): .* is a file"):
    hr.data.make_builder(_config(locations.default_data_dir()))
  assert locations.data_dir(_config(tmp_path / "new" / "cache")) == str(tmp_path / "new" / "cache")


def test_a_data_folder_that_cannot_be_written_is_named_with_its_setting(tmp_path, monkeypatch):
  # A shared cache made read-only, asked for a dataset not built yet, failed
  # with a bare "[Errno 13] Permission denied: '<folder>'" naming no setting.
  # Raised as the build writes, since root, which runs the tests, ignores chmod.
  def refuse(self, *args, **kwargs):
    raise PermissionError(13, "Permission denied", os.fspath(self.data_dir))

  monkeypatch.setattr(builder.SliceBuilder, "download_and_prepare", refuse)
  folder = tmp_path / "shared"
  with pytest.raises(data_errors.DataError, match=rf"^cannot build the mni152 dataset in "
                                             rf"config.data.data_dir={folder}: .*Permission "
                                             r"denied.*: ask its owner to build it, or set "
                                             r"HYPERRECON_DATA_DIR or config.data.data_dir to a "
                                             r"folder you can write$"):
    hr.data.prepare(_config(folder))
  monkeypatch.setenv(locations.DATA_DIR_ENV, str(folder))
  with pytest.raises(data_errors.DataError,
                     match=rf"in the data folder {folder} \(HYPERRECON_DATA_DIR"):
    hr.data.prepare(_config(locations.default_data_dir()))
