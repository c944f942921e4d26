"""The experiment configs of experiments/configs/ and the loading of stored configs."""

import hashlib
import json
import math
import os
import shutil

import configs
import ml_collections
import numpy as np
import pytest

from hyperrecon_jax import physics
from hyperrecon_jax import pretrained
from hyperrecon_jax import train

# What the library's `train.default_config()` returned before the defaults
# moved to experiments/configs/default.py, in its order (the order of
# config.json), and what its ':quick' variant changed. data_dir is the
# environment's. Fields added since come with the value that keeps the
# former behaviour (model.hyper_init, model.conditioned, sampling.normalize,
# extensions, term_probes).
DEFAULT = {
    "task": {"name": "csmri", "acceleration": 8.0, "mask": "poisson", "mask_seed": 0,
             "center_fraction": 0.08, "noise_sigma": 0.0, "sigma": 0.1, "factor": 4},
    "data": {"name": "mni152", "manual_dir": "", "data_dir": None, "image_size": 256,
             "axis": "axial",
             "augment_flip": False, "augment_intensity": 0.0,
             "split_fractions": (0.7, 0.1, 0.2), "split_seed": 0, "gap_slices": 8,
             "min_foreground": 0.01, "percentile": 99.5, "num_threads": 2},
    "model": {"hyper_dim": 128, "channels": 32, "batch_norm": True, "init_scheme": "torch",
              "strategy": "auto", "dtype": "float32", "hyper_init": "reference",
              "conditioned": "all"},
    "losses": ("mae", "ssim"),
    "loss_scales": (0.0556, 0.322),
    "extensions": (),
    "term_probes": {},
    "hparams": {"sampler": "uniform", "endpoint_prob": 0.1, "log_min": 0.001,
                "alpha": 1.0, "endpoint_prob_final": None,
                "fixed": (0.5,), "baselines": ()},
    "sampling": {"method": "uhs", "top_b": 8, "normalize": "kept"},
    "train": {"batch_size": 32, "num_steps": 100_000, "lr": 0.001, "lr_decay_every": 32768,
              "lr_decay_factor": 0.5, "seed": 0, "log_every": 100, "eval_every": 2000,
              "checkpoint_every": 2000, "max_to_keep": 3, "eval_batches": 0,
              "distributed": False},
    "eval": {"grid": 100, "chunk": 32, "split": "test", "samples": 0, "gallery_size": 4,
             "gallery_tolerance_db": 1.0},
    "evals": {"lambda_set": {"segmenter": ""}, "baselines": {"workdir": ""}, "objective": {},
              "loss_terms": {}, "split_gallery": {}, "dhs_replay": {"batches": 100},
              "figures": {"panel_lambdas": 5}},
    "segmenter": {"channels": 0, "steps": 1000, "lr": 0.001},
}
QUICK = {
    ("data", "image_size"): 32, ("model", "hyper_dim"): 4, ("model", "channels"): 4,
    ("model", "strategy"): "vmap", ("train", "batch_size"): 4, ("sampling", "top_b"): 2,
    ("train", "num_steps"): 4, ("train", "log_every"): 2, ("train", "eval_every"): 4,
    ("train", "checkpoint_every"): 2, ("eval", "grid"): 5, ("eval", "chunk"): 8,
}


def _expected(data_dir, changes=()):
  out = json.loads(json.dumps(DEFAULT))
  out["data"]["data_dir"] = data_dir
  for (section, field), value in dict(changes).items():
    out[section][field] = value
  return out


@pytest.mark.parametrize("arg, changes", [(None, {}), ("quick", QUICK)])
def test_the_default_file_holds_the_former_library_defaults(monkeypatch, tmp_path, arg,
                                                            changes):
  monkeypatch.setenv("HYPERRECON_DATA_DIR", str(tmp_path))
  config = configs.load("default", arg)
  # As text, so that the order counts too.
  assert config.to_json() == json.dumps(_expected(str(tmp_path), changes))


