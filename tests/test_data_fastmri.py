"""Tests of the fastmri_knee manual dataset on tiny fake fastMRI `.h5` files."""

import functools
import os
import re

import configs
import h5py
from memory_support import allocated_peak
import numpy as np
import pytest

import hyperrecon_jax as hr
from hyperrecon_jax.data import fastmri
from hyperrecon_jax.data import split_record
from hyperrecon_jax.data import splits

SIZE = 32
SLICES = 3


def _write(path, rng, *, recon=True, slices=SLICES):
  """A fastMRI-like single-coil file: kspace (S, 64, 48), recon (S, 32, 32)."""
  yy, xx = np.mgrid[-1:1:64j, -1:1:48j]
  phantom = (xx ** 2 / 0.6 + yy ** 2 / 0.8 < 1).astype(np.float32)
  images = np.stack([phantom * rng.uniform(0.5, 1.5) for _ in range(slices)])
  kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1)),
                                       norm="ortho"), axes=(-2, -1))
  with h5py.File(path, "w") as f:
    f.create_dataset("kspace", data=kspace.astype(np.complex64))
    f.create_dataset("ismrmrd_header", data=np.bytes_(b"<ismrmrdHeader/>"))
    f.attrs["acquisition"] = "CORPDFS_FBK"
    f.attrs["patient_id"] = os.path.basename(path)[:-3]
    if recon:
      target = np.abs(images[:, 16:48, 8:40]).astype(np.float32) * 1e-4
      f.create_dataset("reconstruction_esc", data=target)
      f.attrs["max"] = float(target.max())
      f.attrs["norm"] = float(np.linalg.norm(target))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("fastmri")
  rng = np.random.default_rng(0)
  for i in range(6):  # The last file has k-space only, like the test set.
    _write(str(folder / f"file{1000 + i}.h5"), rng, recon=i < 5)
  return str(folder)


_config = functools.partial(configs.folder_data, "fastmri_knee", image_size=SIZE)


@pytest.fixture(scope="module")
def cfg(manual_dir, tmp_path_factory):
  c = _config(manual_dir, tmp_path_factory.mktemp("tfds"))
  hr.data.prepare(c)
  return c


def test_the_split_record_names_the_files_of_every_split(cfg, manual_dir):
  # What a run keeps in its data_splits.json (tests/test_data_split_record.py
  # covers the checks, on NIfTI folders).
  names = sorted(os.listdir(manual_dir))
  expected = splits.split_volumes(len(names), (0.7, 0.1, 0.2), 0)
  record = split_record.current(cfg)
  assert record["dataset"] == "fastmri_knee" and record["manual_dir"] == manual_dir
  assert record["splits"] == {s: [names[i] for i in expected[s]] for s in hr.data.SPLITS}


def test_a_folder_built_for_evaluation_only_scores_every_file(cfg, manual_dir):
  # What `evaluate.py --data=FOLDER` builds: every file in the test split, as
  # the training build's splits hold them together.
  only = _config(manual_dir, cfg.data_dir, split_fractions=hr.data.EVALUATION_ONLY)
  record = split_record.current(only)
  assert record["splits"] == {
      "train": [], "validation": [], "test": sorted(os.listdir(manual_dir))}
  # Read from the files, the digests a build records: bytes and voxels.
  built = split_record.current(cfg)
  for key in ("sha256", "content_sha256"):
    by_name = {n: d for s in hr.data.SPLITS for n, d in zip(built["splits"][s], built[key][s])}
    assert record[key]["test"] == [by_name[n] for n in record["splits"]["test"]]
  assert hr.data.folder_dataset(manual_dir) == "fastmri_knee"
  assert hr.data.num_examples(only, "test") == sum(
      hr.data.num_examples(cfg, s) for s in hr.data.SPLITS)


