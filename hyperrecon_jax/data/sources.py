"""From a data config to a built dataset and its random-access splits.

The first use of a configuration builds it into
``<data_dir>/<dataset>/<config name>/<version>/`` (a line on stderr says which,
and TFDS prints a progress bar); later uses read that folder. The config name
is a readable prefix plus a hash of every setting that changes the data (and,
for manual datasets, of the input files' names, sizes, modification and
change times; for the embedded template, of its files' content), e.g.
``mni152/s256_axial_1a2b3c4d5e/1.1.0``. A build that was stopped (killed,
its machine lost) leaves TFDS's ``incomplete.*`` folder beside that one; the
next build of the same configuration removes it, unless a build still holds
the folder's lock (one paused with SIGSTOP or Ctrl-Z,
`builder.remove_stopped_builds`).

A built dataset damaged later (a truncated, overwritten or deleted file) is
reported as a `DataError` that names the file and the folder to delete; the
next run then rebuilds the dataset.
"""

import bisect
import collections.abc
import contextlib
import functools
import importlib
import io
import operator
import os
import re
import sys
from typing import NamedTuple

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import locations

_BUILDERS = {
    "mni152": ("hyperrecon_jax.data.mni152", "Mni152"),
    "fastmri_knee": ("hyperrecon_jax.data.fastmri", "FastmriKnee"),
    "nifti": ("hyperrecon_jax.data.nifti", "Nifti"),
}

INFO_FILE = "dataset_info.json"
METADATA_FILE = "metadata.json"


def _damaged(path: str, problem: str, folder: str) -> data_errors.DataError:
  """The error of a damaged built dataset: which file, and how to rebuild it."""
  return data_errors.DataError(
      f"{path}: {problem}, so the built dataset is damaged; delete the folder "
      f"{folder} and the next run rebuilds it.")


def _detail(err: BaseException) -> str:
  """The error's type and first line, short enough for one sentence."""
  lines = str(err).strip().splitlines()
  text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
  return text if len(text) <= 240 else text[:237] + "..."


@functools.cache
def _info_errors() -> tuple[type[BaseException], ...]:
  """What TFDS raises for an unreadable dataset_info.json (found by experiment).

  Invalid JSON or a non-DatasetInfo value: protobuf's json_format.Error;
  bytes that are not UTF-8: UnicodeDecodeError; an unreadable file: TFDS's
  DatasetInfoFileError (an OSError); valid JSON of another version:
  AssertionError.
  """
  from google.protobuf import json_format
  return (json_format.Error, ValueError, OSError, AssertionError)


@functools.cache
def _record_errors() -> tuple[type[BaseException], ...]:
  """What reading a record of a damaged ArrayRecord shard raises.

  The ArrayRecord reader raises RuntimeError for a missing, truncated or
  overwritten file (Riegeli checks every chunk's hash); a record that is
  intact there but not an example fails to decode with protobuf's
  DecodeError, or with ValueError when its arrays have the wrong size.
  """
  from google.protobuf import message
  return (RuntimeError, ValueError, message.DecodeError)


class Volume(NamedTuple):
  """One volume of a split, as stored.

  Attributes:
    id: the `volume` feature.
    name: the volume's name (file path relative to `manual_dir`).
    slices: the `slice` feature of its examples, in stored order.
    indices: positions of its examples in the split's data source.
    sha256: the SHA-256 of its input file (NIfTI, fastMRI), '' for none (the
      mni152 template, or a dataset built before it was recorded).
    content_sha256: the SHA-256 of its normalized voxels, the same for the
      same image stored in other bytes; '' where ``sha256`` is, or for a
      dataset built before it was recorded.
  """
  id: int
  name: str
  slices: tuple[int, ...]
  indices: range
  sha256: str = ""
  content_sha256: str = ""


