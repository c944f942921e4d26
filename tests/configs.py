"""The experiment configs of ``experiments/configs/``, for the tests.

The library has no default config: tests start from the experiment files, as
``experiments/train.py --config=FILE.py[:arg]`` does, and change what they need.
"""

import functools
import importlib.util
import os

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "experiments", "configs")
NAMES = tuple(sorted(f[:-3] for f in os.listdir(FOLDER) if f.endswith(".py")))


@functools.cache
def module(name: str):
  """The module of ``experiments/configs/<name>.py``, loaded once.

  Once, because each config file puts its folder on sys.path when it runs.
  """
  spec = importlib.util.spec_from_file_location(
      f"config_{name}", os.path.join(FOLDER, f"{name}.py"))
  out = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(out)
  return out


def load(name: str, arg: str | None = None):
  """A new config from ``experiments/configs/<name>.py``'s ``get_config(arg)``."""
  return module(name).get_config(arg)


def default():
  """A new complete default config (``experiments/configs/default.py``)."""
  return load("default")


def folder_data(name: str, manual_dir, data_dir, image_size: int, **overrides):
  """A data config that reads a folder of the user's own files (``data.name=name``).

  Args:
    name: the folder's kind, 'nifti' or 'fastmri_knee'.
    manual_dir: the folder of files.
    data_dir: where the dataset is built.
    image_size: the slices' size.
    **overrides: other fields of the data section.

  Returns:
    The data section, read on the caller's thread (``num_threads=0``).
  """
  cfg = default().data
  cfg.update(name=name, manual_dir=str(manual_dir), data_dir=str(data_dir),
             image_size=image_size, num_threads=0)
  cfg.update(overrides)
  return cfg


def fields_read(settings, data_config) -> list[str]:
  """The fields of ``data_config`` that a dataset's ``settings`` function reads, sorted."""
  read = set()

  class Recording(dict):
    def __getitem__(self, name):
      read.add(name)
      return super().__getitem__(name)

  settings(Recording(data_config.to_dict()))
  return sorted(read)
