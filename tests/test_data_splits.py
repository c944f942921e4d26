"""Which split each volume goes to: volumes or BIDS subjects, by a seeded permutation.

Expected splits are computed here from the definition (validation, test, then
train take the permutation's first round(n·f), at least one, the next
round(n·f), and the rest); a folder's build by subject is tested in
test_data_nifti.py.
"""

import os

import numpy as np
import pytest

from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import splits

FRACTIONS = (0.7, 0.1, 0.2)


def _by_definition(n, fractions=FRACTIONS, seed=0):
  order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
  n_val, n_test = max(round(n * fractions[1]), 1), max(round(n * fractions[2]), 1)
  return {"validation": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test]),
          "train": sorted(order[n_val + n_test:])}


@pytest.mark.parametrize("path, subject", [
    ("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "01"),
    ("sub-01_ses-2_T1w.nii.gz", "01"),
    (os.path.join("site_b", "sub-04.nii"), "04"),
    ("sub-ABC7/anat/T1w.nii", "ABC7"),
    ("subject-01_T1w.nii.gz", None),
    ("sub-01-a.nii.gz", None),  # not a BIDS label: letters and digits only
    ("T1w_sub-02.nii.gz", None),  # a subject entity starts the file's name
    ("s0.nii.gz", None),
])
def test_a_volume_s_subject_is_the_bids_label_its_path_names(path, subject):
  assert splits.subject(path) == subject


def test_a_path_naming_two_subjects_is_refused():
  with pytest.raises(data_errors.DataError, match=r"sub-01/sub-05_T1w\.nii: its path names 2 BIDS "
                                             r"subjects \(sub-01, sub-05\)"):
    splits.subject(os.path.join("sub-01", "sub-05_T1w.nii"))


@pytest.mark.parametrize("n, seed", [(3, 0), (7, 0), (10, 3), (25, 11)])
def test_volumes_split_by_the_seeded_permutation(n, seed):
  assert splits.split_volumes(n, FRACTIONS, seed) == _by_definition(n, seed=seed)


@pytest.mark.parametrize("n, fractions, sizes", [
    (8, (0.6, 0.2, 0.2), (4, 2, 2)),     # 8 · 0.2 = 1.6: 2 each, not 1
    (15, (0.7, 0.1, 0.2), (10, 2, 3)),   # 15 · 0.1 = 1.5: 2, not 1
])
def test_each_split_gets_its_fraction_rounded_to_the_nearest(n, fractions, sizes):
  split = splits.split_volumes(n, fractions, 0)
  assert tuple(len(split[s]) for s in ("train", "validation", "test")) == sizes
  assert split == _by_definition(n, fractions)


@pytest.mark.parametrize("n, seed", [(3, 0), (7, 0), (25, 11)])
def test_a_folder_of_one_volume_per_subject_splits_volume_by_volume(n, seed):
  # Subjects unknown (None) or all different: the split of the volumes.
  assert splits.split_subjects([None] * n, FRACTIONS, seed) == _by_definition(n, seed=seed)
  named = [f"{i:02d}" for i in range(n)]
  assert splits.split_subjects(named, FRACTIONS, seed) == _by_definition(n, seed=seed)


def test_the_volumes_of_a_subject_go_to_its_split():
  # 8 volumes of 5 subjects: a, b twice, None (its own), c three times, d.
  names = ["a", "b", None, "b", "c", "c", "d", "c"]
  groups = [[0], [1, 3], [2], [4, 5, 7], [6]]  # by first volume
  assert splits.subject_groups(names) == groups
  for seed in range(6):
    by_subject = _by_definition(len(groups), seed=seed)
    expected = {s: sorted(v for g in ids for v in groups[g]) for s, ids in by_subject.items()}
    assert splits.split_subjects(names, FRACTIONS, seed) == expected


def test_too_few_subjects_are_named_as_subjects():
  with pytest.raises(data_errors.DataError, match=r"F holds 2 subjects; training needs at least 3.*"
                                             r"a subject is never split"):
    splits.split_subjects(["a", "a", "b"], FRACTIONS, 0, where="F")


def test_a_subject_in_two_splits_of_a_record_is_named():
  record = {"train": ["sub-01_ses-1.nii", "x.nii"], "validation": ["sub-02.nii"],
            "test": ["sub-01/ses-2/sub-01_ses-2.nii", "y.nii"]}
  assert splits.subject_in_two_splits(record) == "sub-01 in train and test"
  record["test"] = ["sub-03.nii"]
  assert splits.subject_in_two_splits(record) == ""


def test_a_record_path_naming_two_subjects_is_left_to_the_build():
  # Such a path has no one subject (`subject` refuses it, and so does a
  # build); the record's other subjects are still checked.
  record = {"train": [os.path.join("sub-01", "sub-05_T1w.nii"), "sub-02_ses-1.nii"],
            "validation": ["sub-03.nii"], "test": ["sub-02_ses-2.nii"]}
  assert splits.subject_in_two_splits(record) == "sub-02 in train and test"
  record["test"] = ["sub-04.nii"]
  assert splits.subject_in_two_splits(record) == ""