def make_builder(data_config):
  """The TFDS builder of a data config (not necessarily built yet).

  Args:
    data_config: a data config (``config.data`` of an experiment config,
      every field of ``experiments/configs/default.py``), a ConfigDict or a
      dict.

  Returns:
    A `tfds.core.GeneratorBasedBuilder`.

  Raises:
    ValueError: unknown dataset name or bad settings.
    DataError: a field of the data config missing, missing or empty
      `manual_dir` for manual datasets, or an unreadable dataset_info.json of
      the built dataset.
  """
  name = config_fields.check_name(config_fields.field(data_config, "name"))
  module_name, class_name = _BUILDERS[name]
  module = importlib.import_module(module_name)
  config = module.builder_config(data_config)
  builder_cls = getattr(module, class_name)
  from hyperrecon_jax.data import builder as builder_lib
  root = locations.data_dir(data_config)
  with builder_lib.quiet_tfds():
    try:
      # Reads dataset_info.json when the dataset is built.
      return builder_cls(config=config, data_dir=root, file_format="array_record")
    except _info_errors() as err:
      folder = os.path.join(root, builder_cls.name, config.name, str(builder_cls.VERSION))
      info_path = os.path.join(folder, INFO_FILE)
      if not os.path.exists(info_path):
        raise  # Not about a built dataset.
      raise _damaged(info_path, f"cannot be read ({_detail(err)})", folder) from err


def prepare(data_config):
  """Builds the dataset unless it is already built; returns its builder.

  Raises:
    DataError: bad input files (while building), or a damaged built dataset
      (naming the folder to delete).
  """
  from hyperrecon_jax.data import builder as builder_lib
  b = make_builder(data_config)
  info_path = os.path.join(b.data_dir, INFO_FILE)
  with builder_lib.quiet_tfds():
    if not b.is_prepared():
      if os.path.isdir(b.data_dir):
        # TFDS moves a finished build into place with its dataset_info.json,
        # so this folder lost the file later; TFDS would take the folder as
        # built and fail on its first split with a KeyError.
        raise _damaged(info_path, "the file is missing", b.data_dir)
      tfds = builder_lib.tfds
      config_folder = os.path.dirname(b.data_dir)
      manual_dir = b.builder_config.manual_dir
      print(f"building the {config_fields.field(data_config, 'name')} dataset"
            f"{f' of {manual_dir}' if manual_dir else ''} in {b.data_dir}", file=sys.stderr)
      leftovers = builder_lib.unfinished_builds(config_folder)
      try:
        try:
          # TFDS prints "Downloading and preparing dataset Unknown size" to
          # stdout; nothing is downloaded, and the line above says what is built.
          with contextlib.redirect_stdout(io.StringIO()), builder_lib.holding_build_lock(b):
            b.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                file_format="array_record")
        except OSError as err:
          # Another process may have finished the same build first (the final
          # rename then fails here); its result is as good as ours.
          b = make_builder(data_config)
          if not b.is_prepared():
            if isinstance(err, PermissionError):
              # A shared cache that this user cannot write, asked for a dataset
              # not built yet: the errno line named neither setting.
              raise data_errors.DataError(
                  f"cannot build the {config_fields.field(data_config, 'name')} dataset in "
                  f"{locations.data_dir_setting(data_config)}: {err}: ask its owner to "
                  f"build it, or set {locations.DATA_DIR_ENV} or config.data.data_dir to a "
                  "folder you can write") from err
            raise
        except AssertionError as err:
          empty = re.search(r'split "(\w+)": No examples were yielded', str(err))
          if not empty:
            raise
          # TFDS writes no empty split; every volume of this one lost all its
          # slices to the foreground threshold.
          threshold = config_fields.field(data_config, "min_foreground")
          # A folder only scored is cut with the model's own threshold, which
          # evaluate.py --data does not let its user change.
          advice = ("the model's own, as it was trained: check that the volumes hold images"
                    if tuple(float(f) for f in config_fields.field(data_config, "split_fractions"))
                    == config_fields.EVALUATION_ONLY else
                    "lower it, or check that the volumes hold images")
          raise data_errors.DataError(
              f"the {empty.group(1)} split of {config_fields.field(data_config, 'name')} "
              f"{config_fields.field(data_config, 'manual_dir')} would hold no slice: no slice of "
              f"its volumes has the foreground fraction data.min_foreground={threshold}; "
              f"{advice}") from None
      except BaseException:
        # TFDS removes its temporary folder, not the config's folder it made.
        with contextlib.suppress(OSError):
          os.rmdir(config_folder)  # only if empty
        raise
      builder_lib.remove_stopped_builds(leftovers, builder_lib.unfinished_builds(config_folder))
  for split in config_fields.written_splits(b.builder_config.settings["split_fractions"]):
    if split not in b.info.splits:
      raise _damaged(info_path, f"lists no {split!r} split", b.data_dir)
  return b


