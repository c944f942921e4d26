"""From a data config to a built dataset and its random-access splits.

The first use of a configuration builds it into
``<data_dir>/<dataset>/<config name>/<version>/`` (TFDS prints a progress bar);
later uses read that folder. The config name is a readable prefix plus a hash
of every setting that changes the data (and, for manual datasets, of the input
files' names and sizes), e.g. ``mni152/s256_axial_1a2b3c4d5e/1.0.0``.
"""

import importlib
import os
from typing import NamedTuple

from hyperrecon_jax.data import common

_BUILDERS = {
    "mni152": ("hyperrecon_jax.data.mni152", "Mni152"),
    "fastmri_knee": ("hyperrecon_jax.data.fastmri", "FastmriKnee"),
    "nifti": ("hyperrecon_jax.data.nifti", "Nifti"),
}


class Volume(NamedTuple):
  """One volume of a split, as stored.

  Attributes:
    id: the `volume` feature.
    name: the volume's name (file path relative to `manual_dir`).
    slices: the `slice` feature of its examples, in stored order.
    indices: positions of its examples in the split's data source.
  """
  id: int
  name: str
  slices: tuple[int, ...]
  indices: range


def with_defaults(data_config):
  """`default_config()` overridden by `data_config` (a ConfigDict or dict).

  Lets callers pass partial configs, e.g. ``{"name": "mni152", "image_size": 64}``.
  """
  from hyperrecon_jax import data  # pylint: disable=g-import-not-at-top
  cfg = data.default_config()
  items = data_config.items() if hasattr(data_config, "items") else dict(data_config).items()
  unknown = sorted(k for k, _ in items if k not in cfg)
  cfg.update({k: v for k, v in items if k not in unknown})
  for key in unknown:  # Fields other modules add; kept, unused here.
    cfg[key] = data_config[key]
  return cfg


def data_dir(data_config) -> str:
  """The configured data_dir, or the default cache when it is empty."""
  return os.path.expanduser(data_config.get("data_dir", "") or common.default_data_dir())


def make_builder(data_config):
  """The TFDS builder of a data config (not necessarily built yet).

  Args:
    data_config: a `hr.data.default_config()`-like ConfigDict.

  Returns:
    A `tfds.core.GeneratorBasedBuilder`.

  Raises:
    ValueError: unknown dataset name or bad settings.
    DataError: missing or empty `manual_dir` for manual datasets.
  """
  data_config = with_defaults(data_config)
  name = common.check_name(data_config.name)
  module_name, class_name = _BUILDERS[name]
  module = importlib.import_module(module_name)
  config = module.builder_config(data_config)
  builder_cls = getattr(module, class_name)
  from hyperrecon_jax.data import builder as builder_lib  # pylint: disable=g-import-not-at-top
  with builder_lib.quiet_tfds():
    return builder_cls(config=config, data_dir=data_dir(data_config),
                       file_format="array_record")


def prepare(data_config):
  """Builds the dataset unless it is already built; returns its builder."""
  from hyperrecon_jax.data import builder as builder_lib  # pylint: disable=g-import-not-at-top
  b = make_builder(data_config)
  with builder_lib.quiet_tfds():
    if not b.is_prepared():
      tfds = builder_lib.tfds
      try:
        b.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            file_format="array_record")
      except OSError:
        # Another process may have finished the same build first (the final
        # rename then fails here); its result is as good as ours.
        b = make_builder(data_config)
        if not b.is_prepared():
          raise
  return b


def load_split(data_config, split: str):
  """The random-access data source of one split, building the dataset if needed.

  Args:
    data_config: the data config.
    split: 'train', 'validation' or 'test'.

  Returns:
    A TFDS `ArrayRecordDataSource`: `len(source)` examples, `source[i]` a dict
    of NumPy values with the features of `hyperrecon_jax.data.builder`.
  """
  common.check_split(split)
  return prepare(data_config).as_data_source(split=split)


def num_examples(data_config, split: str) -> int:
  """Number of slices in a split (builds the dataset if needed)."""
  common.check_split(split)
  return int(prepare(data_config).info.splits[split].num_examples)


def has_labels(data_config) -> bool:
  """Whether the dataset's examples carry a `label`."""
  return "label" in prepare(data_config).info.features


def volumes(data_config, split: str) -> list[Volume]:
  """The volumes of a split, for per-volume evaluation.

  Args:
    data_config: the data config.
    split: 'train', 'validation' or 'test'.

  Returns:
    `Volume` records in stored order (increasing id); a volume's examples are
    contiguous in the split.
  """
  common.check_split(split)
  b = prepare(data_config)
  index = b.info.metadata.get("volumes", {}).get(split)
  if index is None:  # Not recorded: scan the split.
    source = b.as_data_source(split=split)
    index = []
    for i in range(len(source)):
      ex = source[i]
      if not index or index[-1]["id"] != int(ex["volume"]):
        name = ex["name"].decode() if isinstance(ex["name"], bytes) else str(ex["name"])
        index.append({"id": int(ex["volume"]), "name": name, "slices": [], "start": i})
      index[-1]["slices"].append(int(ex["slice"]))
  return [Volume(int(v["id"]), str(v["name"]), tuple(int(k) for k in v["slices"]),
                 range(int(v["start"]), int(v["start"]) + len(v["slices"])))
          for v in index]
