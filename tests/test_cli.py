"""The experiment scripts as a user runs them: mistakes found before any work.

The README promises that a mistake gives one ``error:`` line and exit status
2, and that nothing already written is overwritten. Each test runs
``experiments/*.py`` in a subprocess, which fails during start-up (a few
seconds each). Ctrl-C and the exit status: tests/test_cli_signals.py; the
commands that need a model: tests/test_cli_runs.py.
"""

import json
import os
import re
import subprocess
import sys

from cli_support import DEMO
from cli_support import REPO
from cli_support import SR
from cli_support import assert_one_error_line
from cli_support import run
from cli_support import script_env
import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory, compilation_cache):
  return script_env(tmp_path_factory, compilation_cache)


# --- mistakes found before any work ---------------------------------------------------


@pytest.mark.parametrize("config, override, pattern", [
    (DEMO, "--config.model.channels=0", r"config\.model\.channels must be an integer ≥ 1, got 0"),
    (DEMO, "--config.train.lr=-1", r"config\.train\.lr must be a positive"),
    (DEMO, "--config.train.lr_decay_every=0", r"lr_decay_every must be an integer ≥ 1"),
    (DEMO, "--config.train.max_to_keep=-1", r"max_to_keep must be an integer ≥ 0"),
    (DEMO.replace("demo.py", "demo_ao.py"), "--config.hparams.endpoint_prob=2",
     r"endpoint_prob must lie in \[0, 1\]"),  # demo_ao's endpoints sampler reads it
    (SR, "--config.task.factor=0", r"config\.task\.factor must be an integer ≥ 2"),
    # A field of another task was stored with the run, unused: denoising's
    # sigma with super-resolution, CS-MRI's acceleration with denoising.
    (SR, "--config.task.sigma=0.2", r"^error: --config\.task\.sigma: the superres task does "
     r"not read config\.task\.sigma \(train\.py would store it with the run unused\); it "
     r"reads config\.task\.name, factor$"),
    # Stored with the run, unread: the sampler or the method was meant too.
    (DEMO, "--config.hparams.log_min=0.01", r"^error: --config\.hparams\.log_min: the uniform "
     r"sampler does not read it \(the log_uniform sampler does: --config\.hparams\.sampler\); "
     r"train\.py would store it with the run unused$"),
    (DEMO, "--config.sampling.top_b=2", r"^error: --config\.sampling\.top_b: "
     r"sampling\.method='uhs' does not read it \(DHS does: --config\.sampling\.method=dhs\)"),
    # Without brackets the terms arrive as one name 'dc,tv,wavelet': split.
    (DEMO, "--config.losses=dc,tv,wavelet", r"config\.loss_scales must hold one positive "
     r"number per loss term, 3 for \('dc', 'tv', 'wavelet'\)"),
    (DEMO, "--config.extensions=no_such_module_here", r"config\.extensions: importing "
     r"'no_such_module_here' failed \(ModuleNotFoundError"),
    (DEMO, "--config.train.no_such_field=1", r"bad override --config\.train\.no_such_field: "
     r"config\.train has no field 'no_such_field'; its fields: batch_size, checkpoint_every"),
    # The field a mistaken name meant, by its words' initials or its words.
    (DEMO, "--config.train.learning_rate=1", r"config\.train has no field 'learning_rate' "
     r"\(did you mean lr\?\); its fields: batch_size"),
    (DEMO, "--config.train.steps=1", r"config\.train has no field 'steps' \(did you mean "
     r"num_steps\?\)"),
    # A typo of a built-in term got the hint for terms of one's own.
    (DEMO, "--config.losses=dc,ssmi", r"config\.losses: unknown loss term\(s\) \['ssmi'\] in "
     r"\('dc', 'ssmi'\); valid: \['dc', 'hfen', 'mae'"),
    # ml_collections keeps a tuple holding nan as its text: the check quoted
    # ('(0.1, nan)',), not the element.
    (DEMO, "--config.hparams.fixed=(0.1, nan)", r"^error: --config\.hparams\.fixed=\(0\.1, "
     r"nan\): element 2, 'nan', is not a finite number; config\.hparams\.fixed holds "
     r"numbers, e\.g\. \(0\.5,\)$"),
    (DEMO, "--config.loss_scales=(0.1,abc)", r"--config\.loss_scales=\(0\.1,abc\): element 2, "
     r"'abc', is not a finite number"),
    (DEMO, "--config.hparams.baselines=((nan,),)", r"^error: --config\.hparams\.baselines="
     r"\(\(nan,\),\): not a tuple of tuples of finite numbers"),
    # It read "its fields: " and nothing.
    (DEMO, "--config.evals.objective.x=1", r"config\.evals\.objective has no field 'x'; it has "
     r"no fields$"),
    # None unsets a field unset by default only; a word is refused there too.
    (DEMO, "--config.hparams.endpoint_prob_final=abc", r"^error: flag --config\.hparams\."
     r"endpoint_prob_final=abc: could not convert string to float: 'abc'"),
    (DEMO, "--config.train.lr=None", r"^error: flag --config\.train\.lr=None: could not "
     r"convert string to float: 'None'"),
])
def test_a_bad_config_is_one_error_line_and_creates_nothing(
    env, tmp_path, config, override, pattern):
  workdir = tmp_path / "run"
  proc = run(env, "train", f"--config={config}", f"--workdir={workdir}", override)
  assert_one_error_line(proc, pattern)
  assert not workdir.exists()