def _prepare_split(data_config, split: str):
  """`prepare`, for reading ``split``, which the build must have written.

  Raises:
    DataError: ``split`` is not a split of an evaluation-only build.
  """
  config_fields.check_split(split)
  b = prepare(data_config)
  if split not in config_fields.written_splits(b.builder_config.settings["split_fractions"]):
    raise data_errors.DataError(
        f"{config_fields.field(data_config, 'name')} "
        f"{config_fields.field(data_config, 'manual_dir')} is "
        f"built for evaluation only (data.split_fractions={config_fields.EVALUATION_ONLY}: every "
        f"volume is in the test split), so it has no {split} split; training needs "
        "split_fractions of three positive numbers")
  return b


class SplitSource(collections.abc.Sequence):
  """A split's TFDS data source that reports damaged files as `DataError`.

  Reads go straight to the TFDS `ArrayRecordDataSource` (the only cost is a
  try block); other attributes (`dataset_info`, `split`, ...) are the TFDS
  source's. A failed read names the shard of the record and the folder to
  delete, also inside the grain pipeline's reader threads.

  Attributes:
    folder: the built dataset's folder.
    files: the split's shard files, in record order.
  """

  def __init__(self, source, folder: str):
    self._source = source
    self._errors = _record_errors()
    self.folder = folder
    instructions = source.dataset_info.splits[source.split].file_instructions
    self.files = [os.fspath(fi.filename) for fi in instructions]
    # Records before the end of each shard, to find the shard of a record.
    ends, total = [], 0
    for fi in instructions:
      total += fi.take
      ends.append(total)
    self._ends = ends

  def check(self):
    """Fails now, not at the first batch, on a missing, truncated or miscounted shard.

    Reads the first record of every shard, which opens it and reads its index
    (at the end of the file), and compares the shard's records with the count
    that dataset_info.json gives it: an edited count there read fewer
    records, or more than the shard holds, without a word.

    Raises:
      DataError: naming the shard (or dataset_info.json) and the folder to delete.
    """
    for path in self.files:
      if not os.path.exists(path):
        raise _damaged(path, "the file is missing", self.folder)
    for path, start, end in zip(self.files, [0] + self._ends[:-1], self._ends):
      if end > start:
        self[start]
      held = _record_count(path)
      if held is not None and held != end - start:
        raise _damaged(os.path.join(self.folder, INFO_FILE),
                       f"gives {os.path.basename(path)} {end - start:,} records, but the "
                       f"shard holds {held:,}", self.folder)

  def _damaged_record(self, index: int, err: BaseException) -> data_errors.DataError:
    path = self.files[bisect.bisect_right(self._ends, index)]
    if not os.path.exists(path):
      return _damaged(path, "the file is missing", self.folder)
    return _damaged(path, f"record {index} of the split cannot be read ({_detail(err)})",
                    self.folder)

  def __getitem__(self, index):
    try:
      return self._source[index]
    except self._errors as err:
      if not 0 <= operator.index(index) < len(self._source):
        raise  # The caller's index is out of range: not damage.
      raise self._damaged_record(operator.index(index), err) from err

  def __getitems__(self, indices):
    try:
      return self._source.__getitems__(indices)
    except self._errors:
      for index in indices:  # Finds the bad record and raises its DataError.
        self[index]
      raise

  def __len__(self) -> int:
    return len(self._source)

  def __iter__(self):
    for index in range(len(self)):
      yield self[index]

  def __getattr__(self, name):
    if name.startswith("_"):  # E.g. while unpickling, before `_source` is set.
      raise AttributeError(name)
    return getattr(self._source, name)

  def __repr__(self) -> str:
    return f"SplitSource({self._source!r}, folder={self.folder!r})"


def _record_count(path: str) -> int | None:
  """The records an ArrayRecord shard holds, from its index; None if it cannot be read.

  An unreadable shard is reported by the read of its first record, with the
  reader's error.
  """
  from array_record.python import array_record_module
  try:
    reader = array_record_module.ArrayRecordReader(path)
  except _record_errors():
    return None
  try:
    return int(reader.num_records())
  finally:
    reader.close()


