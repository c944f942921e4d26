"""The volumes of each split a run trained with, kept in its workdir.

The `nifti` and `fastmri_knee` datasets assign whole volumes to splits with a
seeded permutation of the folder's sorted files (`splits.split_volumes`; a
NIfTI folder's by BIDS subject, `splits.split_subjects`).
Adding, removing or renaming a file rebuilds the dataset and can draw another
assignment, so a volume the run trained on can move into the test split,
where its scores would silently measure training data. A run therefore
records its splits when it starts (``data_splits.json``: each volume's file
name and the SHA-256 of its content). Resuming refuses a changed training or
validation split (a file added, removed, renamed or rewritten), and
evaluating refuses a split that shares a volume, by name or by content, with
the splits the run learned from; a folder other than the one the run read (a
report on another site's volumes) shares a volume by content only. The
`mni152` dataset is one embedded volume cut into fixed slice blocks
(`hyperrecon_jax.data.mni152`), which no file changes, so nothing is
recorded.

A workdir written before this record existed has no ``data_splits.json``. It
is evaluated and resumed unchecked, unless its folder holds a BIDS subject
with several volumes: such a run's splits were made volume by volume, and
today's are not its own (`split_history.unrecorded`), so it is refused.
"""

import functools
import json
import os

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import file_lists
from hyperrecon_jax.data import folders
from hyperrecon_jax.data import near_copies
from hyperrecon_jax.data import split_history

FILE = "data_splits.json"
BY_VOLUME = ("nifti", "fastmri_knee")
# What the run looked at while training, per evaluated split: the training
# split's volumes, and for the test split also the validation volumes that
# chose the gradient scales and were watched during training.
_LEARNED_FROM = {"train": (), "validation": ("train",), "test": ("train", "validation")}
_SHOWN = 3  # volume names quoted in a message


def current(data_config) -> dict | None:
  """The volumes of every split of the dataset as it is built now.

  Args:
    data_config: the data config (builds the dataset if needed; a folder
      scored whole, `config_fields.EVALUATION_ONLY`, is read from its files instead,
      so that a folder that cannot be scored is refused before its build).

  Returns:
    ``{'dataset', 'manual_dir', 'splits': {split: [names]}, 'sha256':
    {split: [digests]}}`` (the digests of the volumes' files, in the same
    order; no ``sha256`` for a dataset built before they were recorded), or
    None for a dataset that is not split by volume.
  """
  name = config_fields.check_name(config_fields.field(data_config, "name"))
  if name not in BY_VOLUME:
    return None
  from hyperrecon_jax.data import sources
  folder = os.path.abspath(os.path.expanduser(str(config_fields.field(data_config, "manual_dir"))))
  record = {"dataset": name, "manual_dir": folder}
  if config_fields.written_splits(config_fields.field(data_config, "split_fractions")) == ("test",):
    names = tuple(folders.volume_files(data_config))
    digests = _folder_digests(name, folder, float(config_fields.field(data_config, "percentile")),
                              names, file_lists.fingerprint(folder, names))
    record["splits"] = {"train": [], "validation": [], "test": list(names)}
    for key, values in zip(("sha256", "content_sha256"), digests):
      record[key] = {"train": [], "validation": [], "test": list(values)}
    return record
  volumes = {split: sources.volumes(data_config, split) for split in config_fields.SPLITS}
  record["splits"] = {split: [v.name for v in vs] for split, vs in volumes.items()}
  for key in ("sha256", "content_sha256"):
    if all(getattr(v, key) for vs in volumes.values() for v in vs):
      record[key] = {split: [getattr(v, key) for v in vs] for split, vs in volumes.items()}
  return record


@functools.lru_cache(maxsize=4)
def _folder_digests(name, folder, percentile, names, fingerprint):
  """The file and voxel digests of a folder's volumes, once per state of its files.

  A report or the explorer checks a folder against several records (the
  run's, a stack's) and the template; each decodes every volume, so the
  digests are kept while ``fingerprint`` (the files' names, sizes and
  modification times) is unchanged.
  """
  del fingerprint  # Part of the cache key only.
  from hyperrecon_jax import checksums
  config = {"name": name, "manual_dir": folder, "percentile": percentile}
  return (tuple(checksums.file_digest(os.path.join(folder, n)) for n in names),
          tuple(folders.content_digest(config, n) for n in names))


def read(workdir: str) -> dict | None:
  """A workdir's record, or None when it has none.

  Raises:
    DataError: the file exists but is not a record (names it).
  """
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise _unreadable(path, e) from None
  return _checked(record, path)