def test_settings_reads_the_fields_runs_are_compared_by(cfg):
  # summarize.py compares runs' data by these fields: one the build does not
  # read refused runs of the same data, one it reads and the table lacks
  # put runs of other data side by side.
  from hyperrecon_jax.data import config_fields
  from hyperrecon_jax.data import fastmri
  assert configs.fields_read(fastmri.settings, cfg) == sorted(
      config_fields.SETTINGS_FIELDS["fastmri_knee"])


def test_build_examples(cfg, manual_dir):
  names = sorted(os.listdir(manual_dir))
  all_ids = []
  for split in hr.data.SPLITS:
    source = hr.data.load_split(cfg, split)
    vols = hr.data.volumes(cfg, split)
    assert len(source) == SLICES * len(vols) == hr.data.num_examples(cfg, split)
    for v in vols:
      assert v.name == names[v.id] and v.slices == tuple(range(SLICES))
      for i, k in zip(v.indices, v.slices):
        ex = source[i]
        assert int(ex["volume"]) == v.id and int(ex["slice"]) == k
        assert ex["name"].decode() == v.name
        assert ex["image"].shape == (SIZE, SIZE) and ex["image"].dtype == np.float32
        assert 0 <= ex["image"].min() and ex["image"].max() <= 1
        assert "label" not in ex
    all_ids += [v.id for v in vols]
  # Every file in exactly one split; 6 files at 0.7/0.1/0.2 -> 4/1/1.
  assert sorted(all_ids) == list(range(6))
  assert [len(hr.data.volumes(cfg, s)) for s in hr.data.SPLITS] == [4, 1, 1]


def test_normalized_by_attrs_max(cfg, manual_dir):
  maxima = []
  for split in hr.data.SPLITS:
    source = hr.data.load_split(cfg, split)
    for v in hr.data.volumes(cfg, split):
      maxima.append(max(source[i]["image"].max() for i in v.indices))
  assert min(maxima) > 0.9  # Each volume's brightest slice reaches ~1.


def test_kspace_fallback(tmp_path):
  path = str(tmp_path / "k.h5")
  _write(path, np.random.default_rng(1), recon=False)
  volume = fastmri.read_volume(path)
  assert volume.shape == (SLICES, 64, 48) and volume.max() == 1.0


def test_unmeasured_columns_are_the_gaps_between_measured_columns():
  kspace = np.ones((2, 3, 8, 12), np.complex64)  # (slices, coils, height, width)
  kspace[..., :2] = 0   # zero padding at the edges is not a gap
  kspace[..., -3:] = 0
  assert fastmri.unmeasured_columns(fastmri.measured_columns(kspace)) == (0, 7)
  kspace[..., 3:9:2] = 0  # columns 3, 5, 7 skipped
  assert fastmri.unmeasured_columns(fastmri.measured_columns(kspace)) == (3, 7)
  kspace[1, 2, 4, 5] = 1j  # one value in one coil of one slice: column 5 was measured
  assert fastmri.unmeasured_columns(fastmri.measured_columns(kspace)) == (2, 7)
  assert fastmri.unmeasured_columns(
      fastmri.measured_columns(np.zeros((1, 4, 4), np.complex64))) == (0, 0)


def test_undersampled_kspace_is_not_taken_as_a_target(tmp_path):
  # A test-set file (k-space only, every 4th column measured) would give
  # aliased images as training targets.
  path = str(tmp_path / "test_set.h5")
  _write(path, np.random.default_rng(2), recon=False)
  with h5py.File(path, "r+") as f:
    kspace = f["kspace"][()]
    kspace[..., np.arange(48) % 4 != 0] = 0  # columns 0, 4, ..., 44 kept: 33 gaps up to 44
    f["kspace"][...] = kspace
  with pytest.raises(hr.data.DataError, match=r"test_set.h5: its 'kspace' is already "
                     r"undersampled: 33 of the 45 columns .* Its image would be aliased"):
    fastmri.read_volume(path)


