"""The error of the data package: input data that is missing, unreadable or malformed.

Every data function raises `DataError` naming the file or setting at fault;
it is an `errors.InputError`, so the scripts print it as one ``error:`` line.
"""

from hyperrecon_jax import errors


class DataError(errors.InputError):
  """Missing, unreadable or malformed input data (the message says which)."""
