"""The grain input pipeline: deterministic, checkpointable batches of slices.

Training (`training=True`, the default for 'train'): a seeded global shuffle
that changes every epoch, repeated forever, optional augmentation, batches of
exactly `batch_size` (`drop_remainder`). Evaluation: one pass in stored order
(volume, slice), the last batch padded to `batch_size`, with `valid` False on
padding, so every slice is scored exactly once.

Batches are dicts of NumPy arrays:
  image: (B, H, W) float32 in [0, 1].
  volume: (B,) int32 (-1 on padding).
  slice: (B,) int32 (-1 on padding).
  valid: (B,) bool (all True in training).
  label: (B, H, W) int32, only for datasets with labels (0 on padding), unless
    asked without (``labels=False``).

Every element's shuffle position and augmentation randomness depend only on
(seed, position in the stream), so the iterator state is one integer. Save it
with `iterator.get_state()` (a JSON-serializable dict, e.g.
``{"next_index": 1234}``) or `iterator_state_to_json`; a fresh iterator of the
same config, split, batch size and seed continues exactly where the old one
stopped after `set_state`. A training iterator can also start ``start``
examples into the stream: with any batch size it then gives the examples, and
their augmentation, that one started at 0 gives from example ``start`` on (a
run resumed with another batch size reads on where it stopped).

Several processes (`shard`). Each process of a multi-process run reads its own
shard of every batch: with ``grain.sharding.ShardOptions(i, n)`` it gets rows
``[i·B/n, (i+1)·B/n)`` of each global batch of ``B = batch_size`` rows, which
is grain's strided sharding (``ds[i::n]``) of the stream of local batches of
``B/n`` rows. Concatenated in shard order, the processes' batches are exactly
the batches one process builds without `shard`: the same examples, the same
augmentation, the same order. A process reads only the records of its rows
(except that every process decodes a split small enough to be kept in memory,
`IN_MEMORY_BYTES`, whole). The iterator state counts global batches, so a
checkpoint of a run on any number of processes resumes on any other.
"""

import collections.abc
from collections.abc import Mapping
import functools
import json
import math
from typing import Any

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import sources

grain = dependencies.require("grain")

# Batches read ahead by background threads: enough to hide decoding, few enough
# to bound memory (4 batches of 32 x 256 x 256 float32 are 32 MiB).
DEFAULT_PREFETCH = 4

# Splits whose decoded images and labels fit in this many bytes are decoded
# once and then served from memory. Decoding TFDS records is most of the
# pipeline's time at 64×64, several times what serving from memory takes, and
# it bounded end-to-end GPU training of small images (docs/changelog.md).
# The embedded MNI152 splits at 256×256 take 6–43 MiB (images and labels,
# 12–86 slices of 0.5 MiB); fastMRI and NIfTI folders of real size stay on disk.
IN_MEMORY_BYTES = 512 * 2**20


def _derive_seed(seed: int, purpose: int) -> int:
  """Independent 32-bit seeds for shuffling and augmentation."""
  return int(np.random.SeedSequence([int(seed) % 2**32, purpose]).generate_state(1)[0])


class _EpochShuffle(grain.MapDataset):
  """A global shuffle with one seeded NumPy permutation per epoch.

  Same contract as `MapDataset.shuffle` (a new order every epoch, a pure
  function of seed and index), but grain's per-index `index_shuffle` costs a
  sizeable share of the read time per element; a cached permutation costs
  next to nothing.
  """

  def __init__(self, parent, *, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._length = len(parent)
    self._cache = {}

  def __len__(self) -> int:
    return self._length

  def __str__(self) -> str:
    return f"EpochShuffle(seed={self._seed})"

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self._seed, epoch]).permutation(self._length)
      if len(self._cache) > 4:  # Threads may straddle an epoch boundary.
        self._cache.clear()
      self._cache[epoch] = perm
    return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position = divmod(index, self._length)
    return self._parent[epoch * self._length + int(self._permutation(epoch)[position])]


class _InMemory(collections.abc.Sequence):
  """A split's records, decoded once and kept (read-only) in memory.

  Serves exactly what the source would (same records, same order), so the
  batches, their augmentation and the iterator state are those of the
  on-disk path.
  """

  def __init__(self, source):
    self.dataset_info = source.dataset_info
    self._records = [source[i] for i in range(len(source))]
    for record in self._records:
      for value in record.values():
        if isinstance(value, np.ndarray):
          value.setflags(write=False)  # an in-place edit would change every epoch

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    return self._records[index]


