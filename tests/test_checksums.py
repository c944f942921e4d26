"""Tests of hyperrecon_jax.checksums: a step's file checksums and its values' digests.

Values are checked against ``hashlib`` applied by hand to the same bytes; the
step folders are small files written here (the checkpoints that orbax writes
are covered by tests/test_checkpoints.py).
"""

import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import checksums


@pytest.fixture()
def step_dir(tmp_path):
  """A step folder of three files, one of them in a subfolder."""
  path = tmp_path / "checkpoints" / "4"
  (path / "state" / "d").mkdir(parents=True)
  (path / "state" / "d" / "chunk").write_bytes(bytes(range(256)) * 3)
  (path / "state" / "manifest.ocdbt").write_bytes(b"manifest")
  (path / "data").write_text('{"position": 8}')
  return path


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def test_write_records_the_size_and_sha256_of_every_file(step_dir):
  checksums.write(str(step_dir))
  with open(step_dir / checksums.CHECKSUMS) as f:
    table = json.load(f)
  want = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name == checksums.CHECKSUMS:
        continue
      data = open(os.path.join(root, name), "rb").read()
      want[os.path.relpath(os.path.join(root, name), step_dir)] = [len(data), _sha256(data)]
  assert table == want and len(table) == 3
  assert sorted(os.listdir(step_dir)) == sorted(["state", "data", checksums.CHECKSUMS])
  assert checksums.verify(str(step_dir))


def test_a_step_without_checksums_is_not_verified_and_not_damaged(step_dir):
  assert checksums.verify(str(step_dir)) is False


@pytest.mark.parametrize("damage, message", [
    ("remove", "is missing"),
    ("truncate", "767 bytes, 768 were written"),
    ("flip", "does not match its SHA-256"),
])
def test_a_damaged_file_is_named(step_dir, damage, message):
  checksums.write(str(step_dir))
  chunk = step_dir / "state" / "d" / "chunk"
  data = bytearray(chunk.read_bytes())
  if damage == "remove":
    chunk.unlink()
  elif damage == "truncate":
    chunk.write_bytes(data[:-1])
  else:
    data[300] ^= 0x01  # one bit: the size stays, the digest changes
    chunk.write_bytes(data)
  with pytest.raises(checksums.RecordError, match=message) as e:
    checksums.verify(str(step_dir))
  assert str(chunk) in str(e.value)


@pytest.mark.parametrize("change", ["emptied", "added"])
def test_a_file_the_table_does_not_list_is_named(step_dir, change):
  # An emptied table vouched for every file, a changed one included, unread.
  checksums.write(str(step_dir))
  table = step_dir / checksums.CHECKSUMS
  if change == "emptied":
    table.write_text("{}")
    first, more = step_dir / "data", " and 2 more"
  else:
    first, more = step_dir / "state" / "extra", ""
    first.write_bytes(b"x")
  with pytest.raises(checksums.RecordError) as e:
    checksums.verify(str(step_dir))
  assert str(e.value) == (f"{first}{more} not in {table} (added since the save, or the table "
                          "is damaged)")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"data": 5}', '{"data": [1, 2, 3]}'])
def test_a_damaged_checksums_file_is_named(step_dir, text):
  (step_dir / checksums.CHECKSUMS).write_text(text)
  with pytest.raises(checksums.RecordError, match="is damaged") as e:
    checksums.verify(str(step_dir))
  assert str(step_dir / checksums.CHECKSUMS) in str(e.value)


def test_state_digest_hashes_each_leafs_dtype_shape_and_bytes():
  state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": jnp.int32(7)}
  h = hashlib.sha256()
  # The pytree's (sorted) order; a scalar counts as shape (1,).
  for leaf in (state["a"], np.asarray([7], np.int32)):
    h.update(f"{leaf.dtype.str}{leaf.shape};".encode() + leaf.tobytes())
  assert checksums.state_digest(state) == h.hexdigest()


def test_state_digest_tells_apart_a_bit_a_shape_and_a_dtype():
  a = np.arange(6, dtype=np.float32)
  digest = checksums.state_digest({"a": a})
  flipped = a.copy()
  flipped.view(np.uint32)[2] ^= 1  # the lowest bit of one mantissa
  others = [flipped, a.reshape(2, 3), a.view(np.int32)]
  assert all(checksums.state_digest({"a": x}) != digest for x in others)
  assert checksums.state_digest({"a": a.copy()}) == digest


def test_json_digest_is_that_of_the_canonical_text():
  value = {"b": [1, 2], "a": {"y": 0.5, "x": "s"}}
  want = _sha256(b'{"a":{"x":"s","y":0.5},"b":[1,2]}')
  assert checksums.json_digest(value) == want
  assert checksums.json_digest({"a": {"x": "s", "y": 0.5}, "b": (1, 2)}) == want


DIGESTS = {"state": "s" * 64, "data": "d" * 64, "config": "c" * 64}
ITEMS = tuple(DIGESTS)


def test_pending_digests_are_read_back_for_their_step_only(tmp_path):
  workdir = str(tmp_path)
  assert checksums.pending(workdir, 4, ITEMS) is None
  checksums.record_pending(workdir, 4, DIGESTS)
  assert checksums.pending(workdir, 4, ITEMS) == DIGESTS
  assert checksums.pending(workdir, 5, ITEMS) is None
  assert os.listdir(workdir) == [checksums.PENDING]  # no temporary file left


@pytest.mark.parametrize("text", ["{cut", '{"step": 4}', "[4]"])
def test_unreadable_pending_digests_are_named(tmp_path, text):
  (tmp_path / checksums.PENDING).write_text(text)
  with pytest.raises(checksums.RecordError, match="checkpoint 4 has no") as e:
    checksums.pending(str(tmp_path), 4, ITEMS)
  assert checksums.pending_path(str(tmp_path)) in str(e.value)


def test_clear_pending_removes_only_the_named_steps_digests(tmp_path):
  workdir, path = str(tmp_path), tmp_path / checksums.PENDING
  checksums.record_pending(workdir, 4, DIGESTS)
  checksums.clear_pending(workdir, 5)
  assert path.exists()
  checksums.clear_pending(workdir, 4)
  assert not path.exists()
  checksums.clear_pending(workdir, 4)  # nothing to remove
  path.write_text("{cut")
  checksums.clear_pending(workdir, 4)  # unreadable: it may belong to another step
  assert path.exists()
  checksums.clear_pending(workdir)
  assert not path.exists()


def test_stale_pending_digests_are_dropped_once_their_step_is_gone(tmp_path):
  workdir, path = str(tmp_path), tmp_path / checksums.PENDING
  checksums.record_pending(workdir, 4, DIGESTS)
  checksums.drop_stale_pending(workdir, [2, 4])
  assert path.exists()
  checksums.drop_stale_pending(workdir, [2, 3])
  assert not path.exists()
  path.write_text("{cut")
  checksums.drop_stale_pending(workdir, [2, 3])
  assert path.exists()
