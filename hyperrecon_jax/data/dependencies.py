"""The optional dependencies of the data package, imported on first use.

TensorFlow Datasets, grain, nibabel, nilearn and h5py come with the ``data``
extra; a data function imports the one it needs through `require`, so that
the core install imports none of them.
"""

from hyperrecon_jax import extras


def require(module_name: str):
  """Imports an optional dependency of the data package (`extras.require`).

  Args:
    module_name: the module to import, e.g. ``"h5py"``.

  Returns:
    The imported module.

  Raises:
    extras.MissingDependency: naming the data extra to install when the
      module is missing or does not import.
  """
  return extras.require(module_name, "data", "hyperrecon_jax.data")