_FROM_DEFAULT = (f"import sys\nsys.path.insert(0, {os.path.join(REPO, 'experiments', 'configs')!r})"
                 "\nimport default\ndef get_config():\n  c = default.get_config()\n")


@pytest.mark.parametrize("text, pattern", [
    ("def get_config(:\n", r"config file .*bad\.py, line 1: invalid syntax"),
    ("def get_config():\n  return nope\n",
     r"config file .*bad\.py, line 2: NameError: name 'nope' is not defined"),
    (_FROM_DEFAULT + "  del c['train']\n  return c\n",
     r"the config of .*bad\.py has no config\.train: a config starts from configs/default\.py"),
    (_FROM_DEFAULT + "  c.train.num_step = 3\n  return c\n",
     r"the config of .*bad\.py sets config\.train\.num_step, which is not a field \(did you "
     r"mean num_steps\?\)"),
    (_FROM_DEFAULT + "  c.train.learning_rate = 1e-3\n  return c\n",
     r"sets config\.train\.learning_rate, which is not a field \(did you mean lr\?\)$"),
    (None, r"cannot load the config file .*bad\.py: No such file or directory"),
    ("x = 1\n", r"the config file .*bad\.py has no get_config\(\) function"),
    ("def get_config():\n  return None\n",
     r"the config file .*bad\.py: get_config\(\) returned None, not a config"),
    ("def get_config():\n  return {'train': {}}\n",
     r"get_config\(\) of .*bad\.py returned a dict, not an ml_collections\.ConfigDict"),
    (_FROM_DEFAULT + "  c.task = {}\n  return c\n", r"has no config\.task\.acceleration"),
    (_FROM_DEFAULT + "  c.train.lr = None\n  return c\n",
     r"sets config\.train\.lr to None; it needs a float \(default 0\.001\)"),
    (_FROM_DEFAULT + "  c.train.lr = 'fast'\n  return c\n",
     r"config file .*bad\.py, line 6: TypeError: Could not override field 'lr'"),
    # A term of one's own that only the config file registers: evaluate.py
    # and the others could not score the run.
    (_FROM_DEFAULT + f"  sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n  import own_terms\n"
     "  c.losses, c.loss_scales = ('dc', 'grad_diff'), (1.0, 1.0)\n  return c\n",
     r"config\.losses names loss terms of your own, \['grad_diff'\], but config\.extensions "
     r"is empty: name the module that registers them"),
    # It ended the run with status 0 and no word.
    ("import sys\ndef get_config():\n  sys.exit()\n",
     r"config file .*bad\.py, line 3: it calls sys\.exit\(\) instead of returning a config"),
    # A run's config.json given as the config read "NameError: name 'false' is not defined".
    ('{"data": {"augment_flip": false}, "losses": ["dc", "tv"]}\n', r"^error: the config "
     r"file .*bad\.py holds JSON \(a run's config\.json\?\), not Python: --config takes a "
     r"\.py file"),
    # A binary file (a scan given as the config): Python's compile error
    # names no file, and ended in a traceback with status 1.
    pytest.param(b"\x5c\x01\x00\x00\x00\x00\x00\x00", r"^error: the config file .*bad\.py is "
                 r"not Python source \(source code string cannot contain null bytes\): "
                 r"--config takes a \.py file", id="binary"),
])
def test_a_broken_config_file_is_one_error_line(env, tmp_path, text, pattern):
  config = tmp_path / "bad.py"
  if isinstance(text, bytes):
    config.write_bytes(text)
  elif text is not None:
    config.write_text(text)
  proc = run(env, "train", f"--config={config}", f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(proc, pattern)
  assert not (tmp_path / "run").exists()


def test_a_misspelled_config_argument_is_named_without_the_error_class(env, tmp_path):
  # It read "…, line 53: hyperrecon_jax.train.configuration.ConfigError: unknown …".
  proc = run(env, "train", f"--config={DEMO.replace(':quick', ':quik')}",
             f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(proc, r"^error: config file .*demo\.py, line \d+: unknown config "
                              r"argument 'quik'; use ':quick' or none$")
  assert not (tmp_path / "run").exists()


def test_a_copy_of_a_shipped_config_file_loads_from_any_folder(env, tmp_path):
  """configs.md: a config of one's own starts from the shipped ones, wherever it lies.

  demo_ao.py imports ``default`` and ``demo`` from its own folder; copied
  elsewhere it failed with "No module named 'default'". (baselines.py and
  segmenter.py read their config through the same `cli_config.define_config_file`.)
  """
  config = tmp_path / "mine.py"
  with open(os.path.join(REPO, "experiments", "configs", "demo_ao.py")) as f:
    config.write_text(f.read())
  workdir = tmp_path / "a_file"  # refused after the config loads: no training
  workdir.write_text("")
  proc = run(env, "train", f"--config={config}:quick", f"--workdir={workdir}")
  assert_one_error_line(proc, f"--workdir {workdir} is a file")


@pytest.mark.parametrize("override", [
    (), ("--config.hparams.endpoint_prob_final=None",),
    ("--config.hparams.endpoint_prob_final", "none")])
def test_none_unsets_a_field_that_is_unset_by_default(env, tmp_path, override):
  # ml_collections parsed it with float(), "could not convert string to float:
  # 'None'": a field the config file set could not be unset again.
  config = tmp_path / "annealed.py"
  config.write_text(_FROM_DEFAULT + "  c.hparams.endpoint_prob_final = 0.5\n  return c\n")
  workdir = tmp_path / "a_file"  # refused after the config check: no training
  workdir.write_text("")
  proc = run(env, "train", f"--config={config}", f"--workdir={workdir}", *override)
  # Set, it anneals a sampler the config does not use; unset, the config passes.
  assert_one_error_line(proc, "endpoint_prob_final anneals the 'endpoints' sampler" if not override
                        else f"--workdir {workdir} is a file")


def test_an_unset_after_the_end_of_flags_is_an_argument_not_a_flag(env, tmp_path):
  config = tmp_path / "annealed.py"
  config.write_text(_FROM_DEFAULT + "  c.hparams.endpoint_prob_final = 0.5\n  return c\n")
  workdir = tmp_path / "a_file"  # refused if the arguments were not: no training
  workdir.write_text("")
  proc = run(env, "train", f"--config={config}", f"--workdir={workdir}", "--",
             "--config.hparams.endpoint_prob_final=None")
  assert_one_error_line(proc, r"unexpected arguments \['--config\.hparams\."
                              r"endpoint_prob_final=None'\]")


@pytest.mark.parametrize("library, pattern", [
    ("import json\nShape = json.Shape\n",
     r"AttributeError: module 'json' has no attribute 'Shape'"),
    # A library written for a newer Python: it had read "config file
    # <the library>, line 2", naming the library as the config file.
    ("x = 1\ndef f(:\n", r"SyntaxError: .*"),
])
def test_a_library_that_fails_to_import_in_a_config_file_is_named(
    env, tmp_path, library, pattern):
  # It read "config file …, line 33: AttributeError: jax.core.Shape is
  # deprecated" for chex 0.1.7 under jax 0.4.30, as if the file were wrong.
  (tmp_path / "lib").mkdir()
  (tmp_path / "lib" / "old_library_for_test.py").write_text(library)
  config = tmp_path / "bad.py"
  config.write_text(f"import sys\nsys.path.insert(0, {str(tmp_path / 'lib')!r})\n"
                    "import old_library_for_test\ndef get_config():\n  return None\n")
  proc = run(env, "train", f"--config={config}", f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(
      proc, rf"config file .*bad\.py, line 3: {pattern} \(raised in .*old_library_for_test\.py, "
            r"line 2, while a module that the config file imports was imported\)$")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, module", [("train", "grain"), ("evaluate", "matplotlib")])
def test_an_optional_dependency_that_does_not_import_is_one_error_line(
    env, tmp_path, name, module):
  """A data or viz module that is installed but broken: one line naming it and its extra."""
  fake = tmp_path / "site"
  (fake / module).mkdir(parents=True)
  (fake / module / "__init__.py").write_text("raise ImportError('broken for the test')\n")
  broken = dict(env, PYTHONPATH=os.pathsep.join(
      p for p in (str(fake), env.get("PYTHONPATH")) if p))
  if name == "train":
    args = [f"--config={DEMO}", f"--workdir={tmp_path / 'run'}"]
    extra = "data"
  else:
    args = ["--pretrained=mni152_csmri8x_dc_tv", f"--out={tmp_path / 'out'}"]
    extra = "viz"
  proc = run(broken, name, *args)
  assert_one_error_line(
      proc, rf"needs `{module}[.\w]*`: `{module}` is installed, but importing `{module}[.\w]*` "
            rf"fails \(ImportError: broken for the test\)\. .*upgrading the {extra} extra "
            rf'\(pip install -U -e "{re.escape(REPO)}\[{extra}\]"\) usually mends it$')
  # Said before any work: evaluate.py had scored all 504 pairs first.
  assert "evaluated" not in proc.stderr and "step" not in proc.stderr, proc.stderr
  assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


# A shell expands `~` only at the start of a word: after `--flag=` it reaches
# the command as it is, and `--workdir=~/run` wrote a folder named `~`.
@pytest.mark.parametrize("name, args, named", [
    ("evaluate", ["--workdir=~/run"], "'{home}/run' does not exist"),
    ("evaluate", ["--pretrained=~/model", "--out=~/report"],
     "no pretrained model '{home}/model'"),
    ("summarize", ["--workdirs=~/run,~/other"], "{home}/run: no such folder"),
    ("explore", ["--workdir=~/run", "--port=0"], "'{home}/run' does not exist"),
    ("train", ["--config=~/missing.py:quick", "--workdir=~/run"],
     "cannot load the config file {home}/missing.py"),
])
def test_a_path_flag_reads_a_leading_tilde_as_the_home_folder(env, tmp_path, name, args, named):
  home = tmp_path / "home"
  home.mkdir()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", f"{name}.py"), *args],
                        env=dict(env, HOME=str(home)), capture_output=True, text=True,
                        timeout=300, cwd=str(cwd), check=False)
  assert_one_error_line(proc, re.escape(named.format(home=home)))
  assert not os.listdir(cwd) and not os.listdir(home)


def test_the_path_parsers_expand_the_home_folder(monkeypatch, tmp_path):
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import cli
  monkeypatch.setenv("HOME", str(tmp_path))
  assert cli._PathParser().parse("~/run") == f"{tmp_path}/run"
  assert cli._PathParser().parse("runs/~a") == "runs/~a"  # only a leading ~
  assert cli._PathParser().parse(None) is None
  assert cli._PathListParser().parse("~/a, b,~/c") == [f"{tmp_path}/a", "b", f"{tmp_path}/c"]
  argv = ["prog", "--config=~/c.py:quick", "--config.data.manual_dir=~/d", "--configs=~/x",
          "--workdir=~/run"]
  cli.expand_home(argv, "config")
  assert argv == ["prog", f"--config={tmp_path}/c.py:quick", "--config.data.manual_dir=~/d",
                  "--configs=~/x", "--workdir=~/run"]


@pytest.mark.parametrize("name", ["train", "segmenter"])
def test_a_missing_config_flag_is_named(env, tmp_path, name):
  # It read "the config file : get_config() returned None, not a config".
  proc = run(env, name, f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(proc, r"--config is required: give the experiment's config file")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, pattern", [
    # The segmenter trains config.segmenter.steps at its lr: these trained the
    # full 1,000 steps without a word.
    ("--config.train.num_steps=1", r"--config\.train\.num_steps: segmenter\.py reads of "
                                   r"config\.train only batch_size and seed; its steps and "
                                   r"learning rate are --config\.segmenter\.steps"),
    ("--config.train.lr=0.5", r"--config\.train\.lr: segmenter\.py reads"),
])
def test_a_train_override_the_segmenter_does_not_read_is_refused(env, tmp_path, override,
                                                                  pattern):
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={tmp_path / 'seg'}", override)
  assert_one_error_line(proc, pattern)
  assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize("name", ["train", "baselines"])
def test_a_segmenter_override_a_trainer_does_not_read_is_refused(env, tmp_path, name):
  # It was stored in the run's config.json as if the run had used it.
  extra = ["--lambdas=0,1"] if name == "baselines" else []
  proc = run(env, name, f"--config={DEMO}", f"--workdir={tmp_path / 'run'}",
             "--config.segmenter.steps=0", *extra)
  assert_one_error_line(proc, rf"--config\.segmenter\.steps: {name}\.py does not read "
                              r"config\.segmenter; the segmenter is trained by "
                              r"experiments/segmenter\.py$")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["train", "baselines"])