def _in_memory(source):
  """`source` decoded into memory when its images fit `IN_MEMORY_BYTES`."""
  features = source.dataset_info.features
  per_record = 4 * int(np.prod(features["image"].shape))
  if "label" in features:
    per_record += 4 * int(np.prod(features["label"].shape))
  if len(source) * per_record > IN_MEMORY_BYTES:
    return source
  return _InMemory(source)


def _example(raw: Mapping[str, Any], with_label: bool, valid: bool = True) -> dict:
  out = {
      "image": np.asarray(raw["image"], np.float32),
      "volume": np.int32(raw["volume"]),
      "slice": np.int32(raw["slice"]),
      "valid": np.bool_(valid),
  }
  if with_label:
    out["label"] = np.asarray(raw["label"], np.int32)
  return out


def _padded_example(index: int, *, source, with_label: bool) -> dict:
  if index < len(source):
    return _example(source[index], with_label)
  image = np.zeros(source.dataset_info.features["image"].shape, np.float32)
  pad = {"image": image, "volume": -1, "slice": -1, "label": image.astype(np.int32)}
  return _example(pad, with_label, valid=False)


def augment(example: dict, rng: np.random.Generator, *, flip: bool,
            intensity: float) -> dict:
  """Random flips and intensity scaling of one training example.

  Args:
    example: an element of the pipeline (image and optional label).
    rng: the element's generator (grain derives it from seed and position).
    flip: flip left-right and up-down, each with probability 1/2.
    intensity: scale intensities by a factor uniform in
      [1 - intensity, 1 + intensity], then clip to [0, 1].

  Returns:
    The augmented example (a new dict). A flipped array is a view of the
    input's: batching copies it once, where a contiguous copy here would
    copy it twice (the largest part of the pipeline's time at 256×256).
  """
  out = dict(example)
  keys = [k for k in ("image", "label") if k in out]
  if flip:
    for axis, do in zip((1, 0), rng.random(2) < 0.5):
      if do:
        for k in keys:
          out[k] = np.flip(out[k], axis=axis)
  if intensity > 0:
    factor = rng.uniform(1.0 - intensity, 1.0 + intensity)
    out["image"] = np.clip(out["image"] * np.float32(factor), 0.0, 1.0).astype(np.float32)
  return out


def _intensity(value) -> float:
  """``augment_intensity``, which must lie in [0, 1).

  Checked here as well as by `check_config`, for the library's callers: 1.5
  scaled some images by a negative factor (black once clipped), and a
  negative value or NaN turned the augmentation off without a word.
  """
  try:
    intensity = float(value)
  except (TypeError, ValueError):
    intensity = math.nan
  if isinstance(value, bool) or not 0 <= intensity < 1:
    raise errors.InputError(f"data.augment_intensity must lie in [0, 1), got {value!r}")
  return intensity


def _local_batch_size(batch_size: int, shard) -> int:
  """Rows of each global batch that one shard reads."""
  if batch_size < 1:
    raise errors.InputError(f"batch_size must be positive; got {batch_size}.")
  if shard is None:
    return batch_size
  if batch_size % shard.shard_count:
    raise errors.InputError(
        f"batch_size={batch_size} must be divisible by the number of shards "
        f"({shard.shard_count}, one per process)")
  return batch_size // shard.shard_count


