"""The project's error types: problems of the user's making, explained in words.

Everything here names what is wrong (a file, a shape, a value) and how to fix
it. The command-line scripts print these as one ``error:`` line
(`experiments/cli.py`); any other exception is a bug and keeps its traceback.
`InputError` is also a ``ValueError`` so that library callers can catch the
usual type.
"""


class Error(Exception):
  """Base of the project's errors about inputs, data, files and runs."""


class InputError(Error, ValueError):
  """A bad argument: a shape, a range, a name or a combination that cannot work."""
