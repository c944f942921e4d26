"""Where the data is: the folder of built datasets, and folders as absolute paths.

Built datasets live in ``config.data.data_dir``, or when it is '' in
$HYPERRECON_DATA_DIR or a per-user cache (`data_dir`, `default_data_dir`).
A run records the folders it reads in its config, as absolute paths
(`absolute_folder`).
"""

import os

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors

DATA_DIR_ENV = "HYPERRECON_DATA_DIR"


def default_data_dir() -> str:
  """Where built datasets live: $HYPERRECON_DATA_DIR or a per-user cache.

  As an absolute path (`absolute_folder`): a run records it in its config,
  and a relative one would build the datasets again in the folder of each
  command started elsewhere.
  """
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    return absolute_folder(env)
  return os.path.join(
      os.path.expanduser("~"), ".cache", "hyperrecon_jax", "tensorflow_datasets")


def data_dir(data_config) -> str:
  """The configured data_dir, or the default cache when it is ''.

  Raises:
    DataError: the folder, or a folder above it, is a file (the build failed
      on its first folder with an errno line naming neither setting).
  """
  configured = config_fields.field(data_config, "data_dir")
  root = os.path.expanduser(configured or default_data_dir())
  existing = os.path.abspath(root)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise data_errors.DataError(
        f"{data_dir_setting(data_config)}: {existing} is a file, not a folder")
  return root


def data_dir_setting(data_config) -> str:
  """The setting that gave the data folder, for a message.

  The scripts fill ``config.data.data_dir`` from $HYPERRECON_DATA_DIR (the
  config's default): that value is named as the variable's, which the user set.
  """
  configured = config_fields.field(data_config, "data_dir")
  if configured and configured != default_data_dir():
    return f"config.data.data_dir={configured}"
  root = os.path.expanduser(configured or default_data_dir())
  return f"the data folder {root} ({DATA_DIR_ENV} or the default cache)"


def absolute_folder(folder):
  """A data folder (``data.manual_dir``, ``data.data_dir``) as an absolute path.

  ``~`` is expanded; '' and None are returned as they are.

  A run records its config; a relative folder in it would name another
  folder for a command started elsewhere (``evaluate.py`` from another
  directory scored that folder's volumes as the run's test split).
  """
  if not folder:
    return folder
  return os.path.abspath(os.path.expanduser(str(folder)))
