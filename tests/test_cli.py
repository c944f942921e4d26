"""The experiment scripts as a user runs them: processes, exit codes, one-line errors.

The README promises that a mistake gives one ``error:`` line and exit status
2, that Ctrl-C gives ``interrupted`` and 130, and that nothing already written
is overwritten. Each test runs ``experiments/*.py`` in a subprocess. Most
fail during start-up (a few seconds each); one tiny run (the demo's
``:quick`` variant, 32×32, 4 steps) is trained and evaluated for the paths
that need a model, its XLA executables cached for the module.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import loop_support
import pytest

from hyperrecon_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "experiments", "configs", "demo.py") + ":quick"
SR = os.path.join(REPO, "experiments", "configs", "knee_sr_sl.py") + ":quick"


@pytest.fixture(scope="module")
def env(tmp_path_factory, compilation_cache):
  out = dict(os.environ)
  out["JAX_PLATFORMS"] = "cpu"
  out["HYPERRECON_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
  out["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
  # The processes compile as a user's would, except for conftest's faster
  # compilation (the same HLO programs).
  out["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                              if "xla_backend_optimization_level" in f)
  return out


def script(name):
  return os.path.join(REPO, "experiments", f"{name}.py")


def run(env, name, *args, timeout=600):
  return subprocess.run([sys.executable, script(name), *args], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        cwd=REPO, check=False)


def assert_one_error_line(proc, pattern):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert re.search(pattern, errors[0]), errors[0]


# --- mistakes found before any work ---------------------------------------------------


@pytest.mark.parametrize("config, override, pattern", [
    (DEMO, "--config.model.channels=0", r"config\.model\.channels must be an integer ≥ 1, got 0"),
    (DEMO, "--config.train.lr=-1", r"config\.train\.lr must be a positive"),
    (DEMO, "--config.train.lr_decay_every=0", r"lr_decay_every must be an integer ≥ 1"),
    (DEMO, "--config.train.max_to_keep=-1", r"max_to_keep must be an integer ≥ 0"),
    (DEMO, "--config.hparams.endpoint_prob=2", r"endpoint_prob must lie in \[0, 1\]"),
    (SR, "--config.task.factor=0", r"config\.task\.factor must be an integer ≥ 2"),
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
])
def test_a_broken_config_file_is_one_error_line(env, tmp_path, text, pattern):
  config = tmp_path / "bad.py"
  if text is not None:
    config.write_text(text)
  proc = run(env, "train", f"--config={config}", f"--workdir={tmp_path / 'run'}")
  assert_one_error_line(proc, pattern)
  assert not (tmp_path / "run").exists()


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


def test_evaluating_a_missing_or_untrained_workdir_is_one_line(env, tmp_path):
  proc = run(env, "evaluate", f"--workdir={tmp_path / 'typo'}")
  assert_one_error_line(proc, "does not exist")
  assert not (tmp_path / "typo").exists()
  (tmp_path / "untrained").mkdir()
  proc = run(env, "evaluate", f"--workdir={tmp_path / 'untrained'}")
  assert_one_error_line(proc, "no checkpoint: train first")
  assert not os.listdir(tmp_path / "untrained")


def test_evaluate_needs_one_model_and_an_out_folder_for_a_pretrained_one(env, tmp_path):
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv")
  assert_one_error_line(proc, r"give --out=DIR")
  proc = run(env, "evaluate", f"--workdir={tmp_path}", "--pretrained=mni152_csmri8x_dc_tv",
             f"--out={tmp_path / 'r'}")
  assert_one_error_line(proc, "exactly one of --workdir and --pretrained")
  proc = run(env, "evaluate", "--pretrained=nope", f"--out={tmp_path / 'r'}")
  assert_one_error_line(proc, r"no pretrained model 'nope': the package ships \[")
  assert not (tmp_path / "r").exists()


def test_evaluate_a_pretrained_model_without_training(env, tmp_path):
  out = tmp_path / "report"
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={out}",
             "--grid=2", "--split=validation")  # the shorthands of --config.eval.*
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "slices of validation" in proc.stdout and "2 λ values" in proc.stdout
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert result["pretrained"] == "mni152_csmri8x_dc_tv" and "workdir" not in result
  # On the test split the Unets stored with the model are reported, as stored.
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={tmp_path / 't'}",
             "--grid=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ("Unet at λ = (0.25) (stored in the info.json of mni152_csmri8x_dc_tv): PSNR "
          "20.70 dB, SSIM 0.6035") in proc.stdout, proc.stdout
  # On a folder of the user's volumes: every volume, and no stored Unets,
  # which were scored on the model's own test split.
  site = loop_support.write_site(tmp_path / "site", (11, 12))
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={tmp_path / 's'}",
             "--grid=2", f"--data={site}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (f"slices of every volume of {site} (2 volumes, nifti) (checkpoint step"
          in proc.stdout), proc.stdout
  assert "Unet at λ" not in proc.stdout
  # Each volume's PSNR, the input's and the model's at the best λ, lowest first.
  with open(tmp_path / "s" / "lambda_grid.json") as f:
    result = json.load(f)
  best = result["best"]["psnr"]["index"]
  rows = sorted((result["volume_mean"]["psnr"][k][best],
                 result["zero_filled"]["volume_mean"]["psnr"][k],
                 result["data"]["volume_names"][str(v)])
                for k, v in enumerate(result["volumes"]))
  printed = proc.stdout.split("lowest first:\n")[1].splitlines()[:2]
  assert printed == [f"  {name}: {zf:.2f} → {model:.2f}" for model, zf, name in rows]


def test_a_run_refused_after_start_up_leaves_no_folder_behind(env, tmp_path):
  # The missing data folder is found after the trainer has taken the lock,
  # which created the workdir (and its parent).
  workdir = tmp_path / "new" / "run"
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={workdir}",
             "--config.data.name=nifti", f"--config.data.manual_dir={tmp_path / 'missing'}")
  assert_one_error_line(proc, "manual_dir .*missing.* is not a folder")
  assert os.listdir(tmp_path) == []


def test_a_workdir_being_trained_refuses_a_second_trainer(env, tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.lock(workdir):
    proc = run(env, "train", f"--config={DEMO}", f"--workdir={workdir}")
  assert_one_error_line(proc, rf"being trained by process {os.getpid()} ")
  assert os.listdir(workdir) == []


def test_ctrl_c_during_start_up_prints_interrupted_and_exits_130(env, tmp_path):
  workdir = tmp_path / "run"
  # Started with SIGINT ignored, as a shell starts background jobs (and as CI
  # may run us): a SIGINT sent on purpose must still stop the script. The
  # ignored disposition survives exec; a preexec_fn would fork a threaded
  # process.
  ignore_then_exec = ("import os, signal, sys; "
                      "signal.signal(signal.SIGINT, signal.SIG_IGN); "
                      "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
  # So many steps that the run cannot end before the signal arrives.
  proc = subprocess.Popen(
      [sys.executable, "-c", ignore_then_exec, script("train"),
       f"--config={DEMO}", f"--workdir={workdir}", "--config.train.num_steps=1000000"], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  # The lock exists once the script is past its imports and flags; from then
  # on, wherever the signal lands (initialization, compilation, a step), the
  # script must end the same way.
  stderr = loop_support.signal_when(proc, (workdir / workdir_lib.LOCK_FILE).exists, signal.SIGINT)
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith("interrupted"), stderr[-3000:]


def test_a_ctrl_c_swallowed_during_start_up_stops_training_at_its_first_step(env, tmp_path):
  # Once in CI a Ctrl-C sent while the dataset was being built was lost (a
  # library caught the KeyboardInterrupt) and the script trained to its end
  # with status 0. Here building the operator raises SIGINT and swallows the
  # exception: the loop must still stop after its first step, with a
  # checkpoint, "interrupted" and 130.
  workdir = tmp_path / "run"
  program = f"""
