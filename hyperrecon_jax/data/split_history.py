"""Why a run's splits are not the ones its folder is given today, when its files are not to blame.

A `nifti` folder's volumes were once assigned to splits one by one
(`splits.split_volumes`); the build now permutes BIDS subjects and keeps each
subject's volumes in one split (`splits.split_subjects`). On the same files
the two rules give other splits wherever a subject has several volumes, so a
run that began under the first cannot be resumed or scored on today's
splits, and restoring its folder would not help. `hyperrecon_jax.data.split_record`
says so in its refusals.
"""

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import splits


def by_subject_since(stored: dict, record: dict) -> str:
  """Why a `nifti` run's recorded splits are not the folder's, when its files are not to blame.

  A run that began before volumes were split by BIDS subject may have put a
  subject's volumes into two splits; and where it did not, the same files
  still go to other splits now that the subjects are permuted instead of the
  volumes. Either way the folder is as it was, and restoring it cannot help.

  Args:
    stored: the run's record.
    record: `current` of the folder.

  Returns:
    The reason, for a message; ``""`` for another dataset, or when the files
    changed and no subject is in two recorded splits.
  """
  if stored.get("dataset") != "nifti":
    return ""
  subject = splits.subject_in_two_splits(stored["splits"])
  if subject:
    return (f"the run began with splits that put volumes of one subject into two ({subject}), "
            "and the build keeps each BIDS subject's volumes in one split")
  names = _names(stored)
  if names != _names(record):
    return ""
  several = _subject_with_several_volumes(names)
  if not several:
    return ""
  return (f"the folder's files are those the run began with, but its splits were made "
          f"volume by volume, and the build now permutes BIDS subjects, keeping each "
          f"subject's volumes in one split ({several})")


def unrecorded(record: dict) -> str:
  """Why a run that recorded no splits cannot be held to the folder's splits of today.

  Runs recorded their splits (``data_splits.json``) from before the build
  kept BIDS subjects whole, so a run without a record began when a `nifti`
  folder was split volume by volume (or its record was deleted). Where the
  folder holds a subject with several volumes, those splits are not today's.

  Args:
    record: `split_record.current` of the folder.

  Returns:
    The reason, for a message; ``""`` for another dataset, or a folder whose
    subjects have one volume each (both rules give the same splits).
  """
  if record.get("dataset") != "nifti":
    return ""
  several = _subject_with_several_volumes(_names(record))
  if not several:
    return ""
  return (f"it began before runs recorded their splits (or the record was deleted), when a "
          f"NIfTI folder was split volume by volume, and the build now keeps each BIDS "
          f"subject's volumes in one split ({several} in {record['manual_dir']})")


def _names(record: dict) -> list[str]:
  """The file names of every split of a record, sorted."""
  return sorted(n for s in config_fields.SPLITS for n in record["splits"].get(s, ()))


def _subject_with_several_volumes(names) -> str:
  """``'sub-XX has N volumes'`` for the first BIDS subject of ``names`` with several; ``""``."""
  groups = [g for g in splits.subject_groups(splits.subjects(names)) if len(g) > 1]
  if not groups:
    return ""
  return f"sub-{splits.subject(names[groups[0][0]])} has {len(groups[0])} volumes"
