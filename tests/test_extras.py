"""hyperrecon_jax/extras.py: an optional dependency that is missing or does not import."""

import os
import re
import sys

from absl import logging
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import extras
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.train import writer

# The tests run from the checkout (the README's editable install).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def packages(tmp_path, monkeypatch):
  """A folder on sys.path for packages written by a test, forgotten after it."""
  monkeypatch.syspath_prepend(str(tmp_path))
  yield tmp_path
  written = {p.name for p in tmp_path.iterdir()}
  for name in [n for n in sys.modules if n.split(".")[0] in written]:
    del sys.modules[name]


def _package(folder, name, text):
  (folder / name).mkdir()
  (folder / name / "__init__.py").write_text(text)


def test_the_hint_names_the_checkout_or_the_installed_distribution(monkeypatch):
  # It said `pip install -e ".[viz]"`, which fails outside the checkout and
  # for a package installed from a wheel.
  assert extras.install_hint("viz") == f'pip install -e "{REPO}[viz]"'
  assert extras.install_hint("data", upgrade=True) == f'pip install -U -e "{REPO}[data]"'
  monkeypatch.setattr(extras, "_checkout", lambda: None)  # a wheel's install
  assert extras.install_hint("viz") == 'pip install "hyperrecon-jax[viz]"'
  assert extras.install_hint("data", upgrade=True) == 'pip install -U "hyperrecon-jax[data]"'
  with open(os.path.join(REPO, "setup.py")) as f:
    assert re.search(r'name="([^"]+)"', f.read()).group(1) == extras.DISTRIBUTION


def test_an_installed_module_is_returned():
  assert extras.require("json", "data", "x") is sys.modules["json"]


def test_a_missing_module_names_the_extra():
  with pytest.raises(extras.MissingDependency) as info:
    extras.require("no_such_module_for_hyperrecon", "viz", "hyperrecon_jax.plots")
  assert str(info.value) == (
      "hyperrecon_jax.plots needs `no_such_module_for_hyperrecon`, which is not installed. "
      f'Install the viz extra: pip install -e "{REPO}[viz]"')
  # A user's `except ImportError` and the scripts' one-line errors both catch it.
  assert isinstance(info.value, ImportError) and isinstance(info.value, errors.Error)


@pytest.mark.parametrize("text, error", [
    # TFDS 4.9.3 under tqdm 4.1: a name the installed version lacks.
    ("from json import no_such_name\n",
     "ImportError: cannot import name 'no_such_name' from 'json'"),
    # A dependency of the package that is itself missing: the package is
    # installed, so "not installed" would send the user the wrong way.
    ("import no_such_dependency_for_hyperrecon\n",
     "ModuleNotFoundError: No module named 'no_such_dependency_for_hyperrecon'"),
    # chex 0.1.7 under jax 0.4.30: an API removed from a package it imports.
    ("raise AttributeError('jax.core.Shape is deprecated')\n",
     "AttributeError: jax.core.Shape is deprecated"),
    # A ModuleNotFoundError that names no module is not taken for this one.
    ("raise ModuleNotFoundError('gone')\n", "ModuleNotFoundError: gone"),
])
def test_an_installed_module_that_does_not_import_says_why(packages, text, error):
  _package(packages, "broken_for_hyperrecon", text)
  with pytest.raises(extras.MissingDependency) as info:
    extras.require("broken_for_hyperrecon", "data", "hyperrecon_jax.data")
  message = str(info.value)
  assert message.startswith(
      "hyperrecon_jax.data needs `broken_for_hyperrecon`: `broken_for_hyperrecon` is "
      f"installed, but importing `broken_for_hyperrecon` fails ({error}")
  assert "not installed" not in message
  assert message.endswith("`pip check` names the conflict, and upgrading the data extra "
                          f'(pip install -U -e "{REPO}[data]") usually mends it')


def test_a_dotted_name_whose_package_is_missing_names_the_package():
  with pytest.raises(extras.MissingDependency,
                     match=r"^hyperrecon_jax\.plots needs `no_such_package_for_hyperrecon`, which "
                           r"is not installed\."):
    extras.require("no_such_package_for_hyperrecon.figure", "viz", "hyperrecon_jax.plots")


def test_a_submodule_that_does_not_import_is_named(packages):
  _package(packages, "parent_for_hyperrecon", "")
  with pytest.raises(extras.MissingDependency,
                     match=r"needs `parent_for_hyperrecon\.figure`: `parent_for_hyperrecon` "
                           r"is installed, but importing `parent_for_hyperrecon\.figure` fails "
                           r"\(ModuleNotFoundError"):
    extras.require("parent_for_hyperrecon.figure", "viz", "hyperrecon_jax.plots")


def test_the_data_package_names_the_data_extra():
  with pytest.raises(extras.MissingDependency) as info:
    dependencies.require("no_such_module_for_hyperrecon")
  assert str(info.value) == (
      "hyperrecon_jax.data needs `no_such_module_for_hyperrecon`, which is not installed. "
      f'Install the data extra: pip install -e "{REPO}[data]"')


def test_training_without_tensorboardx_warns_and_writes_metrics(packages, tmp_path, monkeypatch):
  _package(packages, "tensorboardX", "raise ImportError('protobuf too new')\n")
  for name in [n for n in sys.modules if n.split(".")[0] == "tensorboardX"]:
    monkeypatch.delitem(sys.modules, name)  # an earlier test's import, restored after
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda fmt, *args: warnings.append(fmt % args))
  (tmp_path / "run").mkdir()
  w = writer.MetricWriter(str(tmp_path / "run"), start_step=0)
  w.write(1, {"loss": 0.5})
  w.close()
  assert warnings == [
      "TensorBoard logging needs `tensorboardX`: `tensorboardX` is installed, but importing "
      "`tensorboardX` fails (ImportError: protobuf too new). Its version, or that of a "
      "package it imports, does not fit the others: `pip check` names the conflict, and "
      f'upgrading the viz extra (pip install -U -e "{REPO}[viz]") usually mends it. Training goes '
      "on without TensorBoard event files."]
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'