def test_evaluation_pass_covers_every_slice_once(cfg):
  for split in ("validation", "test"):
    seen = []
    for b in hr.data.batches(cfg, split, batch_size=2):
      seen += list(zip(b["volume"][b["valid"]], b["slice"][b["valid"]]))
    expected = [(v.id, k) for v in hr.data.volumes(cfg, split) for k in v.slices]
    assert seen == expected


def test_training_batches_stay_in_split(cfg):
  train_ids = {v.id for v in hr.data.volumes(cfg, "train")}
  it = hr.data.batches(cfg, "train", batch_size=5, seed=0)
  for _ in range(4):
    b = next(it)
    assert b["image"].shape == (5, SIZE, SIZE) and b["valid"].all()
    assert set(b["volume"]) <= train_ids


def test_split_seed_changes_assignment(cfg, tmp_path):
  other = _config(cfg.manual_dir, tmp_path, split_seed=1)
  assert hr.data.make_builder(other).builder_config.name != \
      hr.data.make_builder(cfg).builder_config.name
  a = splits.split_volumes(6, cfg.split_fractions, 0)
  b = splits.split_volumes(6, cfg.split_fractions, 1)
  assert a != b and a == splits.split_volumes(6, cfg.split_fractions, 0)


def test_added_file_builds_distinct_version(manual_dir, tmp_path):
  folder = tmp_path / "copy"
  folder.mkdir()
  rng = np.random.default_rng(2)
  for i in range(3):
    _write(str(folder / f"a{i}.h5"), rng)
  cfg = _config(folder, tmp_path / "tfds")
  name = hr.data.make_builder(cfg).builder_config.name
  _write(str(folder / "a3.h5"), rng)
  assert hr.data.make_builder(cfg).builder_config.name != name


@pytest.mark.parametrize("kind", ["random_bytes", "no_datasets", "bad_shape", "thin",
                                  "negative", "complex", "text", "group", "max_below",
                                  "max_text", "max_array", "max_zero"])
def test_bad_file_is_named(tmp_path, kind):
  folder = tmp_path / "in"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name in ("good1.h5", "good2.h5"):  # Three files: every split has one.
    _write(str(folder / name), rng)
  bad = folder / "bad.h5"
  if kind == "random_bytes":
    bad.write_bytes(np.random.default_rng(0).bytes(2048))
  else:
    with h5py.File(bad, "w") as f:
      if kind == "no_datasets":
        f.create_dataset("something_else", data=np.zeros(3))
      elif kind == "thin":  # images of 4 rows
        f.create_dataset("reconstruction_esc", data=np.ones((3, 4, 32), np.float32))
      elif kind == "negative":
        f.create_dataset("reconstruction_esc", data=-np.ones((3, 32, 32), np.float32))
      elif kind == "complex":  # its real part would be read, here all negative
        f.create_dataset("reconstruction_esc", data=np.full((3, 32, 32), -1 + 1j, np.complex64))
      elif kind == "text":
        f.create_dataset("reconstruction_esc", data=np.full((3, 32, 32), b"x", "S1"))
      elif kind == "group":
        f.create_group("reconstruction_esc")
      elif kind == "max_below":  # rescaled ×10 after fastMRI stored its maximum
        f.create_dataset("reconstruction_esc", data=np.full((3, 32, 32), 0.02, np.float32))
        f.attrs["max"] = 0.002
      elif kind.startswith("max_"):  # an attribute of no use as the target's maximum
        f.create_dataset("reconstruction_esc", data=np.full((3, 32, 32), 0.02, np.float32))
        f.attrs["max"] = {"max_text": "abc", "max_array": np.array([1.0, 2.0]),
                          "max_zero": 0.0}[kind]
      else:
        f.create_dataset("reconstruction_esc", data=np.zeros((4, 4), np.float32))
  with pytest.raises(hr.data.DataError, match="bad.h5") as info:
    hr.data.prepare(_config(folder, tmp_path / "tfds"))
  message = str(info.value)
  assert {"random_bytes": "HDF5",
          "no_datasets": "has none of 'reconstruction_esc', 'reconstruction_rss' and 'kspace'",
          "bad_shape": "shape",
          "thin": "'reconstruction_esc' has shape (3, 4, 32): its images are narrower than 8",
          "negative": "the 'reconstruction_esc' volume has no intensity scale: its largest "
                      "value is -1, not positive",
          "complex": "values of 'reconstruction_esc' are of type complex64; expected real",
          "text": "values of 'reconstruction_esc' are of type |S1; expected real",
          "group": "'reconstruction_esc' is an HDF5 group, not an array",
          "max_below": "attribute 'max' is 0.002, below the largest value of "
                       "'reconstruction_esc', 0.02: it does not describe this image",
          "max_text": "attribute 'max' is 'abc', not a number",
          "max_array": "attribute 'max' is array([1., 2.]), not a number",
          "max_zero": "attribute 'max' is 0, not positive",
          }[kind] in message
  assert not list((tmp_path / "tfds").glob("fastmri_knee/*/1.0.0"))