def _checked(record, where: str) -> dict:
  """``record`` if it maps every split to names (and digests, if any), else DataError."""
  def lists_of_text(value, like=None):
    return isinstance(value, dict) and all(
        isinstance(value.get(s), list) and all(isinstance(n, str) for n in value[s])
        and (like is None or len(value[s]) == len(like[s])) for s in config_fields.SPLITS)

  names = record.get("splits") if isinstance(record, dict) else None
  if not lists_of_text(names):
    raise _unreadable(where, "its 'splits' must map train, validation and test to lists "
                      "of volume names")
  for key in ("sha256", "content_sha256"):
    if key in record and not lists_of_text(record[key], names):
      raise _unreadable(where, f"its {key!r} must hold one digest per volume of 'splits'")
  return record


def _volumes(record: dict, split: str, key: str = "sha256") -> list[tuple[str, str]]:
  """(name, digest) of every volume of a split; the digest '' where none is recorded.

  ``key`` is 'sha256' (the file's bytes) or 'content_sha256' (its voxels).
  """
  digests = record.get(key, {}).get(split) or [""] * len(record["splits"][split])
  return list(zip(record["splits"][split], digests))


def _unreadable(where: str, problem) -> data_errors.DataError:
  return data_errors.DataError(f"{where} cannot be read as the record of a run's data splits "
                               f"({problem}); restore it from a backup or move it away, which "
                               "turns the check of evaluated splits off")


def to_json(record: dict) -> str:
  return json.dumps(record, indent=2) + "\n"


def check_resume(workdir: str, record: dict | None) -> None:
  """Refuses to resume a run whose training or validation split has changed.

  Args:
    workdir: the run's folder.
    record: `current` of the run's data config.

  Raises:
    DataError: the volumes of a split the run learns from differ from the
      workdir's record (naming some that left and joined it).
  """
  stored = read(workdir)
  if record is None:
    return
  if stored is None:
    why = split_history.unrecorded(record)
    if why:
      raise data_errors.DataError(
          f"the run in {workdir} recorded no splits (no {FILE}): {why}, so it would go on "
          "with other training volumes: train in a new --workdir")
    return
  for split in ("train", "validation"):
    changed = changes(stored, record, split)
    if changed:
      why = split_history.by_subject_since(stored, record)
      if why:
        raise data_errors.DataError(
            f"the {split} split of {record['manual_dir']} is not the one the run in "
            f"{workdir} began with ({changed}): {why}, so the run cannot go on with its "
            "data: train in a new --workdir")
      raise data_errors.DataError(
          f"the {split} split of {record['manual_dir']} is not the one the run in "
          f"{workdir} began with ({changed}): files were added to, removed from, renamed "
          "in or rewritten in the folder, and the run would go on with other data. "
          f"Restore the folder as it was ({os.path.join(workdir, FILE)} lists every "
          "split's volumes) or train in a new --workdir")


def changes(before: dict, now: dict, split: str) -> str:
  """How a split of record ``now`` differs from that of ``before``; ``""`` when it does not.

  Names some volumes that left and joined the split, or, when its volumes are
  the same, those whose files' digests differ.
  """
  names_before, names_now = set(before["splits"][split]), set(now["splits"][split])
  if names_before != names_now:
    return _difference(names_before, names_now)
  if "sha256" in before and "sha256" in now:
    edited = sorted(n for (n, a), (_, b) in zip(sorted(_volumes(before, split)),
                                                sorted(_volumes(now, split))) if a != b)
    if edited:
      return f"{len(edited)} of its files changed content: {_quote(edited)}"
  return ""


def check_same_data(learned: dict | None, theirs: dict | None, what: str) -> None:
  """Refuses a run that learned from other volumes than the model did.

  Runs record the data folder by its absolute path only for messages (a
  folder may move, or sit elsewhere on another machine), so two runs'
  training and validation volumes are compared by their records: by the
  voxels' digests where both have them (a volume compressed again is the
  same volume), else by the files', else by name.

  Args:
    learned: the record of the model's run, or None (nothing to compare).
    theirs: the record of the other run, or None.
    what: the other run, for the message (e.g. "the baselines in DIR").

  Raises:
    DataError: naming the split and some of the volumes that differ.
  """
  if learned is None or theirs is None:
    return
  key = next((k for k in ("content_sha256", "sha256") if k in learned and k in theirs), None)
  for split in ("train", "validation"):
    mine = set(_volumes(learned, split, key)) if key else set(learned["splits"][split])
    other = set(_volumes(theirs, split, key)) if key else set(theirs["splits"][split])
    if mine != other:
      names = sorted(v[0] if key else v for v in other - mine)
      differ = (f"{len(names)} of its {len(other)} volumes are not the model's: "
                f"{_quote(names)}" if names else
                f"it lacks {len(mine - other)} of the model's {len(mine)} volumes")
      raise data_errors.DataError(
          f"{what} learned from other data than the model: in the {split} split, {differ} "
          f"(the model's folder: {learned.get('manual_dir')}; theirs: "
          f"{theirs.get('manual_dir')}). Train them on the model's data folder")