@pytest.mark.parametrize("name", configs.NAMES)
@pytest.mark.parametrize("arg", [None, "quick"])
def test_every_experiment_config_is_complete_and_valid(name, arg):
  config = configs.load(name, arg)
  train.check_config(config)
  default = configs.default()
  for section in ("task", "data", "model", "hparams", "sampling", "train", "eval", "evals",
                  "segmenter"):
    assert set(config[section]) == set(default[section]), (name, section)


@pytest.mark.parametrize("name", configs.NAMES)
def test_every_quick_task_builds_its_operator(name):
  config = configs.load(name, "quick")
  size = config.data.image_size
  assert isinstance(physics.make_operator(config.task, (size, size)), physics.Operator)


@pytest.mark.parametrize("name", ["default", "demo_ao", "pretrained_dc_tv"])
def test_an_unknown_config_argument_is_refused(name):
  with pytest.raises(train.ConfigError,
                     match=r"^unknown config argument 'fast'; use ':quick' or none$"):
    configs.load(name, "fast")


def test_the_quick_variant_keeps_a_plain_unet_plain():
  config = configs.default()
  config.model.hyper_dim = 0
  module = configs.module("default")
  assert module.variant(config, "quick").model.hyper_dim == 0
  assert module.variant(config, "").model.hyper_dim == 0


@pytest.mark.parametrize("field, value, match", [
    ("hyper_init", "zeros",
     r"^config.model.hyper_init must be one of \('reference', 'offset'\), got 'zeros'$"),
    ("conditioned", "decoder",
     r"^config.model.conditioned: 'decoder' is the prefix of no Unet convolution"),
    ("conditioned", "", r"^config.model.conditioned must be 'all' or name at least one"),
])
def test_bad_lambda_path_settings_are_refused(field, value, match):
  config = configs.load("demo_ao", "quick")
  config.model[field] = value
  with pytest.raises(train.ConfigError, match=match):
    train.check_config(config)
  config.model.hyper_dim = 0  # a plain Unet has no λ path to set
  train.check_config(config)


def test_from_stored_adds_the_fields_added_since():
  current = json.loads(configs.default().to_json())
  assert json.loads(train.from_stored(current).to_json()) == current
  old = json.loads(json.dumps(current))
  del old["hparams"]["baselines"], old["hparams"]["endpoint_prob_final"]
  del old["model"]["hyper_init"], old["model"]["conditioned"]
  config = train.from_stored(old)
  assert isinstance(config, ml_collections.ConfigDict)
  assert config.hparams.baselines == () and config.hparams.endpoint_prob_final is None
  assert config.model.hyper_init == "reference" and config.model.conditioned == "all"
  assert json.loads(config.to_json()) == current
  # Not a config: left for the reader of the section to name what is missing.
  assert "hparams" not in train.from_stored({"task": current["task"]})


def test_a_stored_run_with_terms_of_its_own_registers_them_when_loaded(own_terms, tmp_path):
  import sys
  config = configs.default()
  config.losses, config.loss_scales = ("dc", "grad_diff", "weight_l2"), (1.0, 1.0, 1.0)
  with pytest.raises(train.ConfigError, match=r"unknown loss term.*'grad_diff'.*"
                     r"registered by hr.losses.register_term, for a run in a module named in "
                     r"its config.extensions. config.extensions is now \(\)\."):
    train.check_config(config)
  config.extensions = ("own_terms",)
  train.check_config(config)  # imports own_terms, which registers both terms
  assert "grad_diff" in own_terms.TERMS
  # A later process (here: the module and its terms dropped) loads the stored run.
  (tmp_path / "config.json").write_text(config.to_json())
  sys.modules.pop("own_terms")
  for name in ("grad_diff", "weight_l2"):
    del own_terms.TERMS._terms[name]
  loaded = train.load_config(str(tmp_path))
  assert tuple(loaded.extensions) == ("own_terms",) and "weight_l2" in own_terms.NEEDS_WEIGHTS
  train.check_config(loaded)


