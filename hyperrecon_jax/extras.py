"""Optional dependencies: imported where they are used, named with their extra when they fail.

The core install (JAX, Flax, optax, orbax) trains and evaluates on arrays; the
datasets need the ``data`` extra, the figures and TensorBoard files the ``viz``
extra (`setup.py`). `require` imports one such module and, when that fails,
says which of two things happened: the module is not installed, or it is
installed but does not import (most often a version that does not fit the
others, e.g. TFDS against a newer protobuf), with the import's own error and
how to find and mend the conflict.
"""

import importlib
import os
import types

from hyperrecon_jax import errors

DISTRIBUTION = "hyperrecon-jax"  # setup.py's name, which pip installs extras of


class MissingDependency(errors.Error, ImportError):
  """An optional dependency that is not installed or does not import (the message says which)."""


def install_hint(extra: str, upgrade: bool = False) -> str:
  """The command that installs (or upgrades) ``extra`` where the package is installed.

  Run from a source checkout (an editable install, the README's), the
  checkout's path: ``pip install -e "/path/to/checkout[data]"`` works from any
  folder, where ``".[data]"`` works only in the checkout. Installed from a
  wheel, there is no checkout to name: pip reads the extra from the installed
  package's metadata, ``pip install "hyperrecon-jax[data]"``.
  """
  flag = " -U" if upgrade else ""
  checkout = _checkout()
  if checkout is not None:
    return f'pip install{flag} -e "{checkout}[{extra}]"'
  return f'pip install{flag} "{DISTRIBUTION}[{extra}]"'


def _checkout() -> str | None:
  """The source checkout the package runs from (it holds setup.py), or None."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return root if os.path.isfile(os.path.join(root, "setup.py")) else None


def require(module_name: str, extra: str, needed_by: str) -> types.ModuleType:
  """Imports an optional dependency.

  Args:
    module_name: the module to import, e.g. ``"h5py"`` or
      ``"matplotlib.figure"``.
    extra: the ``setup.py`` extra that installs it, e.g. ``"data"``.
    needed_by: what needs it, for the message, e.g. ``"hyperrecon_jax.data"``.

  Returns:
    The imported module.

  Raises:
    MissingDependency: (an ``ImportError``) when the module is not installed,
      or when it is installed but importing it fails; the message names the
      module, the extra to install and, in the second case, the import's
      error.
  """
  try:
    return importlib.import_module(module_name)
  except Exception as err:  # noqa: BLE001 (an import can fail with any error)
    top = module_name.split(".")[0]
    if isinstance(err, ModuleNotFoundError) and err.name == top:
      raise MissingDependency(
          f"{needed_by} needs `{top}`, which is not installed. Install the "
          f"{extra} extra: {install_hint(extra)}") from err
    raise MissingDependency(
        f"{needed_by} needs `{module_name}`: `{top}` is installed, but importing "
        f"`{module_name}` fails ({type(err).__name__}: {' '.join(str(err).split())}). Its "
        f"version, or that of a package it imports, does not fit the others: `pip check` "
        f"names the conflict, and upgrading the {extra} extra "
        f"({install_hint(extra, upgrade=True)}) usually mends it") from err