def test_a_file_with_damaged_metadata_is_named_whatever_h5py_raises(tmp_path):
  # A superblock that opens with damaged object headers or links behind it
  # made h5py raise KeyError or RuntimeError from inside the checks; which
  # offsets do so depends on HDF5's layout, so every 32nd byte of the
  # metadata is damaged in turn. Damage in the raw data cannot be detected
  # (no checksums), so a file may also still read.
  good = tmp_path / "good.h5"
  _write(str(good), np.random.default_rng(0))
  content = good.read_bytes()
  with h5py.File(good, "r") as f:
    metadata_end = min(f[k].id.get_offset() for k in ("kspace", "reconstruction_esc"))
  bad = tmp_path / "bad.h5"
  named = 0
  for offset in range(0, metadata_end, 32):
    bad.write_bytes(content[:offset] + b"\xff" * 16 + content[offset + 16:])
    try:
      fastmri.read_volume(str(bad))
    except hr.data.DataError as err:
      assert str(bad) in str(err)
      named += 1
  assert named  # the damage was seen at least once


def test_missing_or_empty_manual_dir(tmp_path):
  for folder in ("", str(tmp_path / "nope"), str(tmp_path)):
    with pytest.raises(hr.data.DataError, match="fastmri.med.nyu.edu") as info:
      hr.data.load_split(_config(folder, tmp_path / "tfds"), "train")
    assert ".h5" in str(info.value) and "manual_dir" in str(info.value)
  assert issubclass(hr.data.DataError, ValueError)


def test_scans_of_another_format_in_the_folder_are_named_not_left_out(tmp_path):
  # A NIfTI volume among the .h5 files was left out of the build without a word.
  rng = np.random.default_rng(4)
  (tmp_path / "more").mkdir()
  for name in ("file0.h5", "file1.h5", "file2.h5"):
    _write(str(tmp_path / name), rng)
  assert fastmri.find_files(str(tmp_path)) == ["file0.h5", "file1.h5", "file2.h5"]
  (tmp_path / "more" / "knee.nii.gz").write_bytes(b"")
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"fastmri_knee: {str(tmp_path)!r} holds more/knee.nii.gz, scans of another format "
      "(NIfTI) than the .h5 files that fastmri_knee reads: they would be left out")):
    fastmri.find_files(str(tmp_path))


def test_too_few_files_are_refused_before_a_build_is_announced(tmp_path, capfd):
  rng = np.random.default_rng(3)
  for i in range(2):
    _write(str(tmp_path / f"file{i}.h5"), rng)
  with pytest.raises(hr.data.DataError, match=rf"^{tmp_path} holds 2 volumes; training needs "
                                              "at least 3"):
    hr.data.prepare(_config(str(tmp_path), tmp_path / "tfds"))
  assert "building" not in capfd.readouterr().err
  assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("kind", ["target_nan", "target_inf", "kspace_inf", "max_inf"])