import runpy, signal, sys
from hyperrecon_jax import physics
make_operator = physics.make_operator
def swallowing(*args, **kwargs):
  try:
    signal.raise_signal(signal.SIGINT)
  except BaseException:
    pass
  return make_operator(*args, **kwargs)
physics.make_operator = swallowing
sys.argv = [{script("train")!r}, "--config={DEMO}", "--workdir={workdir}"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 130, (proc.returncode, proc.stderr[-3000:])
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted: stopped by signal 2 at step 1;"), proc.stderr[-3000:]
  assert os.listdir(workdir / "checkpoints") == ["1"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_ctrl_c_swallowed_by_a_gc_callback_still_stops_the_script(env, signum):
  # Deterministic form of a CI failure: the SIGINT handler ran inside jax's
  # garbage-collection callback, Python printed "Exception ignored" and the
  # script trained to the end with status 0. Here a gc callback raises the
  # signal itself, so the KeyboardInterrupt is always swallowed there; the
  # script must still end with "interrupted" and 128 + the signal before its
  # loop finishes (a swallowed SIGTERM was sent again as SIGINT: 130, once in CI).
  program = """
import gc, signal, sys, time
sys.path.insert(0, "experiments")
import cli
def callback(phase, info):
  if phase == "start":
    gc.callbacks.remove(callback)
    signal.raise_signal(signal.SIGNUM)
def main(argv):
  gc.callbacks.append(callback)
  gc.collect()
  # Long enough for the resending thread on a loaded machine; the interrupt
  # ends the wait at once.
  for _ in range(12000):
    time.sleep(0.01)
  print("finished")
cli.run(main)
""".replace("SIGNUM", signal.Signals(signum).name)
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 128 + signum, (proc.returncode, proc.stderr[-3000:])
  assert "finished" not in proc.stdout
  assert proc.stderr.strip().splitlines()[-1] == "interrupted", proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("status", [0, 2])
def test_a_signal_after_the_command_has_finished_keeps_its_status(env, signum, status):
  # Every output was written, but a signal during the interpreter's shutdown
  # (a second or more with jax loaded, on a loaded machine) ended the command
  # with 130 or 143 and no word. From the moment an exit callback says
  # "finished" (main has returned) until the process ends, the signal comes
  # every 5 ms, so that one lands in each phase of the shutdown.
  program = f"""
import atexit, sys
sys.path.insert(0, "experiments")
import cli
def main(argv):
  import jax
  jax.jit(lambda x: x * 2)(jax.numpy.ones(3)).block_until_ready()
  atexit.register(lambda: print("finished", flush=True))
  return {status}
cli.run(main)
"""
  proc = subprocess.Popen([sys.executable, "-c", program], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline() == "finished\n"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
      proc.send_signal(signum)
      time.sleep(0.005)
    _, stderr = proc.communicate(timeout=10)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == status, (proc.returncode, stderr[-3000:])
  assert "interrupted" not in stderr and "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("verbosity", [[], ["--verbosity=0"]])
def test_libraries_repeating_what_a_line_of_ours_says_are_quiet_unless_asked(env, verbosity):
  # tensorboardX printed "W… x2num.py:13] NaN or Inf found in input tensor."
  # beside the loop's own line about the non-finite step.
  program = """
import logging, sys
from absl import logging as absl_logging
sys.path.insert(0, "experiments")
import cli
def main(argv):
  cli.quiet_libraries()
  logging.getLogger("tensorboardX.x2num").warning("NaN or Inf found in input tensor.")
  logging.getLogger("nibabel.global").warning("sizeof_hdr should be 540; set to 540")
  absl_logging.warning("a warning of ours")
cli.run(main)
"""
  proc = subprocess.run([sys.executable, "-c", program, *verbosity], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "a warning of ours" in proc.stderr
  for line in ("NaN or Inf found in input tensor", "sizeof_hdr should be 540"):
    assert (line in proc.stderr) == bool(verbosity), proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_shutdown_that_waits_with_the_command_s_status(env, signum):
  # A thread the shutdown joins, still busy for 600 s: ignoring the signal
  # after main would make Ctrl-C (and a scheduler's SIGTERM) wait for it.
  program = """
import sys, threading, time
sys.path.insert(0, "experiments")
import cli
def busy():
  while threading.main_thread().is_alive():  # until main has returned
    time.sleep(0.01)
  print("shutting down", flush=True)
  time.sleep(600)
def main(argv):
  threading.Thread(target=busy).start()
  return 3
cli.run(main)
"""
  proc = subprocess.Popen([sys.executable, "-c", program], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  said = []
  stderr = loop_support.signal_when(proc, lambda: said.append(proc.stdout.readline()) or True,
                                    signum, timeout=60)
  assert said == ["shutting down\n"]
  assert proc.returncode == 3, (proc.returncode, stderr[-3000:])


def test_exit_now_inside_a_lock_leaves_no_workdir_it_made(env, tmp_path):
  # How a process of a multi-process run ends when another one does: its
  # stack does not unwind, and its lock block's cleanup never ran.
  program = f"""
import sys
sys.path.insert(0, "experiments")
import cli
from hyperrecon_jax import workdir
with workdir.lock({str(tmp_path / "new" / "run")!r}):
  cli.exit_now(2)
"""
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("raised, code, one_line", [
    ("errors.InputError('λ = 2 is outside [0, 1]')", 2, True),
    ("FileNotFoundError('scan.nii: no such file')", 2, True),
    ("MemoryError('Unable to allocate 180. MiB for an array with shape (512, 512, 180)')", 2,
     True),
    ("ValueError('a bug in a library call')", 1, False),
    ("KeyError('a bug')", 1, False),
])
def test_only_the_projects_errors_become_one_line(env, raised, code, one_line):
  # A ValueError that the project did not raise on purpose is a bug: it must
  # keep its traceback instead of being dressed up as the user's mistake.
  program = f"""
import sys
sys.path.insert(0, "experiments")
import cli
from hyperrecon_jax import errors
with cli.user_errors():
  raise {raised}
"""
  proc = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=60, check=False)
  assert proc.returncode == code, proc.stderr
  assert ("Traceback" not in proc.stderr) == one_line, proc.stderr
  if one_line:
    assert proc.stderr.strip().startswith("error: "), proc.stderr
  if raised.startswith("MemoryError"):
    assert proc.stderr.strip() == ("error: out of memory: Unable to allocate 180. MiB for an "
                                   "array with shape (512, 512, 180)"), proc.stderr


# --- a trained run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo") / "run")
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(f"done: {workdir}")
  return workdir


def _files(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), workdir)] = f.read()
  return out


def test_evaluate_writes_the_report(env, trained, tmp_path):
  out = tmp_path / "report"
  proc = run(env, "evaluate", f"--workdir={trained}", f"--out={out}", "--config.eval.grid=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "slices of test (checkpoint step 4), 3 λ values" in proc.stdout
  assert sorted(os.listdir(out)) == ["curves.png", "diverse.png",
                                     "lambda_grid.json", "range.png",
                                     "slices.png"]
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert result["checkpoint_step"] == 4 and len(result["lambdas"]) == 3
  assert not os.path.exists(os.path.join(trained, "eval"))  # --out honoured


def test_evaluate_scores_segmentation_dice_with_a_segmenter(env, trained, tmp_path):
  seg = tmp_path / "segmenter"
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={seg}",
             "--config.segmenter.steps=2", "--config.segmenter.channels=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "validation Dice" in proc.stdout
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={seg}",
             "--config.segmenter.steps=2")
  assert_one_error_line(proc, "already holds a trained segmenter")
  out = tmp_path / "report"
  # The train split is scored as asked (both learned from it), and said to be.
  proc = run(env, "evaluate", f"--workdir={trained}", f"--out={out}", "--config.eval.grid=3",
             f"--config.evals.lambda_set.segmenter={seg}", "--split=train")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "segmentation Dice: zero-filled" in proc.stdout
  assert ("slices of train, the split the model learned from and so did the segmenter: not "
          "a held-out score") in proc.stdout
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert len(result["mean"]["dice"]) == 3 and "ground_truth_dice" in result
  proc = run(env, "evaluate", f"--workdir={trained}", f"--out={tmp_path / 'r2'}",
             f"--config.evals.lambda_set.segmenter={tmp_path / 'nothing'}")
  assert_one_error_line(proc, "holds no trained segmenter")
  assert not (tmp_path / "r2").exists()


def test_a_segmenter_learns_a_labelled_folder_and_scores_a_run_on_it(env, tmp_path):
  import configs
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3), labels=(3, 2, 1))
  data = [f"--config.data.{k}={v}" for k, v in (("name", "nifti"), ("manual_dir", site))]
  seg = tmp_path / "segmenter"
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={seg}", *data,
             "--config.segmenter.steps=2", "--config.segmenter.channels=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "validation Dice (ground-truth slices, classes 1, 2, 3): " in proc.stdout
  with open(seg / "segmenter.json") as f:
    assert json.load(f)["num_classes"] == 4
  # A model of the same data (untrained: the scores need not be good) is
  # scored by Dice with it.
  config = configs.load("demo", "quick")
  config.data.update(name="nifti", manual_dir=site, data_dir=env["HYPERRECON_DATA_DIR"])
  workdir = loop_support.save_untrained(config, str(tmp_path / "run"))
  proc = run(env, "evaluate", f"--workdir={workdir}", f"--out={tmp_path / 'report'}",
             "--grid=2", f"--config.evals.lambda_set.segmenter={seg}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "segmentation Dice: zero-filled" in proc.stdout


def test_an_export_names_its_own_flags_in_its_errors(env, trained, tmp_path):
  folder = tmp_path / "models"
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}", f"--baselines={tmp_path / 'none'}")
  assert_one_error_line(proc, r"--baselines=.*none: no such folder")
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}", "--unfinished")
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}")
  assert_one_error_line(proc, r"models/mine is a model already: delete it or choose another")


