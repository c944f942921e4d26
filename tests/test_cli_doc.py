"""docs/cli.md against the scripts: each section's flag table names the script's own flags.

Every script of `experiments/` defines its flags with absl when it is
imported; one subprocess imports each in turn (removing the previous one's
flags, which share absl's global registry) and prints them. A flag in a
section's table that the script does not define is a stale doc; a flag the
script defines that its section never mentions is an undocumented one.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
CLI_MD = os.path.join(ROOT, "docs", "cli.md")
SCRIPTS = ("train.py", "baselines.py", "evaluate.py", "segmenter.py", "reconstruct.py",
           "explore.py", "export_pretrained.py", "summarize.py")

_LIST_FLAGS = r"""
import importlib.util, json, os, sys
from absl import flags
experiments = sys.argv[1]
LIBRARIES = {"absl", "chex", "jax", "jaxlib", "optax", "orbax", "etils", "flax", "grain",
             "tensorflow", "tensorflow_datasets", "tensorstore"}
sys.path.insert(0, experiments)
out, known = {}, set(flags.FLAGS)
for script in sys.argv[2:]:
  for name in set(flags.FLAGS) - known:
    delattr(flags.FLAGS, name)
  spec = importlib.util.spec_from_file_location("script_" + script[:-3],
                                                os.path.join(experiments, script))
  spec.loader.exec_module(importlib.util.module_from_spec(spec))
  # Flags that the libraries a script imports define (orbax's; chex's before
  # 0.1.90) are not its own.
  libraries = {name for module, fs in flags.FLAGS.flags_by_module_dict().items()
               if module.split(".")[0] in LIBRARIES for f in fs
               for name in (f.name, f.short_name)}
  out[script] = sorted(set(flags.FLAGS) - known - libraries)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def script_flags():
  """{script: the names of the flags it defines}."""
  proc = subprocess.run(
      [sys.executable, "-c", _LIST_FLAGS, os.path.join(ROOT, "experiments"), *SCRIPTS],
      capture_output=True, text=True, check=True, timeout=300)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _sections() -> dict[str, list[str]]:
  """{script: the lines of its ``## script.py`` section of cli.md}."""
  sections, current = {}, None
  with open(CLI_MD, encoding="utf-8") as f:
    for line in f:
      heading = re.match(r"## (\S+)", line)
      if heading:
        current = heading.group(1) if heading.group(1) in SCRIPTS else None
        if current:
          sections[current] = []
      elif current:
        sections[current].append(line)
  return sections


def _table_flags(lines) -> set[str]:
  """The flags named in the first cell of a section's table rows."""
  found = set()
  for line in lines:
    if line.startswith("| `--"):
      first = line.split(" | ")[0]
      found.update(re.findall(r"`--([a-z_]+)(?![\w.])", first))
  return found


def test_every_script_has_a_section():
  assert set(_sections()) == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_section_s_flags_are_the_script_s(script, script_flags):
  lines = _sections()[script]
  defined = set(script_flags[script])
  assert "config" in defined or "workdir" in defined or "workdirs" in defined
  stale = _table_flags(lines) - defined
  assert not stale, f"cli.md's {script} table names flags the script lacks: {sorted(stale)}"
  text = "".join(lines)
  missing = sorted(f for f in defined if not re.search(rf"--{f}(?![\w])", text))
  assert not missing, f"{script} defines flags its cli.md section never names: {missing}"


def test_help_lists_every_flag_of_the_script(script_flags):
  # absl's --help lists a command's key flags: those its own file defines.
  # The shared ones (--workdir, --pretrained, --step, the report's settings,
  # the multi-process flags) showed only under --helpfull.
  env = dict(os.environ, PYTHONPATH=ROOT)
  runs = {script: subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", script),
                                    "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env)
          for script in SCRIPTS}
  # absl itself ends the usage with status 1; a user who asked for it gets 0.
  full = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                         "--helpfull"], capture_output=True, text=True, env=env, timeout=120)
  assert full.returncode == 0 and "--workdir" in full.stdout, full.stderr
  for script, run in runs.items():
    text, _ = run.communicate(timeout=120)
    assert run.returncode == 0, f"{script} --help exited with {run.returncode}:\n{text}"
    shown = set(re.findall(r"^\s+--(?:\[no\])?([\w.]+):", text, re.MULTILINE))
    missing = sorted(set(script_flags[script]) - shown)
    assert not missing, f"{script} --help lacks {missing}:\n{text}"


def _github_anchors(path):
  """The anchors GitHub gives a markdown file's headings (outside code fences)."""
  anchors, seen, fenced = set(), {}, False
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("```"):
        fenced = not fenced
      heading = None if fenced else re.match(r"#+\s+(.*)", line)
      if heading:
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
  return anchors


def test_relative_links_of_the_readme_and_docs_reach_their_files_and_headings():
  docs = [os.path.join(ROOT, "README.md")] + [
      os.path.join(ROOT, "docs", name) for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
      if name.endswith(".md")]
  dead = []
  for doc in docs:
    with open(doc, encoding="utf-8") as f:
      text = f.read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"[a-z]+:", target):
        continue
      path, _, anchor = target.partition("#")
      resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
      if not os.path.exists(resolved):
        dead.append(f"{os.path.relpath(doc, ROOT)}: {target} (no such file)")
      elif anchor and anchor not in _github_anchors(resolved):
        dead.append(f"{os.path.relpath(doc, ROOT)}: {target} (no such heading)")
  assert not dead, dead