@pytest.mark.parametrize("what, pattern", [
    ("missing", r"cannot load the config file .*missing\.py: No such file or directory"),
    ("folder", r"cannot load the config file .*folder: Is a directory"),
])
def test_a_config_file_that_does_not_load_is_one_error_line_with_overrides(
    env, tmp_path, name, what, pattern):
  """With a --config.x.y override too: it reached the failed file and two tracebacks."""
  (tmp_path / "folder").mkdir()
  config = tmp_path / ("missing.py" if what == "missing" else "folder")
  extra = ["--lambdas=0,1"] if name == "baselines" else []
  proc = run(env, name, f"--config={config}", f"--workdir={tmp_path / 'run'}",
             "--config.train.num_steps=2", *extra)
  assert_one_error_line(proc, pattern)
  assert not (tmp_path / "run").exists()


def test_a_config_argument_the_file_does_not_take_is_named(env, tmp_path):
  config = tmp_path / "plain.py"
  config.write_text("import ml_collections\ndef get_config():\n  return "
                    "ml_collections.ConfigDict()\n")
  proc = run(env, "train", f"--config={config}:quick", f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(proc, r"the config file .*plain\.py: its get_config\(\) does not "
                              r"take the argument 'quick' after ':'")


@pytest.mark.parametrize("name, args", [
    # An empty --folder had exported into the package's own folder.
    ("export_pretrained", ["--workdir=W", "--name=n", "--description=d", "--folder="]),
    ("evaluate", ["--pretrained=mni152_csmri8x_dc_tv", "--out="]),
    ("train", [f"--config={DEMO}", "--workdir="]),
])
def test_a_flag_given_an_empty_value_is_refused(env, name, args):
  from hyperrecon_jax import pretrained
  before = sorted(os.listdir(pretrained.FOLDER))
  proc = run(env, name, *args)
  empty = next(a for a in args if a.endswith("="))
  assert_one_error_line(proc, rf"{empty[:-1]} is empty: give a value, or leave the flag out")
  assert sorted(os.listdir(pretrained.FOLDER)) == before


def test_summarize_names_a_damaged_report(env, tmp_path):
  (tmp_path / "eval").mkdir(parents=True)
  (tmp_path / "eval" / "lambda_grid.json").write_text('{"mean": ')
  proc = run(env, "summarize", f"--workdirs={tmp_path}")
  assert_one_error_line(proc, r"eval/lambda_grid\.json is not valid JSON .*evaluate the run "
                              r"again")
  assert proc.stdout == ""  # no table header before the error


def test_an_argument_that_is_not_a_flag_is_one_error_line(env, tmp_path):
  # "--out= DIR" (a space after '=') gives an empty flag and an argument.
  proc = run(env, "evaluate", f"--workdir={tmp_path}", "--out=", "report")
  assert_one_error_line(proc, r"unexpected arguments \['report'\]: every setting is one "
                              r"--flag=value \(a space after '=' splits it in two\)")
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("flags, pattern", [
    (["--config.eval.grid=0"], r"config\.eval\.grid must be an integer ≥ 2, got 0"),
    (["--config.eval.chunk=0"], r"config\.eval\.chunk"),
    (["--config.evals.figures.panel_lambdas=0"], r"config\.evals\.figures\.panel_lambdas"),
    (["--step=0"], r"--step"),
    (["--config.eval.split=tset"], r"config\.eval\.split must be one of .*'tset'"),
    # The shorthands are checked as the fields they set.
    (["--grid=1"], r"config\.eval\.grid must be an integer ≥ 2, got 1"),
    (["--split=tset"], r"config\.eval\.split must be one of .*'tset'"),
    (["--grid=3", "--config.eval.grid=4"],
     r"--grid and --config\.eval\.grid set the same setting: give one of them"),
    (["--grid=3", "--samples=5"], r"a grid \(config\.eval\.grid=3, --grid\) and a design"),
])
def test_bad_evaluate_flags_are_refused_before_any_work(env, tmp_path, flags, pattern):
  proc = run(env, "evaluate", f"--workdir={tmp_path}", *flags)
  assert_one_error_line(proc, pattern)
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("value, pattern", [
    ("0,x", "'x' is not a number"),
    ("0:1", "has 2 values, the model's loss has 1"),
    ("grid:1", "N must be ≥ 2"),
    # Named as the flag: it named config.hparams.baselines, which baselines.py refuses.
    ("0,2", r"--lambdas=0,2: λ must lie in \[0, 1\], got values in \[0, 2\]$"),
    ("nan", r"--lambdas=nan: λ must lie in \[0, 1\], got 1 value\(s\) that are not finite"),
    ("0,0.5,0.5", r"--lambdas=0,0.5,0.5: λ = 0.5 is given twice"),
    # Counted before they are built: 10⁸ λ had run 82 s into a MemoryError.
    ("grid:100000000", "gives 100,000,000 λ, more than 10,000: each is a whole Unet"),
    ("rays:20000", "gives 20,001 λ, more than 10,000"),
    # It built the design first: 5·10⁹ points ended in a 64 GiB allocation's traceback.
    ("samples:5000000000", "gives 5,000,000,000 λ, more than 10,000: each is a whole Unet"),
    ("rays:1_0", r"rays:P needs a whole number P written in digits 0-9, got '1_0'"),
])
def test_bad_baseline_lambdas_are_one_error_line(env, tmp_path, value, pattern):
  proc = run(env, "baselines", f"--config={DEMO}", f"--workdir={tmp_path / 'b'}",
             f"--lambdas={value}")
  assert_one_error_line(proc, pattern)
  assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("value, shown, example", [
    ("((0.3,),)", r"\(\(0\.3,\),\)", r"0\.3"),
    # Flat, the λ given as numbers: the refusal unpacked each into a tuple and
    # ended in a TypeError's traceback.
    ("(0.5,1.0)", r"\(0\.5, 1\.0\)", r"0\.5,1"),
    ("0.5", r"\(0\.5,\)", r"0\.5"),
])
def test_baselines_refuse_a_stack_given_in_the_config(env, tmp_path, value, shown, example):
  # The stack's λ come from --lambdas: the override was replaced by the
  # one-hot λ without a word, and λ = 0.3 never trained.
  proc = run(env, "baselines", f"--config={DEMO}", f"--workdir={tmp_path / 'b'}",
             f"--config.hparams.baselines={value}")
  assert_one_error_line(proc, rf"^error: --config\.hparams\.baselines={shown}: baselines\.py "
                              rf"trains the λ of --lambdas .* --lambdas={example}$")
  assert not (tmp_path / "b").exists()


def test_a_baseline_grid_keeps_one_lambda_per_loss_weighting(env):
  # Three terms: grid:3 is 9 λ, and λ = (1, 0), (1, 0.5), (1, 1) all weight the
  # first term alone. Only the parsing runs (in its own process: the script
  # defines its flags on import).
  code = ("import sys; sys.path.insert(0, 'experiments'); import baselines; "
          "print(baselines.parse_lambdas('grid:3', 2))")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=300, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == ("[(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 0.0), (0.5, 0.5), "
                                 "(0.5, 1.0), (1.0, 0.0)]")
  assert ("--lambdas=grid:3: 9 λ, 7 distinct loss weightings (where λ_k = 1 the later λ do "
          "not count): training 7 Unets") in proc.stderr


def test_a_baseline_grid_beyond_two_hyperparameters_names_the_forms_it_takes(env):
  # It pointed to hparams.simplex_design and evaluate.py, not to --lambdas's own forms.
  code = ("import sys; sys.path.insert(0, 'experiments'); import baselines; "
          "baselines.parse_lambdas('grid:3', 3)")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                        text=True, timeout=300, cwd=REPO, check=False)
  assert proc.returncode != 0
  assert ("InputError: --lambdas=grid:3: grids stop at two hyperparameters and this config has "
          "3 hyperparameters (4 loss terms); give --lambdas=samples:N or rays:P for points on "
          "the simplex, or vectors of 3 values, e.g. --lambdas=0.5:0.5:0.5") in proc.stderr


