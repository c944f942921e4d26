"""The TFDS builder shared by every dataset: one 2-D slice per example.

Datasets are written as ArrayRecord files by TensorFlow Datasets, which needs
no TensorFlow for this format, and read back as random-access data sources.

Each builder config carries every setting that changes the written data, and
its name ends in a hash of them (`settings_name`), so a changed image size or
axis builds a new dataset next to the old one instead of reusing it. TFDS
writes into a temporary ``incomplete.*`` folder and renames it only once all
splits are written; a failed build deletes that folder, and a killed one leaves
a folder that is never taken for a finished dataset. A build holds a lock on
``.build.lock`` in that folder until it is renamed or removed, so that another
build's clean-up (`remove_stopped_builds`) leaves it alone, even while the
build is paused.

Example features:
  image: float32 (size, size) in [0, 1].
  volume: int32 volume (subject, file) id.
  slice: int32 index of the slice within its volume.
  name: the volume's name (file path relative to `manual_dir`).
  label: (size, size) integer labels, for datasets that have them.

Examples are stored in order (volume, slice), with no TFDS shuffling; the
dataset's metadata (`metadata.json`) lists the volumes of every split, with
the SHA-256 of each input file (`hyperrecon_jax.data.split_record` compares
volumes by it).
"""

from collections.abc import Iterator
from collections.abc import Mapping
import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import sys
from typing import Any

import numpy as np

from hyperrecon_jax import checksums
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import near_copies
from hyperrecon_jax.data import slicing

tfds = dependencies.require("tensorflow_datasets")

# Inside TFDS's temporary folder, so that it goes with the folder: removed
# with a failed build, renamed with a finished one (and then deleted), and
# never an entry of the config's folder, where TFDS lists versions.
BUILD_LOCK = ".build.lock"


@dataclasses.dataclass(eq=False)
class SliceConfig(tfds.core.BuilderConfig):
  """Settings of a sliced dataset (subclasses add their own).

  Attributes:
    image_size: side of the square images.
    label_dtype: dtype name of the `label` feature, or '' for none.
    manual_dir: folder with the user's files (manual datasets only).
    settings: everything that changes the written data; hashed into `name`.
  """
  image_size: int = 256
  label_dtype: str = ""
  manual_dir: str = ""
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def settings_name(prefix: str, settings: Mapping[str, Any]) -> str:
  """Config name: readable prefix plus a hash of all settings."""
  return f"{prefix}_{config_fields.digest(settings)}"


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
  """A volume to write: its id, its name and what the builder needs to read it.

  Attributes:
    id: the `volume` feature.
    name: the volume's name (its file, relative to `manual_dir`).
    source: what the builder's `_slices` reads.
    file: the volume's input file, whose SHA-256 names its content in the
      dataset's metadata (`sha256`), whatever the file is called; '' for none.
  """
  id: int
  name: str
  source: Any = None
  file: str = ""


class _LocalInfo(tfds.core.DatasetInfo):
  """A `DatasetInfo` that never looks for its dataset in TFDS's GCS bucket.

  TFDS calls `initialize_from_bucket` for every builder whose dataset is not
  built yet. With GCS disabled it only makes a temporary folder, which it
  never removes: one empty `tmp*tfds` folder in $TMPDIR per builder. These
  datasets are cut from local files; there is nothing to fetch.
  """

  def initialize_from_bucket(self) -> None:
    return None


class SliceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: subclasses plan volumes per split and cut them into slices.

  Builders are not registered with TFDS by name: `hyperrecon_jax.data` makes
  them from a data config (see `sources.make_builder`).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  HOMEPAGE = ""
  DESCRIPTION = ""

  def _info(self):
    cfg = self.builder_config
    size = cfg.image_size
    features = {
        "image": tfds.features.Tensor(shape=(size, size), dtype=np.float32),
        "volume": tfds.features.Scalar(dtype=np.int32),
        "slice": tfds.features.Scalar(dtype=np.int32),
        "name": tfds.features.Text(),
    }
    if cfg.label_dtype:
      features["label"] = tfds.features.Tensor(
          shape=(size, size), dtype=np.dtype(cfg.label_dtype))
    return _LocalInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        homepage=self.HOMEPAGE or None,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _plan(self) -> Mapping[str, list[VolumeSpec]]:
    """Returns the volumes of every split (subclasses)."""
    raise NotImplementedError

  def _slices(self, spec: VolumeSpec) -> Iterator[slicing.Slice]:
    """Yields the kept slices of one volume (subclasses)."""
    raise NotImplementedError

  def _download_and_prepare(self, *args, **kwargs):
    # TFDS calls this inside its temporary folder (``self.data_dir`` is that
    # folder until the build ends); `holding_build_lock` releases the lock.
    self._build_lock = _lock_build_folder(self.data_dir)
    return super()._download_and_prepare(*args, **kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded; manual files come from the config.
    plan = self._plan()
    self.info.metadata["settings"] = dict(self.builder_config.settings)
    self.info.metadata["volumes"] = {}
    # Set by `_slices` as it reads a volume (`_record_content`): the SHA-256
    # of its normalized voxels (`checksums.array_digest`), the same for the
    # same image stored in other bytes (gunzipped, another header), and the
    # voxels themselves, whose thumbnail finds a copy whose values differ by
    # float32 rounding (`near_copies`).
    self._contents = {}
    self._volume_of_content = {}  # digest -> the first volume's name
    self._near = near_copies.Index()
    splits = config_fields.written_splits(self.builder_config.settings["split_fractions"])
    return {split: self._generate_examples(split, plan[split]) for split in splits}

  def _generate_examples(self, split, specs):
    index = []
    start = 0
    label_dtype = self.builder_config.label_dtype
    for spec in specs:
      slices = []
      for s in self._slices(spec):
        example = {
            "image": s.image.astype(np.float32),
            "volume": np.int32(spec.id),
            "slice": np.int32(s.index),
            "name": spec.name,
        }
        if label_dtype:
          example["label"] = s.label.astype(label_dtype)
        yield f"{spec.id:07d}_{s.index:05d}", example
        slices.append(s.index)
      entry = {"id": spec.id, "name": spec.name, "slices": slices, "start": start}
      if spec.file:
        entry["sha256"] = checksums.file_digest(spec.file)
      if spec.id in self._contents:
        entry["content_sha256"], volume = self._contents.pop(spec.id)
        self._check_unique(spec.name, entry["content_sha256"], volume)
      index.append(entry)
      start += len(slices)
    # Written to metadata.json with the dataset info after all splits finish.
    self.info.metadata["volumes"][split] = index


  def _record_content(self, volume_id: int, volume: np.ndarray) -> None:
    """Keeps what `_check_unique` compares of a volume's normalized voxels (`_slices`)."""
    self._contents[volume_id] = (checksums.array_digest(volume), volume)

  def _check_unique(self, name: str, content: str, volume: np.ndarray) -> None:
    """Refuses a second file of a volume already written (a copy, a link, a gunzipped twin).

    Volumes are split by file, so a copy would put one subject in two splits
    (scored on data it learned from) or count it twice. The same normalized
    voxels, or voxels that differ by float32 rounding alone (the file saved
    with another ``scl_slope``, `near_copies`), are one volume. Raised
    mid-build, so TFDS deletes its temporary folder and no dataset is left.
    """
    first = self._volume_of_content.setdefault(content, name)
    how = "identical voxels once normalized"
    if first == name:
      first = self._near.find(volume)
      how = "voxels equal to float32 rounding once normalized, e.g. another scl_slope"
    if first is not None and first != name:
      raise data_errors.DataError(
          f"{first} and {name} in {self.builder_config.manual_dir} hold the same "
          f"volume ({how}): as two subjects it would be learned from twice, or scored on "
          "data it was learned from. Remove one of them.")
    self._near.add(volume, name)


class _DropTfdsNoise(logging.Filter):
  """Hides TFDS warnings that are expected here (custom configs, no info yet)."""

  _EXPECTED = ("Using custom data configuration", "has no dataset_info.json")

  def filter(self, record):
    msg = record.getMessage()
    return not any(text in msg for text in self._EXPECTED)


@contextlib.contextmanager
def quiet_tfds():
  """Silences expected TFDS log warnings inside the block, and its bars off a terminal.

  TFDS draws tqdm bars while it builds. Written to a log file, their carriage
  returns put the next line (``error: ...``, ``data: ...``) after a ``\\r`` on
  the bar's line, where ``grep '^error:'`` misses it; the scripts' own
  progress (`hyperrecon_jax.progress`) draws a bar only on a terminal too.
  """
  logger = logging.getLogger("absl")
  noise = _DropTfdsNoise()
  logger.addFilter(noise)
  bars = tfds.core.utils.tqdm_utils
  shown = getattr(bars, "_active", True)  # TFDS has no public getter
  tfds.display_progress_bar(shown and sys.stderr.isatty())
  try:
    yield
  finally:
    tfds.display_progress_bar(shown)
    logger.removeFilter(noise)


def _lock_build_folder(folder: str) -> int | None:
  """Takes the lock of a build's temporary folder.

  Args:
    folder: TFDS's ``incomplete.*`` folder of the build.

  Returns:
    The lock file's descriptor, held until `holding_build_lock` closes it;
    None where the file system has no ``flock`` (some network file systems):
    the build then runs unlocked, and other builds judge its folder by its
    changes alone (`remove_stopped_builds`).
  """
  fd = os.open(os.path.join(folder, BUILD_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    return None
  return fd


@contextlib.contextmanager
def holding_build_lock(builder):
  """Keeps the lock that ``builder``'s build takes until the build has ended.

  The build takes it as TFDS starts writing (`SliceBuilder`) and holds it
  while TFDS writes the dataset's info and renames the folder into place.
  The lock file of a finished build, now in the dataset's folder, is
  deleted; a failed build's went with its folder.

  Args:
    builder: the `SliceBuilder` whose ``download_and_prepare`` the block calls.
  """
  try:
    yield
  finally:
    fd = builder.__dict__.pop("_build_lock", None)
    if fd is not None:
      path = os.path.join(builder.data_dir, BUILD_LOCK)
      with contextlib.suppress(OSError):
        # Only this build's file: after a failed rename the dataset's folder
        # is another build's.
        if os.path.samestat(os.fstat(fd), os.stat(path)):
          os.unlink(path)
      os.close(fd)


def _build_is_running(folder: str) -> bool:
  """Whether a build holds the lock of its temporary folder.

  Args:
    folder: an ``incomplete.*`` folder.

  Returns:
    True while a process holds the folder's lock; False for a folder without
    a lock file (a build by an older version) or on a file system without
    ``flock``, which leave the decision to the folder's changes.
  """
  try:
    fd = os.open(os.path.join(folder, BUILD_LOCK), os.O_RDONLY)
  except OSError:
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return True
  except OSError:
    return False
  finally:
    os.close(fd)
  return False


def unfinished_builds(config_folder: str) -> dict[str, tuple]:
  """TFDS's temporary build folders in ``config_folder``, each with what it holds.

  What a folder holds is its files' names, sizes and modification times: a
  build still running changes it, a stopped one (killed, or its machine
  lost) never does.
  """
  found = {}
  with contextlib.suppress(OSError):
    for entry in os.scandir(config_folder):
      if entry.name.startswith("incomplete.") and entry.is_dir(follow_symlinks=False):
        files = []
        for dirpath, _, filenames in os.walk(entry.path):
          for name in filenames:
            with contextlib.suppress(OSError):
              info = os.stat(os.path.join(dirpath, name))
              files.append((os.path.join(dirpath, name), info.st_size, info.st_mtime_ns))
        found[entry.path] = tuple(sorted(files))
  return found


def remove_stopped_builds(before: dict[str, tuple], after: dict[str, tuple]) -> None:
  """Removes the temporary folders of builds that were stopped.

  A killed build leaves its temporary folder (a partial copy of the dataset)
  for good; nothing reads it. A folder is removed, and named, when it held
  the same files at the start and at the end of a whole build of the same
  dataset and no process holds its lock (`SliceBuilder`): a build paused
  (SIGSTOP, Ctrl-Z) for that whole time still holds it. Both are asked
  because ``flock`` may not reach across hosts that share a network folder,
  where a running build is known by its changes alone; a paused one on
  another host is not known there.

  Args:
    before: `unfinished_builds` of the config's folder before this build.
    after: the same after it.
  """
  for path, files in before.items():
    if after.get(path) == files and not _build_is_running(path):
      shutil.rmtree(path, ignore_errors=True)
      print(f"removed {path}, the unfinished copy of a build that was stopped", file=sys.stderr)
