"""Tests of what a workdir's run is bound to (hyperrecon_jax.train.run_fields), on config dicts."""

import json

import configs

from hyperrecon_jax.train import run_fields


def _stored():
  """A config as a workdir stores it: JSON, whose tuples come back as lists."""
  return json.loads(configs.default().to_json())


def test_a_stored_config_is_compatible_with_the_config_it_was_written_from():
  # The stored losses and scales are lists, the live config's tuples: the
  # same values, not an incompatibility.
  assert run_fields.incompatibilities(_stored(), configs.default().to_dict()) == []


def test_another_seed_or_other_loss_scales_are_incompatibilities():
  # The seed fixes every random stream of the run, the scales what its model
  # means: a resume under other values would be neither run.
  old, new = _stored(), _stored()
  new["train"]["seed"] = old["train"]["seed"] + 1
  new["loss_scales"] = [1.0, 2.0]
  assert run_fields.incompatibilities(old, new) == [
      f"loss_scales: {tuple(old['loss_scales'])!r} in the workdir, (1.0, 2.0) now",
      f"train.seed: {old['train']['seed']!r} in the workdir, {new['train']['seed']!r} now"]


def test_the_unets_lambdas_are_named_with_the_flag_that_sets_them():
  # A stack rerun with another --lambdas named only hparams.baselines.
  old, new = _stored(), _stored()
  old["hparams"]["baselines"] = [[0.0], [0.5], [1.0]]
  new["hparams"]["baselines"] = [[0.0], [1.0]]
  assert run_fields.incompatibilities(old, new) == [
      "hparams.baselines (baselines.py --lambdas): ([0.0], [0.5], [1.0]) in the workdir, "
      "([0.0], [1.0]) now"]


def test_a_task_field_present_on_one_side_only_is_named():
  # A stored task without the field its operator reads (None) against one with it.
  old = {"task": {"name": "denoise"}}
  new = {"task": {"name": "denoise", "sigma": 0.1}}
  assert run_fields.incompatibilities(old, new) == ["task.sigma: None in the workdir, 0.1 now"]


def test_a_resumed_runs_note_leaves_out_every_machine_setting():
  old, new = _stored(), _stored()
  new["data"]["manual_dir"] = "/mnt/elsewhere/volumes"  # the folder moved with the disk
  new["train"]["lr"] = old["train"]["lr"] / 2
  assert run_fields.changed_fields(old, new) == [
      f"train.lr: {old['train']['lr']!r} → {new['train']['lr']!r}"]