def test_baselines_outside_a_multi_process_launch_refuse_distributed(env, tmp_path):
  """It raised JAX's "coordinator_address should be defined" with a traceback."""
  proc = run(env, "baselines", f"--config={DEMO}", f"--workdir={tmp_path / 'b'}",
             "--lambdas=0,1", "--config.train.distributed=true")
  assert_one_error_line(proc, r"config\.train\.distributed=True, but this process cannot "
                              r"join a multi-process run \(.*coordinator_address")
  assert not (tmp_path / "b").exists()


def test_gradient_scales_are_measured_without_training(env, tmp_path):
  out = tmp_path / "g"
  proc = run(env, "baselines", f"--config={DEMO}", f"--workdir={out}", "--scales=gradient",
             "--lambdas=0,1")
  assert_one_error_line(proc, "--scales=gradient trains no Unets: drop --lambdas")
  assert not out.exists()
  proc = run(env, "baselines", f"--config={DEMO}", f"--workdir={out}", "--scales=gradient")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.listdir(out) == ["gradient_scales.json"]  # no checkpoint: nothing trained
  result = json.loads((out / "gradient_scales.json").read_text())
  assert result["losses"] == ["mae", "ssim"] and result["loss_scales"][0] == 0.0556
  assert f'--config.loss_scales="(0.0556, {result["loss_scales"][1]:.4g})"' in proc.stdout


def test_a_config_file_may_leave_an_evaluator_out_and_no_other_field():
  """configs.md: "remove an entry to skip it"; the file check refused it."""
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import cli_config

  from hyperrecon_jax import errors
  config = cli_config.default_config()
  del config.evals["dhs_replay"]
  cli_config._compare(cli_config.default_config(), config, "config", "mine.py")
  del config.train["eval_batches"]
  with pytest.raises(errors.InputError, match=r"the config of mine.py has no "
                     r"config.train.eval_batches"):
    cli_config._compare(cli_config.default_config(), config, "config", "mine.py")