def check_unseen(workdir: str, data_config, split: str) -> None:
  """Refuses to score a split that holds volumes the workdir's run learned from.

  The test split must share no volume with the recorded training and
  validation splits, the validation split none with the training split.

  Args:
    workdir: the run's folder.
    data_config: the data config of the evaluation.
    split: the split to be scored.

  Raises:
    DataError: naming the split, how many of its volumes the run learned
      from, a few of them, and what to do.
  """
  # An unknown split name is the caller's to refuse, with its own setting's name.
  if _LEARNED_FROM.get(split):
    check_record(read(workdir), data_config, split, learner=f"the run in {workdir}",
                 listed_in=os.path.join(workdir, FILE))


def check_record(stored: dict | None, data_config, split: str, *, learner: str,
                 listed_in: str) -> None:
  """`check_unseen` for a record kept elsewhere (a segmenter's ``segmenter.json``).

  Args:
    stored: the record (`current` when the learner trained), or None.
    data_config: the data config of the evaluation.
    split: the split to be scored.
    learner: what learned from the recorded splits, for the message.
    listed_in: the file that holds the record, for the message.
  """
  if not _LEARNED_FROM.get(split):
    return
  if stored is None:
    _check_unrecorded(data_config, split, learner, listed_in)
    return
  stored = _checked(stored, listed_in)
  record = current(data_config)
  if record is None:
    return
  learned = [v for s in _LEARNED_FROM[split] for v in _volumes(stored, s)]
  # In the folder the learner read, a volume is the same by name, or by
  # content under another name; in another folder (another site's sub-01 is
  # another subject) by content only, where the record has contents.
  same_folder = (os.path.realpath(str(stored.get("manual_dir"))), stored.get("dataset")) == (
      os.path.realpath(record["manual_dir"]), record["dataset"])
  names = {n for n, _ in learned} if same_folder or "sha256" not in stored else set()
  # The same file's bytes, or the same voxels stored otherwise.
  learned_as = {d: n for key in ("sha256", "content_sha256")
                for s in _LEARNED_FROM[split] for n, d in _volumes(stored, s, key) if d}
  seen = []
  for (n, d), (_, c) in zip(_volumes(record, split),
                            _volumes(record, split, "content_sha256")):
    copied = learned_as.get(d) or learned_as.get(c)
    if n in names or copied:
      seen.append(n if n in names or copied == n else f"{n}, a copy of {copied}")
  if not seen:
    return
  folder = record["manual_dir"]
  listed = f"{listed_in} lists every split's volumes"
  if config_fields.written_splits(config_fields.field(data_config, "split_fractions")) == ("test",):
    if same_folder:
      raise data_errors.DataError(
          f"{folder} is the folder {learner} learned from, and {len(seen)} of its volumes "
          f"were trained or validated on ({_quote(seen)}): its unseen volumes are its test "
          f"split, scored without --data ({listed})")
    raise data_errors.DataError(
        f"{folder} holds {len(seen)} of the volumes {learner} learned from "
        f"({_quote(seen)}), so its scores would measure training data: leave them out of "
        f"the folder ({listed})")
  split_rule = split_history.by_subject_since(stored, record) if same_folder else ""
  if split_rule:
    why = f"{split_rule}: train again"
  elif same_folder:
    why = ("files were added to, removed from or renamed in the folder since training, "
           "which assigns volumes to splits again. Evaluate on the folder as it was")
  else:
    why = "leave them out of the folder"
  raise data_errors.DataError(
      f"the {split} split of {folder} holds {len(seen)} of the volumes {learner} learned "
      f"from ({_quote(seen)}), so its scores would measure training data: {why} ({listed})")


def _check_unrecorded(data_config, split: str, learner: str, listed_in: str) -> None:
  """`check_record` of a learner that recorded no splits: `split_history.unrecorded`."""
  if config_fields.written_splits(config_fields.field(data_config, "split_fractions")) == ("test",):
    return  # a folder scored whole: not the folder split when the learner trained
  record = current(data_config)
  why = split_history.unrecorded(record) if record is not None else ""
  if why:
    raise data_errors.DataError(
        f"{learner} recorded no splits (no {listed_in}): {why}, so the {split} split can hold "
        "volumes it learned from: train again, or score volumes of other subjects "
        "(evaluate.py --data=FOLDER)")