@pytest.mark.parametrize("extensions, match", [
    ("own_terms", "must be a sequence of Python module names"),
    (("own terms",), "must be a sequence of Python module names"),
    (("no_such_module_here",), r"importing 'no_such_module_here' failed \(ModuleNotFoundError"),
    # Python's own message: "No module named 'own_terms.py'; 'own_terms' is not a package".
    (("own_terms.py",), r"names modules, not files: give 'own_terms' for 'own_terms.py', with "
                        r"its folder on PYTHONPATH"),
])
def test_extensions_that_cannot_be_imported_are_named(own_terms, extensions, match):
  stored = json.loads(configs.default().to_json())
  stored["extensions"] = extensions  # a config.json edited by hand
  with pytest.raises(train.ConfigError, match=match):
    train.from_stored(stored)
  if not isinstance(extensions, str):  # a ConfigDict's tuple field takes no string
    config = configs.default()
    config.extensions = extensions
    with pytest.raises(train.ConfigError, match=match):
      train.check_config(config)


def test_a_stored_run_whose_extensions_register_none_of_its_terms_is_named(own_terms):
  # A module of the run's name that imports but registers other terms (not the
  # run's, or no longer): refused when the run loads, naming the terms and the
  # module, not after an evaluation's work ('unknown loss term' at the objective).
  stored = json.loads(configs.default().to_json())
  stored["losses"], stored["loss_scales"] = ["dc", "grad_diff"], [1.0, 1.0]
  stored["extensions"] = ["json"]  # imports, registers nothing
  with pytest.raises(train.ConfigError, match=r"\['grad_diff'\].*registered by none.*"
                     r"config.extensions \('json',\)"):
    train.from_stored(stored)
  stored["extensions"] = ["own_terms"]  # registers grad_diff
  assert tuple(train.from_stored(stored).losses) == ("dc", "grad_diff")


def test_changed_fields_name_what_a_resumed_run_changes_but_the_machine():
  old = json.loads(configs.default().to_json())
  new = json.loads(json.dumps(old))
  new["sampling"]["method"], new["train"]["num_steps"] = "uhs", 10
  new["data"]["data_dir"], new["data"]["num_threads"] = "/elsewhere", 8
  old["sampling"]["method"] = "dhs"
  assert train.changed_fields(old, new) == ["sampling.method: 'dhs' → 'uhs'",
                                            "train.num_steps: 100000 → 10"]
  assert train.changed_fields(old, old) == []
  # Probe values within roundoff are the same term (a change beyond it is refused).
  old["term_probes"], new["term_probes"] = {"t": [1.0, 2.0]}, {"t": [1.0, 2.0000002]}
  assert "term_probes" not in " ".join(train.changed_fields(old, new))


def test_load_config_of_a_config_json_written_before_a_field_was_added(tmp_path):
  stored = json.loads(configs.default().to_json())
  del stored["hparams"]["baselines"]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  config = train.load_config(str(tmp_path))
  assert config.hparams.baselines == ()
  train.check_config(config)


