"""docs/library.md against the package: every module has a row, every name a row lists exists.

The module tables of library.md are the map a user reads before the code: a
module split, renamed or added without its row, or a row naming a function
that moved, is caught here. A row's last cell lists public names in
backticks; names inside parentheses are arguments, attributes or examples
(`Scan` (`notes`, …), `read_input(path, config, *, axis=None)`) and are not
looked up; a dotted name (`validation.metrics`) is looked up in the row's
submodule.
"""

import importlib
import inspect
import os
import pkgutil
import re

import pytest

import hyperrecon_jax as hr

LIBRARY_MD = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "library.md")
# Modules with nothing for a user to call, so no row and no `hr.<name>` access.
INTERNAL = {"orbax_noise": "keeps orbax's messages that say nothing to a user off stderr"}


def _rows() -> dict[str, str]:
  """{module path: the row's last cell} of every module row of library.md."""
  rows = {}
  with open(LIBRARY_MD, encoding="utf-8") as f:
    for line in f:
      m = re.match(r"\| `(hr|hyperrecon_jax)\.([\w.]+)` \|", line)
      if m:
        cells = line.replace("\\|", "¦").strip().strip("|").split(" | ")
        rows[f"hyperrecon_jax.{m.group(2)}"] = cells[-1]
  return rows


def _listed_names(cell: str) -> list[str]:
  """The backticked names of a cell outside parentheses, dotted ones included."""
  outside, depth = [], 0
  for ch in cell:
    if ch == "(":
      depth += 1
    elif ch == ")":
      depth = max(0, depth - 1)
    elif depth == 0:
      outside.append(ch)
  return re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`", "".join(outside))


def test_every_module_is_reachable_from_hr_and_has_a_row():
  modules = {m.name for m in pkgutil.iter_modules(hr.__path__)} - set(INTERNAL)
  assert modules == set(hr._SUBMODULES)
  assert modules <= {path.split(".")[1] for path in _rows()}
  for name in modules:
    assert getattr(hr, name) is importlib.import_module(f"hyperrecon_jax.{name}")


@pytest.mark.parametrize("path", sorted(_rows()))
def test_every_name_a_row_lists_exists(path):
  module = importlib.import_module(path)
  names = _listed_names(_rows()[path])
  assert names, f"{path}: its row lists no name"
  missing = []
  for name in names:
    *sub, attr = name.split(".")
    owner = importlib.import_module(".".join([path, *sub])) if sub else module
    if not hasattr(owner, attr):
      missing.append(name)
  assert not missing, f"library.md's row of {path} lists names it does not have: {missing}"


@pytest.mark.parametrize("path", sorted(_rows()))
def test_every_function_and_class_a_row_lists_has_a_docstring(path):
  # checkpoints.checkpoint_dir, grid.check_chunk and the evaluators' check and
  # prepare were listed with no docstring: help() said nothing of them.
  module = importlib.import_module(path)
  undocumented = []
  for name in _listed_names(_rows()[path]):
    *sub, attr = name.split(".")
    owner = importlib.import_module(".".join([path, *sub])) if sub else module
    obj = getattr(owner, attr, None)
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
      undocumented.append(name)
  assert not undocumented, f"{path}: listed in library.md without a docstring: {undocumented}"