def check_template(trained_on, data_config) -> None:
  """Refuses a folder that holds the embedded MNI152 template a model learned from.

  The `mni152` dataset cuts its splits from one volume, the T1 file inside
  nilearn, so no record is kept; a folder scored whole holding that file
  would score the model's training slices.

  Args:
    trained_on: the data config the model learned from.
    data_config: the data config of the folder to score.

  Raises:
    DataError: naming the folder's file(s) with the template's content.
  """
  if config_fields.field(trained_on, "name") != "mni152":
    return
  record = current(data_config)
  if record is None or "sha256" not in record:
    return
  from hyperrecon_jax import checksums
  from hyperrecon_jax.data import mni152
  from hyperrecon_jax.data import nifti
  path = mni152.template_paths()["t1"]
  template = {checksums.file_digest(path), nifti.content_digest(
      os.path.dirname(path), os.path.basename(path),
      float(config_fields.field(trained_on, "percentile")))}
  seen = {n for s in config_fields.SPLITS for key in ("sha256", "content_sha256")
          for n, d in _volumes(record, s, key) if d in template}
  if seen:
    raise data_errors.DataError(
        f"{record['manual_dir']} holds the MNI152 template that the model learned from "
        f"({_quote(seen)}), so its scores would measure training data: leave it out of "
        "the folder (the model's own test slices are scored without --data)")


def check_slices(trained_on, data_config, learner: str) -> None:
  """Refuses a folder scored whole whose slices are ones a model trained or validated on.

  The volume checks compare files and whole volumes. A volume padded,
  cropped or shifted by whole voxels is another file with other voxels, yet
  the build crops every slice to the volume's foreground box (over its kept
  slices, with a margin of `slicing.CROP_MARGIN` voxels where the volume has
  them), so its slices come out bit for bit those of the original; a copy saved with another
  ``scl_slope`` gives them to float32 rounding (`near_copies`). Where the
  training folder's labels reach beyond its images' foreground, they widened
  its crop boxes, and the folder, cut without labels, has other slices: no
  copy is found there (docs/data.md lists what is not caught). Reads both
  datasets' slices once.

  Args:
    trained_on: the data config the model learned from.
    data_config: the evaluation-only config of the folder (built).
    learner: what learned from ``trained_on``, for the message.

  Raises:
    DataError: naming the folder's volumes that hold such slices, and how
      many; nothing when ``trained_on``'s data cannot be read (a note says so).
  """
  import hashlib
  import sys

  import numpy as np

  from hyperrecon_jax.data import sources

  def digest(image):
    return hashlib.sha256(np.ascontiguousarray(image, np.float32).tobytes()).digest()

  if isinstance(trained_on, dict):  # as a report's context keeps it (JSON)
    import ml_collections
    trained_on = ml_collections.ConfigDict(trained_on)
  learned, near = set(), near_copies.Index()
  try:
    for split in _LEARNED_FROM["test"]:
      for ex in sources.load_split(trained_on, split):
        if np.any(ex["image"]):
          learned.add(digest(ex["image"]))
          near.add(ex["image"], True)
  except (data_errors.DataError, OSError) as e:
    print(f"note: the slices of {config_fields.field(data_config, 'manual_dir')} were not compared "
          f"with those {learner} learned from, which cannot be read ({e})", file=sys.stderr)
    return
  names = {v.id: v.name for v in sources.volumes(data_config, "test")}
  seen: dict[str, int] = {}
  total = 0
  for ex in sources.load_split(data_config, "test"):
    total += 1
    if digest(ex["image"]) in learned or (np.any(ex["image"]) and near.find(ex["image"])):
      name = names[int(ex["volume"])]
      seen[name] = seen.get(name, 0) + 1
  if seen:
    shown = _quote(f"{n} ({k} slice{'s' * (k != 1)})" for n, k in seen.items())
    raise data_errors.DataError(
        f"{sum(seen.values())} of the {total} slices of "
        f"{config_fields.field(data_config, 'manual_dir')}"
        f" are, bit for bit or to float32 rounding, slices {learner} trained or validated on: "
        f"{shown}. A copy of a "
        "training volume padded, cropped or shifted by whole voxels gives the same slices, so "
        "its scores would measure training data: leave those volumes out of the folder")


def _quote(names) -> str:
  names = sorted(names)
  shown = ", ".join(names[:_SHOWN])
  return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _difference(before: set, now: set) -> str:
  parts = []
  if before - now:
    parts.append(f"{len(before - now)} left it: {_quote(before - now)}")
  if now - before:
    parts.append(f"{len(now - before)} joined it: {_quote(now - before)}")
  return "; ".join(parts)