def test_non_finite_values_fail_the_build(tmp_path, kind):
  folder = tmp_path / "in"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name in ("good1.h5", "good2.h5"):  # Three files: every split has one.
    _write(str(folder / name), rng)
  bad = folder / "bad.h5"
  _write(str(bad), rng, recon=kind != "kspace_inf")
  with h5py.File(bad, "r+") as f:
    if kind == "max_inf":
      f.attrs["max"] = np.inf
    elif kind == "kspace_inf":
      f["kspace"][1, 5, 5] = np.inf
    else:
      f["reconstruction_esc"][0, 3, 4] = np.nan if kind == "target_nan" else -np.inf
  with pytest.raises(hr.data.DataError) as info:
    hr.data.prepare(_config(folder, tmp_path / "tfds"))
  assert str(info.value) == f"{bad}: " + {
      "target_nan": "1 of 3,072 values of 'reconstruction_esc' are not finite",
      "target_inf": "1 of 3,072 values of 'reconstruction_esc' are not finite",
      "kspace_inf": "1 of 9,216 values of 'kspace' are not finite",
      "max_inf": "attribute 'max' is inf, not a finite number; fix it or remove the file.",
  }[kind] + ("" if kind == "max_inf" else " (NaN or ±Inf); fix or remove the file.")
  assert not list((tmp_path / "tfds").glob("fastmri_knee/*/*"))


def _multicoil(path, shape=(4, 6, 80, 64), seed=5):
  """Fully sampled multi-coil k-space (slices, coils, height, width), padded at the edges."""
  rng = np.random.default_rng(seed)
  kspace = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  kspace[..., :3] = 0
  kspace[..., -2:] = 0
  with h5py.File(path, "w") as f:
    f["kspace"] = kspace
  return kspace


def test_kspace_read_one_slice_at_a_time_is_the_whole_volume_s_image(tmp_path):
  # Each slice's FFT is its own, so the image is the batched one's bit for
  # bit; only what is held at once changes.
  path = str(tmp_path / "mc.h5")
  kspace = _multicoil(path)
  target = fastmri.read_target(path)
  image = fastmri.kspace_to_image(kspace).astype(np.float32)
  assert target.scale == float(image.max()) and target.dtype == np.complex64
  np.testing.assert_array_equal(target.volume, image / image.max())


def test_reading_multicoil_kspace_holds_less_than_the_file_s_kspace(tmp_path):
  # Read whole, multi-coil k-space with the FFT's copies held 4.0 times the
  # k-space at once (tracemalloc); one slice at a time: about four copies of
  # one slice (1/16 of the k-space here) beside the image volume (1/8).
  path = str(tmp_path / "mc.h5")
  kspace = _multicoil(path, (16, 4, 64, 48))
  peak = allocated_peak(lambda: fastmri.read_target(path))[1]
  assert peak < 0.75 * kspace.nbytes, peak / kspace.nbytes


def test_kspace_checks_count_every_slice(tmp_path):
  path = str(tmp_path / "mc.h5")
  kspace = _multicoil(path)
  with h5py.File(path, "r+") as f:
    f["kspace"][0, 1, 2, 3] = np.nan
    f["kspace"][3, 5, 7, 9] = np.inf
  with pytest.raises(hr.data.DataError, match=r"mc\.h5: 2 of 122,880 values of 'kspace' are "
                                              r"not finite \(NaN or ±Inf\)"):
    fastmri.read_target(path)
  # Column 10 measured in the last slice only, columns 20–23 in none: 4 gaps.
  kspace[..., 10] = 0
  kspace[..., 20:24] = 0
  kspace[3, 0, 0, 10] = 1
  with h5py.File(path, "w") as f:
    f["kspace"] = kspace
  with pytest.raises(hr.data.DataError, match=r"mc\.h5: its 'kspace' is already undersampled: "
                                              r"4 of the 59 columns"):
    fastmri.read_target(path)