def test_a_shipped_model_stored_before_a_field_was_added_loads(tmp_path):
  name = pretrained.names()[0]
  shutil.copytree(os.path.join(pretrained.FOLDER, name), tmp_path / name)
  path = tmp_path / name / pretrained.CONFIG_FILE
  stored = json.loads(path.read_text())
  del stored["hparams"]["baselines"]
  path.write_text(json.dumps(stored))
  # As exported by that older version: its info.json records this config's digest.
  info = pretrained.info(name, folder=str(tmp_path))
  info["config_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
  pretrained.write_info(str(tmp_path / name), info)
  config, _, _, _ = pretrained.load(name, folder=str(tmp_path))
  assert config.hparams.baselines == ()


def test_the_256_recipe_is_the_shipped_256_model_s_config():
  # The loss scales included: they depend on the image size, so the 64×64
  # demo's would make `train.py` with this file train another loss.
  stored = json.loads(open(os.path.join(pretrained.FOLDER, "mni152_csmri8x_dc_tv_256",
                                        pretrained.CONFIG_FILE)).read())
  stored = json.loads(train.from_stored(stored).to_json())
  recipe = json.loads(configs.load("pretrained_dc_tv_256", "").to_json())
  for config in (stored, recipe):
    config["data"].pop("data_dir")  # the machine's
  assert recipe == stored
  assert tuple(recipe["loss_scales"]) == (18.54, 127)


@pytest.mark.parametrize("field, value, match", [
    # Each was a traceback, or (an infinite scale: weight 1/∞) a silently wrong run.
    ("loss_scales", (math.inf, 1.0), r"loss_scales must be positive finite numbers that "
     r"float32 holds \(1\.18e-38 to 3\.4e\+38\), got \(inf"),
    # Each is divided into a term in float32, where it was 0 or ∞.
    ("loss_scales", (1.0, 1e-50), r"loss_scales must be positive finite numbers that float32"),
    ("loss_scales", (1.0, 1e300), r"loss_scales must be positive finite numbers that float32"),
    ("loss_scales", (1.0, "a"), r"loss_scales must be positive finite numbers"),
    ("loss_scales", (1.0, True), r"loss_scales must be positive finite numbers"),
    # --config.loss_scales=None arrives as (None,); it said "has 1 values".
    ("loss_scales", (None,),
     r"one positive number per loss term, 2 for \('mae', 'ssim'\), got \(None,\)"),
    ("loss_scales", None, r"one positive number per loss term, 2 for .* got None"),
    ("data.image_size", -8, r"image_size must be a multiple of 8 .* got -8"),
    # Validation's SSIM needs 11 × 11: 8 trained, then failed at the first validation.
    ("data.image_size", 8, r"image_size must be a multiple of 8 \(the Unet pools 3 times\) of "
                           r"at least 16 \(validation's SSIM needs 11×11\), got 8"),
    # ∞ (or past float32) failed at step 1 as "non-finite ... lower config.train.lr".
    ("task.noise_sigma", math.inf, r"config.task.noise_sigma must be a finite number ≥ 0, got "
                                   r"inf"),
    ("task.noise_sigma", 1e39, r"config.task.noise_sigma must be a finite number ≥ 0"),
    ("train.lr", 1e39, r"config.train.lr must be a positive finite number, got 1e\+39"),
    # A config file may set an int field to a bool (ml_collections lets it
    # in): True trained as batch 1 and was stored as true.
    ("train.batch_size", True, r"config.train.batch_size must be an integer ≥ 1, got True"),
    ("train.max_to_keep", False, r"config.train.max_to_keep must be an integer ≥ 0 .*got False"),
    ("model.hyper_dim", True, r"config.model.hyper_dim must be an integer ≥ 0, got True"),
    ("model.channels", True, r"config.model.channels must be an integer ≥ 1, got True"),
    # The state's step counter is an int32, which cannot count past 2**31 - 1.
    ("train.num_steps", 2**31, r"config.train.num_steps must be < 2\*\*31, got 2147483648"),
    ("data.percentile", 200.0, r"percentile must lie in \(0, 100\], got 200.0"),
    ("data.min_foreground", 2.0, r"min_foreground must lie in \[0, 1\), got 2.0"),
    # A folder built for evaluation only has no train or validation split.
    ("data.split_fractions", (0.0, 0.0, 1.0),
     r"config.data.split_fractions must be three positive numbers .* got \(0.0, 0.0, 1.0\)"),
    ("hparams.fixed", ("nan",), r"hparams.fixed must lie in \[0, 1\], got \('nan',\)"),
    # A flat tuple failed in tuple() with "'float' object is not iterable".
    ("hparams.baselines", (0.2, 0.5), r"hparams\.baselines must be a tuple of λ, each a tuple "
     r"of 1 value in \[0, 1\] \(e\.g\. \(\(0\.2,\), \(0\.5,\)\)\), got \(0\.2, 0\.5\)"),
    # Documented values that check_config let through, to fail later without
    # naming the config field (or, for augment_intensity and gap_slices, never).
    ("model.init_scheme", "foo", r"config.model.init_scheme must be one of \('torch', 'flax'\)"),
    ("model.strategy", "foo", r"config.model.strategy must be one of \('auto', 'vmap', 'loop'\)"),
    ("data.name", "foo", r"config.data.name must be one of \('mni152', 'fastmri_knee', 'nifti'\)"),
    ("data.axis", "diagonal", r"config.data.axis must be one of \('sagittal', 'coronal', "
                              r"'axial'\), got 'diagonal'$"),
    # The command line gives text: it offered 0, 1, 2, and then refused '1'.
    ("data.axis", "1", r"config.data.axis must be one of \('sagittal', 'coronal', 'axial'\), "
                       r"got '1' \(array axis 1 is 'coronal': give the name\)$"),
    ("data.gap_slices", -1, r"config.data.gap_slices must be an integer ≥ 0, got -1"),
    ("data.num_threads", -2, r"config.data.num_threads must be an integer ≥ 0 .*got -2"),
    ("data.augment_intensity", 1.5, r"augment_intensity must lie in \[0, 1\), got 1.5"),
    ("data.augment_intensity", -0.5, r"augment_intensity must lie in \[0, 1\), got -0.5"),
    ("eval.split", "foo", r"config.eval.split must be one of \('train', 'validation', 'test'\)"),
    ("eval.samples", 1_000_001, r"config.eval.samples=1,000,001: more than 1,000,000 λ"),
    # A negative seed failed in NumPy's generator when the data or the mask
    # was built, naming no field; one past int64 in jax.random.key.
    ("train.seed", -1, r"config.train.seed must be an integer from 0 to 2,147,483,643, got -1"),
    ("train.seed", 2 ** 63, r"config.train.seed must be an integer from 0 .* got 92233720368"),
    ("data.split_seed", -3, r"config.data.split_seed must be an integer from 0 .* got -3"),
    ("task.mask_seed", -2, r"config.task.mask_seed must be an integer from 0 .* got -2"),
    # The report's settings were checked by evaluate.py only, after training.
    ("evals.dhs_replay.batches", -1, r"config.evals.dhs_replay.batches must be an integer ≥ 1, "
                                     r"got -1"),
    ("evals.figures.panel_lambdas", 0, r"config.evals.figures.panel_lambdas must be an "
                                       r"integer ≥ 1, got 0"),
])
def test_impossible_values_of_any_type_are_config_errors(field, value, match):
  config = configs.load("demo", "quick")
  config.model.hyper_dim = 0  # hparams.fixed is a plain Unet's
  *sections, name = field.split(".")
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(train.ConfigError, match=match):
    train.check_config(config)


@pytest.mark.parametrize("field, value, match", [
    ("data.manual_dir", 5, r"^config\.data\.manual_dir must be a string \(a folder, or ''\), "
                           r"got 5$"),
    ("data.data_dir", 3.0, r"^config\.data\.data_dir must be a string .* got 3\.0$"),
    ("data.manual_dir", None, r"^config\.data\.manual_dir must be a string .* got None$"),
    # It was named as a prefix: "'5' is the prefix of no Unet convolution".
    ("model.conditioned", 5, r"^config\.model\.conditioned must be a string \('all' or "
                             r"comma-separated prefixes of Unet convolutions\), got 5$"),
])
def test_a_number_in_a_string_field_is_named(field, value, match):
  # A ConfigDict refuses another type for a field it holds, so such a config
  # comes from a dict (e.g. one read from JSON or built by hand).
  values = configs.load("demo", "quick").to_dict()
  section, name = field.split(".")
  values[section][name] = value
  with pytest.raises(train.ConfigError, match=match):
    train.check_config(ml_collections.ConfigDict(values))


def test_hfen_as_a_term_needs_the_background_slices_dropped():
  # HFEN divides by the target's LoG, 0 on an all-zero slice: such a run
  # stopped at step 1 as "non-finite … lower config.train.lr".
  from hyperrecon_jax import losses
  assert not np.isfinite(losses.hfen(np.full((1, 16, 16), 0.1, np.float32),
                                     np.zeros((1, 16, 16), np.float32))).any()
  config = configs.load("demo", "quick")
  config.losses, config.loss_scales = ("mae", "hfen"), (1.0, 1.0)
  train.check_config(config)  # the default min_foreground, 0.01
  config.data.min_foreground = 0.0
  with pytest.raises(train.ConfigError, match=r"config.losses holds 'hfen', which is infinite "
                                              r"on a target slice without structure .* set "
                                              r"config.data.min_foreground above 0"):
    train.check_config(config)
  config.losses = ("mae", "ssim")  # terms defined on an all-zero target
  train.check_config(config)


def test_hparams_fixed_is_checked_for_a_hyperrecon_run_too():
  # Not read by a HyperRecon run, but stored with it and compared on resume:
  # "abc" trained, and every resume without the typo was refused.
  config = configs.load("demo", "quick")
  assert config.model.hyper_dim
  config.hparams.fixed = ("abc",)
  with pytest.raises(train.ConfigError, match=r"hparams.fixed must lie in \[0, 1\], got "
                                              r"\('abc',\)"):
    train.check_config(config)
  config.hparams.fixed = (0.2, 0.3)  # the length is a plain Unet's concern alone
  train.check_config(config)


def test_a_plain_unet_trains_every_row_of_its_batch():
  # DHS at one fixed λ trained on the rows of lowest data-consistency loss
  # alone (2 of 4), without a word.
  config = configs.load("demo_ao", "quick")
  config.model.hyper_dim, config.hparams.fixed = 0, (0.5,)
  config.sampling.method = "dhs"
  with pytest.raises(train.ConfigError, match=r"a plain Unet \(model.hyper_dim=0\) trains at "
                                              r"fixed λ: config.sampling.method must be 'uhs', "
                                              r"got 'dhs'"):
    train.check_config(config)
  config.sampling.method = "uhs"
  train.check_config(config)


def test_four_terms_need_a_design_before_training():
  # eval.samples=0 trained, and the report was refused after the run.
  from hyperrecon_jax.train import config_checks
  config = configs.load("demo_k4", "quick")
  config.eval.samples = 0
  train.check_config(config)  # a trained model's config: scored by a design given later
  with pytest.raises(train.ConfigError, match=r"config.eval.samples must be > 0 for 4 loss "
                                              r"terms \(3 hyperparameters; grids stop at two\)"):
    config_checks.check_report_design(config)
  with pytest.raises(train.ConfigError, match=r"config.eval.samples must be > 0"):
    train.train_and_evaluate(config, "/nonexistent/never/made")
  config.model.hyper_dim, config.hparams.fixed = 0, (0.5, 0.5, 0.5)
  config.sampling.method = "uhs"
  config_checks.check_report_design(config)  # a plain Unet's report scores its one λ


def test_a_plain_unet_with_a_design_is_refused_before_training():
  # It trained, and evaluate.py then refused the run ("config.eval.samples does not apply").
  from hyperrecon_jax.train import config_checks
  config = configs.load("demo", "quick")
  config.model.hyper_dim, config.eval.samples = 0, 12
  with pytest.raises(train.ConfigError, match=r"a plain Unet has one λ, the one it trains at: "
                                              r"config.eval.samples must be 0, got 12"):
    config_checks.check_report_design(config)
  config.hparams.baselines = ((0.0,), (1.0,))  # a stack's Unets are scored by baselines.py
  config_checks.check_report_design(config)


def test_an_evaluator_that_does_not_exist_is_refused_before_training():
  config = configs.load("demo_ao", "quick")
  config.evals["lamda_set"] = {}  # a typo: evaluate.py refused it after training
  with pytest.raises(train.ConfigError, match=r"config.evals names no evaluator \['lamda_set'\]"):
    train.check_config(config)
  del config.evals["lamda_set"]
  train.check_config(config)
  # Trained without it, the run could never be reported on: evaluate.py's
  # overrides cannot add an evaluator to the stored config.
  del config.evals["lambda_set"]
  with pytest.raises(train.ConfigError, match=r"config.evals must hold lambda_set"):
    train.check_config(config)


def test_a_grid_of_too_many_lambdas_is_refused_before_training():
  config = configs.load("demo", "quick")
  config.losses, config.loss_scales = ("dc", "tv", "wavelet"), (1.0, 1.0, 1.0)
  config.eval.grid = 1001  # 1,002,001 λ: train.py stored it, evaluate.py refused it
  with pytest.raises(train.ConfigError, match=r"config.eval.grid=1,001 gives 1,002,001 λ, "
                     r"more than 1,000,000"):
    train.check_config(config)
  config.eval.grid = 1000
  train.check_config(config)


def test_a_poisson_mask_does_not_read_center_fraction():
  config = configs.load("demo", "quick")
  config.task.mask, config.task.center_fraction = "poisson", 0.0  # never read
  train.check_config(config)
  config.task.mask = "cartesian_random"
  with pytest.raises(train.ConfigError, match=r"center_fraction must lie in \(0, 1\), got 0.0"):
    train.check_config(config)


@pytest.mark.parametrize("section, field", [("train", "eval_batches"), ("hparams", "alpha"),
                                            (None, "losses")])
def test_a_config_built_without_a_field_names_it(section, field):
  # A bare KeyError or AttributeError from Python; the field named without
  # the quotes of Python's own message, and a config that an installed wheel
  # (which has no experiments/configs) can start from.
  config = configs.load("demo", "quick")
  del (config if section is None else config[section])[field]
  with pytest.raises(train.ConfigError, match=rf"the config lacks a field the library reads "
                     rf"\(\w*{field}\); start from experiments/configs/default.py's "
                     r"get_config\(\) \(in the repository\) or a shipped model's config "
                     r"\(hyperrecon_jax.pretrained.load\(NAME\)\[0\]\)"):
    train.check_config(config)


def test_a_segmenter_s_config_without_a_field_names_it():
  # The segmenter's check reads the data section and train.seed; it had its
  # own copy of the library's message, without the advice where to start from.
  from hyperrecon_jax.train import config_checks
  config = configs.load("demo", "quick")
  del config.data["image_size"]
  with pytest.raises(train.ConfigError, match=r"the config lacks a field the segmenter reads "
                                              r"\(image_size\); start from experiments/configs/"):
    config_checks.check_data_config(config)


def test_denoising_without_noise_is_refused():
  # σ = 0: the input is the ground truth, whose infinite PSNR left every
  # slice out of the statistics (NaN validation PSNR, a report that failed).
  config = configs.load("demo_denoise", "quick")
  config.task.sigma = 0.0
  with pytest.raises(train.ConfigError, match=r"config\.task\.sigma must be a finite number > 0"):
    train.check_config(config)
  config.task.sigma = 1e39  # ∞ in float32: every measurement non-finite
  with pytest.raises(train.ConfigError, match=r"config\.task\.sigma must be a finite number > 0 "
                                              r".*got 1e\+39"):
    train.check_config(config)
  config.task.sigma = 0.05
  train.check_config(config)