def dataset(data_config, split: str, *, batch_size: int, seed: int = 0,
            training: bool | None = None, shard=None, labels: bool = True,
            start: int = 0):
  """The batched `grain.MapDataset` behind `batches`.

  Args:
    data_config: the data config (see `sources.make_builder`).
    split: 'train', 'validation' or 'test'.
    batch_size: examples per (global) batch.
    seed: shuffling and augmentation seed (training only).
    training: shuffled, repeating, augmented, dropping the remainder; default
      True for 'train' and False otherwise.
    shard: a ``grain.sharding.ShardOptions`` (e.g. ``ShardByJaxProcess()``):
      this process's rows of every batch (see the module docstring); None
      reads whole batches.
    labels: give the split's labels (``label``) where it has them; False
      leaves them out (training a reconstruction reads only the images: half
      the bytes of a batch of a labelled split).
    start: training only: examples of the stream (shuffled, augmented, over
      every epoch) before the first batch.

  Returns:
    A `grain.MapDataset` of batch dicts of ``batch_size / shard_count`` rows;
    for evaluation `len()` is the number of batches.
  """
  local = _local_batch_size(batch_size, shard)
  training = split == "train" if training is None else bool(training)
  if isinstance(start, bool) or int(start) != start or start < 0 or (start and not training):
    raise errors.InputError(f"start must be a whole number ≥ 0, and 0 outside training; "
                            f"got {start!r} for {'training' if training else 'evaluation'}")
  flip = bool(config_fields.field(data_config, "augment_flip"))
  intensity = _intensity(config_fields.field(data_config, "augment_intensity"))
  source = sources.load_split(data_config, split)
  with_label = bool(labels) and "label" in source.dataset_info.features
  if len(source) == 0:
    raise data_errors.DataError(
        f"The {split!r} split of {config_fields.field(data_config, 'name')!r} is empty.")
  source = _in_memory(source)
  if not training:
    padded = math.ceil(len(source) / batch_size) * batch_size
    ds = grain.MapDataset.range(padded).map(
        functools.partial(_padded_example, source=source, with_label=with_label))
    return _shard(ds.batch(local, drop_remainder=True), shard)
  ds = _EpochShuffle(grain.MapDataset.source(source), seed=_derive_seed(seed, 0)).repeat()
  ds = ds.map(functools.partial(_example, with_label=with_label))
  if flip or intensity > 0:
    ds = ds.random_map(functools.partial(augment, flip=flip, intensity=intensity),
                       seed=_derive_seed(seed, 1))
  if start:
    ds = ds[int(start):]  # after the augmentation, which is drawn by position in the stream
  return _shard(ds.batch(local, drop_remainder=True), shard)


def _shard(ds, shard):
  """Every ``shard_count``-th local batch from ``shard_index`` on: one shard of each batch.

  The examples are shuffled and augmented before batching, by their position
  in the one stream all processes share, so local batch ``k·n + i`` holds rows
  ``[i·B/n, (i+1)·B/n)`` of global batch ``k`` (n shards, B rows).
  """
  if shard is None or shard.shard_count == 1:
    return ds
  return ds[shard.shard_index::shard.shard_count]


def batches(data_config, split: str, *, batch_size: int, seed: int = 0,
            training: bool | None = None, num_threads: int | None = None,
            prefetch: int = DEFAULT_PREFETCH, shard=None, labels: bool = True,
            start: int = 0):
  """An iterator of batch dicts (see the module docstring for the format).

  Args:
    data_config: the data config (see `sources.make_builder`).
    split: 'train', 'validation' or 'test'.
    batch_size: examples per (global) batch.
    seed: shuffling and augmentation seed (training only).
    training: shuffled, repeating, augmented, dropping the remainder; default
      True for 'train' and False otherwise.
    num_threads: threads reading batches ahead; default
      `data_config.num_threads`; 0 reads on the caller's thread.
    prefetch: batches read ahead (when `num_threads` > 0).
    shard: a ``grain.sharding.ShardOptions``: this process's rows of every
      batch (see `dataset`); None reads whole batches.
    labels: give the split's labels where it has them (see `dataset`).
    start: training only: examples of the stream before the first batch (see
      the module docstring).

  Returns:
    A grain `DatasetIterator`: `next()` gives a batch (``batch_size /
    shard_count`` rows); `get_state()` / `set_state()` save and restore the
    position.
  """
  ds = dataset(data_config, split, batch_size=batch_size, seed=seed, training=training,
               shard=shard, labels=labels, start=start)
  if num_threads is None:
    num_threads = int(config_fields.field(data_config, "num_threads"))
  options = grain.ReadOptions(num_threads=num_threads,
                              prefetch_buffer_size=prefetch if num_threads else 0)
  return iter(ds.to_iter_dataset(options))


def iterator_state_to_json(state: Mapping[str, Any]) -> str:
  """Serializes `iterator.get_state()` (a dict of ints) to a JSON string."""
  return json.dumps(state, sort_keys=True, default=lambda x: x.item())


def iterator_state_from_json(text: str) -> dict:
  """Parses `iterator_state_to_json` output for `iterator.set_state()`."""
  state = json.loads(text)
  if not isinstance(state, dict):
    raise errors.InputError(f"Not an iterator state: {text!r}")
  return state
