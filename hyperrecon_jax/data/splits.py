"""Which split each volume goes to: a seeded permutation of volumes or of subjects.

A folder's volumes are assigned to the train, validation and test splits by a
permutation seeded by ``split_seed`` (`split_volumes`), so that no volume is in
two splits and the same folder always splits the same way. Where the files
name their subjects, BIDS ``sub-<label>`` as a folder or at the start of a
file name (`subject`), the subjects are permuted instead (`split_subjects`),
so that two sessions of one subject are never in two splits; a folder of one
volume per subject splits exactly as `split_volumes` splits it.
"""

from collections.abc import Sequence
import os
import re

import numpy as np

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors

# A BIDS subject entity: `sub-<label>`, the label letters and digits, ending a
# folder's name, or followed by the next entity's `_` or the suffix's `.` in a
# file's.
SUBJECT = re.compile(r"sub-([A-Za-z0-9]+)(?:[_.]|$)")


def split_volumes(num: int, fractions: Sequence[float], seed: int, *,
                  where: str = "the dataset", unit: str = "volume") -> dict[str, list[int]]:
  """Assigns volume indices 0..num-1 to splits with a seeded permutation.

  Validation and test get ``round(num * fraction)`` volumes each, at least
  one; the training split gets the rest, which must be one or more. With
  `config_fields.EVALUATION_ONLY` fractions every volume is in test and the other two are
  empty.

  Args:
    num: number of volumes.
    fractions: (train, validation, test) fractions (`check_fractions`, with
      ``evaluation_only``).
    seed: seed of the permutation, so the split is reproducible.
    where: the volumes' folder, for the error message.
    unit: what is assigned, for the error message (`split_subjects` assigns
      subjects).

  Returns:
    Sorted volume indices per split name.

  Raises:
    DataError: the volumes cannot give every split one (fewer than three, or
      fractions that leave none for training).
  """
  _, f_val, f_test = config_fields.check_fractions(fractions, evaluation_only=True)
  if (f_val, f_test) == config_fields.EVALUATION_ONLY[1:]:
    if num < 1:
      raise data_errors.DataError(f"{where} holds no volume to evaluate")
    return {"validation": [], "test": list(range(num)), "train": []}
  if num < 3:
    raise data_errors.DataError(
        f"{where} holds {num} {unit}{'s' * (num != 1)}; training needs at least 3, one "
        f"for each of the train, validation and test splits (a {unit} is never split "
        f"between them). Add {unit}s")
  order = np.random.default_rng(seed).permutation(num)
  n_val = max(int(round(num * f_val)), 1)
  n_test = max(int(round(num * f_test)), 1)
  if num - n_val - n_test < 1:
    raise data_errors.DataError(
        f"{where} holds {num} {unit}{'s' * (num != 1)}, too few for split_fractions "
        f"{tuple(float(f) for f in fractions)}: they give {n_val} to validation and "
        f"{n_test} to test and leave {max(num - n_val - n_test, 0)} for training, and "
        f"every split needs one. Add {unit}s or change --config.data.split_fractions")
  return {
      "validation": sorted(int(i) for i in order[:n_val]),
      "test": sorted(int(i) for i in order[n_val:n_val + n_test]),
      "train": sorted(int(i) for i in order[n_val + n_test:]),
  }


def subject_groups(subjects: Sequence[str | None]) -> list[list[int]]:
  """The volumes of each subject, subjects in the order of their first volume.

  Args:
    subjects: each volume's subject, or None where it is not known (such a
      volume is a subject of its own).

  Returns:
    Lists of volume indices, ascending; one per subject.
  """
  groups, of = [], {}
  for i, subject in enumerate(subjects):
    if subject is None or subject not in of:
      groups.append([i])
      if subject is not None:
        of[subject] = groups[-1]
    else:
      of[subject].append(i)
  return groups


def split_subjects(subjects: Sequence[str | None], fractions: Sequence[float], seed: int, *,
                   where: str = "the dataset") -> dict[str, list[int]]:
  """`split_volumes` by subject: the volumes of one subject go to one split.

  The subjects are permuted as `split_volumes` permutes volumes, and the
  fractions count subjects. When every volume is a subject of its own, the
  assignment is ``split_volumes(len(subjects), fractions, seed)``.

  Args:
    subjects: each volume's subject, or None where it is not known.
    fractions: (train, validation, test) fractions.
    seed: seed of the permutation.
    where: the volumes' folder, for the error message.

  Returns:
    Sorted volume indices per split name.
  """
  groups = subject_groups(subjects)
  if len(groups) == len(subjects):
    return split_volumes(len(subjects), fractions, seed, where=where)
  by_group = split_volumes(len(groups), fractions, seed, where=where, unit="subject")
  return {split: sorted(i for g in ids for i in groups[g]) for split, ids in by_group.items()}


def subject(path: str) -> str | None:
  """The BIDS subject label a volume's path names (``'01'`` for ``sub-01``), or None.

  Args:
    path: the volume's path relative to its folder.

  Raises:
    DataError: the path names two subjects (a folder ``sub-01`` holding a
      file ``sub-02_T1w.nii``), so the volume's subject is not known.
  """
  labels = {m.group(1) for m in map(SUBJECT.match, path.split(os.sep)) if m}
  if len(labels) > 1:
    raise data_errors.DataError(
        f"{path}: its path names {len(labels)} BIDS subjects "
        f"({', '.join('sub-' + x for x in sorted(labels))}); volumes are split by subject, so "
        "a volume's path must name one: rename the folder or the file")
  return labels.pop() if labels else None


def subjects(paths: Sequence[str]) -> list[str | None]:
  """`subject` of each path."""
  return [subject(p) for p in paths]


def subject_in_two_splits(splits: dict) -> str:
  """A BIDS subject whose volumes a split record puts in two splits.

  Args:
    splits: ``{split: [volume path, ...]}`` (a `split_record` record's
      ``splits``).

  Returns:
    The subject and its splits (``"sub-02 in validation and test"``), for a
    message; ``""`` when there is none.
  """
  seen: dict[str, set[str]] = {}
  for split in config_fields.SPLITS:
    for name in splits[split]:
      try:
        label = subject(name)
      except data_errors.DataError:  # a path naming two subjects is the build's to refuse
        continue
      if label is not None:
        seen.setdefault(label, set()).add(split)
  for label, where in sorted(seen.items()):
    if len(where) > 1:
      return f"sub-{label} in {' and '.join(s for s in config_fields.SPLITS if s in where)}"
  return ""