def load_split(data_config, split: str) -> SplitSource:
  """The random-access data source of one split, building the dataset if needed.

  Args:
    data_config: the data config.
    split: 'train', 'validation' or 'test'.

  Returns:
    A `SplitSource` around the TFDS `ArrayRecordDataSource`: `len(source)`
    examples, `source[i]` a dict of NumPy values with the features of
    `hyperrecon_jax.data.builder`.

  Raises:
    DataError: a damaged built dataset (now, or from `source[i]` for a damaged
      record), naming the file and the folder to delete.
  """
  return _open_split(_prepare_split(data_config, split), split)


def _open_split(b, split: str) -> SplitSource:
  source = SplitSource(b.as_data_source(split=split), b.data_dir)
  source.check()
  return source


def num_examples(data_config, split: str) -> int:
  """Number of slices in a split (builds the dataset if needed)."""
  return int(_prepare_split(data_config, split).info.splits[split].num_examples)


def has_labels(data_config) -> bool:
  """Whether the dataset's examples carry a `label`.

  Told by the builder's features, which its config fixes: the dataset is not
  built for it, so a folder without labels is refused before a build.
  """
  return "label" in make_builder(data_config).info.features


def volumes(data_config, split: str) -> list[Volume]:
  """The volumes of a split, for per-volume evaluation.

  Args:
    data_config: the data config.
    split: 'train', 'validation' or 'test'.

  Returns:
    `Volume` records in stored order (increasing id); a volume's examples are
    contiguous in the split.

  Raises:
    DataError: metadata.json, which holds the index, is missing, unreadable,
      or disagrees with the split's records (`_check_index`).
  """
  b = _prepare_split(data_config, split)
  path = os.path.join(b.data_dir, METADATA_FILE)
  # Every build writes the index (`builder`): a folder without it lost it.
  if not os.path.exists(path):
    raise _damaged(path, "the file is missing", b.data_dir)
  try:
    # TFDS reads metadata.json here, on first access.
    index = b.info.metadata.get("volumes", {}).get(split)
    found = None if index is None else _volume_list(index)
  except (ValueError, KeyError, TypeError, AttributeError) as err:
    # ValueError: not JSON (or not UTF-8); the others: JSON of another shape.
    raise _damaged(path, f"cannot be read ({_detail(err)})", b.data_dir) from err
  if found is None:
    raise _damaged(path, f"lists no volumes of the {split} split", b.data_dir)
  _check_index(found, _open_split(b, split), path, b.data_dir)
  return found


def _check_index(found: list[Volume], source: SplitSource, path: str, folder: str) -> None:
  """Checks the volume index against the split's records.

  The volumes must tile the split in order, and each one's first and last
  records must be its first and last slices: an index edited by hand (a
  start, a slice number, a volume left out) gave other volumes, or other
  slice numbers, to per-volume scores.

  Raises:
    DataError: naming metadata.json and the folder to delete.
  """
  position = 0
  for v in found:
    if v.indices.start != position:
      raise _damaged(path, f"places volume {v.id} ({v.name}) from record {v.indices.start:,} "
                     f"on, not from record {position:,}", folder)
    if not v.slices:
      continue  # every slice fell below data.min_foreground: listed, with none stored
    for i, want in ((v.indices.start, v.slices[0]), (v.indices.stop - 1, v.slices[-1])):
      record = source[i]
      got = (int(record["volume"]), int(record["slice"]))
      if got != (v.id, want):
        raise _damaged(path, f"gives record {i:,} as slice {want} of volume {v.id}, but the "
                       f"record is slice {got[1]} of volume {got[0]}", folder)
    position = v.indices.stop
  if position != len(source):
    raise _damaged(path, f"lists {position:,} slices of the split, which holds "
                   f"{len(source):,}", folder)


def _volume_list(index) -> list[Volume]:
  """`Volume` records from the index that metadata.json stores per split."""
  return [Volume(int(v["id"]), str(v["name"]), tuple(int(k) for k in v["slices"]),
                 range(int(v["start"]), int(v["start"]) + len(v["slices"])),
                 str(v.get("sha256", "")), str(v.get("content_sha256", "")))
          for v in index]
