"""What a folder dataset's build holds, in words: its volumes and slices per split.

A folder's volumes are split by file, and a volume whose every plane has too
little foreground (`slicing.volume_slices`) keeps no slice: it is in a split
and in the run's `split_record`, yet nothing of it is trained on or scored.
`describe` says so, with the counts a user checks a build against.
"""

from collections.abc import Sequence

from hyperrecon_jax.data import config_fields


def describe(data_config) -> list[str]:
  """Lines for the terminal: each split's volumes and slices, and volumes without a slice.

  Args:
    data_config: the data config of a folder dataset (`nifti`,
      `fastmri_knee`); builds it if needed.

  Returns:
    One line of counts, and a warning line when a volume kept no slice; no
    lines for the embedded mni152, which is one template cut into blocks.
  """
  from hyperrecon_jax.data import sources
  name = config_fields.check_name(config_fields.field(data_config, "name"))
  if name not in ("nifti", "fastmri_knee"):
    return []
  counts, empty = [], []
  for split in config_fields.written_splits(config_fields.field(data_config, "split_fractions")):
    volumes = sources.volumes(data_config, split)
    slices = sum(len(v.slices) for v in volumes)
    counts.append(f"{split} {_count(len(volumes), 'volume')}, {_count(slices, 'slice')}")
    empty += [f"{v.name} ({split})" for v in volumes if not v.slices]
  folder = config_fields.field(data_config, "manual_dir")
  lines = [f"data: {name} {folder}: {'; '.join(counts)}"]
  if empty:
    lines.append(without_slices(empty, config_fields.field(data_config, "min_foreground")))
  return lines


def without_slices(names: Sequence[str], min_foreground: float) -> str:
  """The warning for volumes that kept no slice, naming them.

  Args:
    names: the volumes (their files, with their split where there are several).
    min_foreground: ``data.min_foreground`` of the build.
  """
  shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
  return (f"warning: {_count(len(names), 'volume')} kept no slice and "
          f"{'is' if len(names) == 1 else 'are'} neither trained on nor scored: {shown}. "
          f"Every plane had less foreground than data.min_foreground={min_foreground:g} "
          "(a volume padded far beyond "
          "its head, or a very dark one)")


def _count(n: int, noun: str) -> str:
  return f"{n:,} {noun}{'s' * (n != 1)}"