def test_sigterm_during_an_export_leaves_nothing_and_exits_143(env, trained, tmp_path):
  # SIGTERM's default ended the process on the spot, leaving the staged model
  # folder behind; now it unwinds as Ctrl-C does, with the shell's code 143.
  folder = tmp_path / "models"
  proc = subprocess.Popen(
      [sys.executable, script("export_pretrained"), f"--workdir={trained}", "--name=mine",
       "--description=d", f"--folder={folder}"], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, cwd=REPO)
  # Once the staging folder holds the weights, the export is scoring them.
  staged = str(folder / ".mine.export-*" / "mine" / "weights.msgpack")
  stderr = loop_support.signal_when(proc, lambda: glob.glob(staged), signal.SIGTERM)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-3000:]
  assert not folder.exists()  # made by the export, and removed with what it staged


def test_a_rejected_rerun_leaves_the_finished_run_as_it_was(env, trained):
  before = _files(trained)
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}",
             "--config.task.acceleration=4")
  assert_one_error_line(proc, r"task\.acceleration: 8\.0 in the workdir, 4\.0 now")
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}",
             "--config.hparams.endpoint_prob=2")
  assert_one_error_line(proc, "endpoint_prob")
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "nothing to do" in proc.stderr
  assert _files(trained) == before



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
