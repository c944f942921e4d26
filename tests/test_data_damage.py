"""A built dataset damaged on disk fails with a DataError saying how to rebuild it.

The tiny mni152 dataset is built once per module; each test damages its own
copy, so the tests are independent and need no rebuild.
"""

import json
import os
import shutil

from array_record.python import array_record_module
import configs
import numpy as np
import pytest

import hyperrecon_jax as hr
from hyperrecon_jax.data import mni152

SIZE = 32
SHARD = "mni152-train.array_record-00000-of-00001"


def _config(data_dir):
  cfg = configs.default().data
  cfg.update(data_dir=str(data_dir), image_size=SIZE, num_threads=0)
  return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The data_dir of a pristine build (never damaged: tests copy it)."""
  data_dir = tmp_path_factory.mktemp("pristine")
  hr.data.prepare(_config(data_dir))
  return data_dir


@pytest.fixture
def copy(built, tmp_path):
  """(config, dataset folder) of a fresh copy of the built dataset."""
  data_dir = tmp_path / "tfds"
  shutil.copytree(built, data_dir)
  cfg = _config(data_dir)
  return cfg, hr.data.make_builder(cfg).data_dir


def _overwrite(path, offset=0, length=None):
  """Overwrites bytes of a file with seeded random bytes (same size)."""
  size = os.path.getsize(path)
  length = size - offset if length is None else length
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(np.random.default_rng(0).bytes(length))


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _check_message(err, damaged_file, folder):
  message = str(err)
  assert isinstance(err, hr.data.DataError)
  assert message.startswith(f"{os.path.join(folder, damaged_file)}: ")
  assert f"delete the folder {folder} and the next run rebuilds it." in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted"])
def test_unreadable_shard_fails_on_open(copy, damage):
  cfg, folder = copy
  shard = os.path.join(folder, SHARD)
  {"truncated": _truncate, "garbage": _overwrite, "deleted": os.remove}[damage](shard)
  with pytest.raises(hr.data.DataError) as info:
    hr.data.load_split(cfg, "train")
  _check_message(info.value, SHARD, folder)
  assert ("the file is missing" if damage == "deleted" else "cannot be read") in str(info.value)
  with pytest.raises(hr.data.DataError, match=SHARD):
    hr.data.batches(cfg, "train", batch_size=4)
  # What needs no record still works, and the other splits are intact.
  assert hr.data.num_examples(cfg, "train") == 86
  assert len(hr.data.load_split(cfg, "test")) == 24


def test_damaged_records_fail_when_read(copy):
  cfg, folder = copy
  shard = os.path.join(folder, SHARD)
  _overwrite(shard, os.path.getsize(shard) // 3, 4096)
  source = hr.data.load_split(cfg, "train")  # The first record is intact.
  with pytest.raises(hr.data.DataError, match=r"record \d+ of the split") as info:
    for i in range(len(source)):
      source[i]
  _check_message(info.value, SHARD, folder)
  # Also from the pipeline's reader threads.
  with pytest.raises(hr.data.DataError) as info:
    list(hr.data.batches(cfg, "train", batch_size=8, training=False, num_threads=2))
  _check_message(info.value, SHARD, folder)


def test_undecodable_record(copy):
  cfg, folder = copy
  shard = os.path.join(folder, SHARD)
  reader = array_record_module.ArrayRecordReader(shard)
  records = reader.read(list(range(reader.num_records())))
  reader.close()
  os.remove(shard)
  # A valid ArrayRecord file whose record 3 is not an example.
  writer = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  for i, record in enumerate(records):
    writer.write(b"\xff not an example" if i == 3 else record)
  writer.close()
  source = hr.data.load_split(cfg, "train")
  assert int(source[2]["slice"]) == 9
  with pytest.raises(hr.data.DataError, match="record 3 of the split .*DecodeError") as info:
    source[3]
  _check_message(info.value, SHARD, folder)


def test_bad_index_is_not_damage(copy):
  cfg, _ = copy
  source = hr.data.load_split(cfg, "test")
  with pytest.raises(ValueError) as info:
    source[len(source)]
  assert not isinstance(info.value, hr.data.DataError)
  assert source.dataset_info.name == "mni152" and source.split == "test"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted", "no_splits"])
def test_damaged_dataset_info(copy, damage):
  cfg, folder = copy
  path = os.path.join(folder, "dataset_info.json")
  if damage == "no_splits":
    with open(path, "w") as f:
      f.write(json.dumps({"version": str(mni152.Mni152.VERSION)}))
  else:
    {"truncated": _truncate, "garbage": _overwrite, "deleted": os.remove}[damage](path)
  expected = {"truncated": "ParseError", "garbage": "UnicodeDecodeError",
              "deleted": "the file is missing", "no_splits": "lists no 'train' split"}
  for call in (lambda: hr.data.num_examples(cfg, "test"),
               lambda: hr.data.load_split(cfg, "test"),
               lambda: hr.data.batches(cfg, "test", batch_size=4)):
    with pytest.raises(hr.data.DataError, match=expected[damage]) as info:
      call()
    _check_message(info.value, "dataset_info.json", folder)


def test_damaged_metadata(copy):
  cfg, folder = copy
  _truncate(os.path.join(folder, "metadata.json"))
  # Only the volume index comes from metadata.json.
  assert len(hr.data.load_split(cfg, "test")) == 24
  with pytest.raises(hr.data.DataError, match="JSONDecodeError") as info:
    hr.data.volumes(cfg, "test")
  _check_message(info.value, "metadata.json", folder)


def test_features_json_is_not_read(copy):
  cfg, folder = copy
  # The builders define their features in code, so TFDS never reads this file.
  _overwrite(os.path.join(folder, "features.json"))
  assert int(hr.data.load_split(cfg, "test")[0]["slice"]) == 78
  assert hr.data.has_labels(cfg)


def test_deleting_the_named_folder_rebuilds(copy):
  cfg, folder = copy
  _truncate(os.path.join(folder, SHARD))
  with pytest.raises(hr.data.DataError):
    hr.data.load_split(cfg, "train")
  shutil.rmtree(folder)  # As the message says.
  source = hr.data.load_split(cfg, "train")
  assert len(source) == 86 and int(source[85]["slice"]) == 152


def _edit_json(path, edit):
  with open(path) as f:
    value = json.load(f)
  edit(value)
  with open(path, "w") as f:
    json.dump(value, f)


@pytest.mark.parametrize("count", ["14", "87"])
def test_an_edited_shard_length_is_damage(copy, count):
  # "24" → "14" read 14 test slices and scored them as the whole split.
  cfg, folder = copy
  def edit(info):
    split = next(s for s in info["splits"] if s["name"] == "test")
    split["shardLengths"] = [count]
  _edit_json(os.path.join(folder, "dataset_info.json"), edit)
  with pytest.raises(hr.data.DataError, match=rf"gives mni152-test\.array_record-00000-of-00001 "
                                              rf"{count} records, but the shard holds 24") as info:
    hr.data.load_split(cfg, "test")
  _check_message(info.value, "dataset_info.json", folder)
  assert len(hr.data.load_split(cfg, "train")) == 86  # the other splits are intact


def test_a_deleted_volume_index_is_damage(copy):
  # The split was scanned instead, and the volumes' digests were lost.
  cfg, folder = copy
  os.remove(os.path.join(folder, "metadata.json"))
  assert len(hr.data.load_split(cfg, "test")) == 24  # only the index is lost
  with pytest.raises(hr.data.DataError, match="the file is missing") as info:
    hr.data.volumes(cfg, "test")
  _check_message(info.value, "metadata.json", folder)


@pytest.mark.parametrize("edit, match", [
    (lambda v: v.update(start=1), r"places volume 0 \(mni_icbm152_2009c_t1\) from record 1 on, "
                                  r"not from record 0"),
    (lambda v: v["slices"].__setitem__(0, v["slices"][0] + 1),
     r"gives record 0 as slice 79 of volume 0, but the record is slice 78 of volume 0"),
    (lambda v: v["slices"].pop(), r"lists 23 slices of the split, which holds 24"),
])
def test_an_index_that_disagrees_with_the_records_is_damage(copy, edit, match):
  # Valid JSON edited by hand gave per-volume scores other slices.
  cfg, folder = copy
  path = os.path.join(folder, "metadata.json")
  _edit_json(path, lambda m: edit(m["volumes"]["test"][0]))
  with pytest.raises(hr.data.DataError, match=match) as info:
    hr.data.volumes(cfg, "test")
  _check_message(info.value, "metadata.json", folder)
