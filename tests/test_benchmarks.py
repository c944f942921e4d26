"""Tests for the benchmarks' own computations: profile_step's HLO descriptions and
ablate_step's patches form of a per-sample convolution (benchmarks/); and their
refusals of flag mistakes, as a user runs them."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")
sys.path.insert(0, BENCHMARKS)
import ablate_step  # noqa: E402
import profile_step  # noqa: E402

# A GPU module's shape, written by hand: a grouped cuDNN convolution (32 rows of
# 2 → 32 channels, the vmapped first layer) and a fusion wrapping one. Operands
# print by name, or with their shapes inline (cudnn-conv.39), as XLA versions
# differ; param_0 names a different array in each fused computation.
_HLO = """HloModule jit_train_step, entry_computation_layout={()->f32[]}

%fused_conv (param_0: bf16[1,256,256,64], param_1: bf16[3,3,2,1024]) -> bf16[1,256,256,1024] {
  %param_0 = bf16[1,256,256,64]{3,2,1,0} parameter(0)
  %param_1 = bf16[3,3,2,1024]{3,2,1,0} parameter(1)
  %cudnn-conv.1 = (bf16[1,256,256,1024]{3,2,1,0}, u8[0]{0}) custom-call(%param_0, %param_1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, feature_group_count=32, custom_call_target="__cudnn$convForward", backend_config={"k":{"a":1}}
  ROOT %get-tuple-element.1 = bf16[1,256,256,1024]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
}

%fused_relu (param_0: bf16[32,256,256,32]) -> bf16[32,256,256,32] {
  %param_0 = bf16[32,256,256,32]{3,2,1,0} parameter(0)
  %constant.1 = bf16[] constant(0)
  %broadcast.1 = bf16[32,256,256,32]{3,2,1,0} broadcast(%constant.1), dimensions={}
  ROOT %maximum.1 = bf16[32,256,256,32]{3,2,1,0} maximum(%param_0, %broadcast.1)
}

ENTRY %main.9 (p0: bf16[1,256,256,64], p1: bf16[3,3,2,1024], p2: bf16[32,256,256,32]) -> bf16[32,256,256,32] {
  %p0 = bf16[1,256,256,64]{3,2,1,0} parameter(0)
  %p1 = bf16[3,3,2,1024]{3,2,1,0} parameter(1)
  %p2 = bf16[32,256,256,32]{3,2,1,0} parameter(2)
  %cudnn-conv.39 = (bf16[1,256,256,1024]{3,2,1,0}, u8[0]{0}) custom-call(bf16[1,256,256,64]{3,2,1,0} %p0, bf16[3,3,2,1024]{3,2,1,0} %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, feature_group_count=32, custom_call_target="__cudnn$convForward", metadata={op_name="jit(train_step)/jvp(HyperUnet)/body/enc0_a/conv_general_dilated"}
  %fusion.7 = bf16[1,256,256,1024]{3,2,1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_conv
  ROOT %loop_maximum_fusion = bf16[32,256,256,32]{3,2,1,0} fusion(%p2), kind=kLoop, calls=%fused_relu, metadata={op_name="jit(train_step)/jvp(HyperUnet)/body/enc0_a/max"}
}
"""  # noqa: E501  (HLO instructions are one line each)


def test_describe_ops_names_shapes_groups_and_layer():
  # Each description carries what tells two convolutions apart: operand shapes
  # (2 input channels per group here), groups, target, and the layer's scope.
  got = profile_step.describe_ops(_HLO, ["cudnn-conv.39", "%fusion.7", "loop_maximum_fusion",
                                         "not-in-module.3"])
  assert set(got) == {"cudnn-conv.39", "%fusion.7", "loop_maximum_fusion"}
  conv = got["cudnn-conv.39"]
  assert conv.startswith("custom-call (bf16[1,256,256,1024]{3,2,1,0}, u8[0]{0})")
  for part in ("operands bf16[1,256,256,64], bf16[3,3,2,1024]", "window={size=3x3 pad=1_1x1_1}",
               "feature_group_count=32", 'custom_call_target="__cudnn$convForward"',
               "from jit(train_step)/jvp(HyperUnet)/body/enc0_a/conv_general_dilated"):
    assert part in conv, (part, conv)
  wrapped = got["%fusion.7"]  # the convolution inside the fusion says which it is
  assert "feature_group_count=32" in wrapped and "fuses custom-call×1" in wrapped
  assert wrapped.count("operands bf16[1,256,256,64], bf16[3,3,2,1024]") == 2, wrapped
  relu = got["loop_maximum_fusion"]
  assert relu.startswith("fusion bf16[32,256,256,32]")
  assert "fuses broadcast×1, maximum×1" in relu and "/enc0_a/max" in relu


def test_describe_ops_reads_a_compiled_program():
  # The text of a real compiled program (this backend's), names as it gives them.
  f = jax.jit(lambda x, k: jax.nn.relu(jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))))
  x, k = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
  hlo = f.lower(x, k).compile().as_text()
  # Every instruction: the convolution may stand alone or inside a fusion.
  names = [line.split("=")[0].split()[-1] for line in hlo.splitlines()
           if " = " in line and "parameter(" not in line]
  got = profile_step.describe_ops(hlo, names)
  assert any("operands f32[1,8,8,2], f32[3,3,2,4]" in d and "window={size=3x3" in d
             for d in got.values()), got


@pytest.mark.parametrize("c, o", [(2, 8), (3, 1)])
def test_patches_conv_is_the_per_sample_correlation(c, o):
  # y_b[h, w, o] = Σ_ijc xpad_b[h+i, w+j, c] k_b[i, j, c, o] + bias_b[o] ('SAME'),
  # against SciPy's correlation per row and channel pair; float32 sums of 9c
  # products of order-1 values: 1e-5 absolute.
  rng = np.random.default_rng(c)
  b, h = 2, 10
  x = rng.normal(size=(b, h, h, c)).astype(np.float32)
  k = rng.normal(size=(b, 3, 3, c, o)).astype(np.float32)
  bias = rng.normal(size=(b, o)).astype(np.float32)
  got = np.asarray(ablate_step.patches_conv(x, k, bias, jnp.float32))
  want = np.zeros((b, h, h, o), np.float32)
  for r in range(b):
    for j in range(o):
      want[r, :, :, j] = bias[r, j] + sum(
          signal.correlate2d(x[r, :, :, i], k[r, :, :, i, j], mode="same") for i in range(c))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  ablate_step.check_thin_forms()  # the benchmark's own check passes as well


@pytest.mark.slow
@pytest.mark.parametrize("script, args, pattern", [
    # absl's usage text of ~100 lines and status 1 hid the sentence.
    ("throughput.py", ["--quick", "--batch=4"], r"--quick sets its own tiny --batch: drop it"),
    ("throughput.py", ["--quick", "--sizes=M"], r"nothing is left of --sizes=M$"),
    # profile_step.py --quick profiles S alone, whatever --sizes names.
    ("profile_step.py", ["--quick", "--sizes=unet"], r"--quick measures S only: nothing is "
     r"left of --sizes=unet$"),
    # Found before any measurement runs, not after train_step's.
    ("throughput.py", ["--quick", "--benchmarks=train_step,gird"],
     r"--benchmarks: unknown 'gird'; use \['train_step', 'grid'"),
    ("ablate_step.py", ["--sizes=unet"], r"--sizes must name one HyperRecon \(S, M or L\), "
     r"got unet$"),
    # "grid needs an integer number of points ≥ 2, got 0": no grid was asked for.
    ("throughput.py", ["--sizes=stack0", "--benchmarks=train_step"],
     r"--sizes: stack0 stacks 0 Unets; a stack needs at least 2"),
    # A StatisticsError traceback, after the dataset was read.
    ("input_pipeline.py", ["--repeats=0"], r"--repeats=0: 0 is not a positive integer"),
    # An UnboundLocalError traceback after the first compile.
    ("bf16_conv.py", ["--size=16", "--batch=2", "--channels=4", "--iters=0"],
     r"--iters=0: 0 is not a positive integer"),
])
def test_a_flag_mistake_is_one_error_line_before_any_work(tmp_path, script, args, pattern):
  _assert_refused_before_any_work(_run(tmp_path, script, *args), pattern)


@pytest.mark.parametrize("name", ["iters", "repeats", "grid", "rounds", "steps"])
def test_a_timing_count_below_one_is_refused_by_its_flag(name):
  # throughput.py's --iters=0 and --grid=0, ablate_step.py's --rounds=0 and
  # profile_step.py's --steps=0 were tracebacks (UnboundLocalError, IndexError,
  # StatisticsError, ZeroDivisionError) after the first compile.
  from absl import flags
  flag = flags.FLAGS[name]
  with pytest.raises(flags.IllegalFlagValueError, match="positive integer"):
    flag.parse("0")
  assert flag.value == flag.default  # a refused value leaves the flag alone


def _run(tmp_path, script, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", HYPERRECON_DATA_DIR=str(tmp_path))
  return subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args], env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _assert_refused_before_any_work(proc, pattern):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr and "USAGE" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-3000:]
  # The module's docstring is the head of absl's usage text.
  assert "one JSON line" not in proc.stderr and "What each part" not in proc.stderr
  assert proc.stdout == ""  # no measurement line: nothing ran


DEMO = os.path.join(os.path.dirname(BENCHMARKS), "experiments", "configs", "demo.py") + ":quick"


@pytest.mark.slow
@pytest.mark.parametrize("text, override, pattern", [
    # A bare SyntaxError traceback, status 1.
    ("def get_config(:\n", None, r"^error: config file .*recipe\.py, line 1: invalid syntax$"),
    # "the config file : ValueError: boom": no file, no line.
    ("def get_config():\n  raise ValueError('boom')\n", None,
     r"^error: config file .*recipe\.py, line 2: ValueError: boom$"),
    # "bad --config override: nosuch".
    (None, "--recipe.train.nosuch=1", r"^error: bad override --recipe\.train\.nosuch: "
     r"config\.train has no field 'nosuch'; its fields: batch_size, checkpoint_every"),
])
def test_a_recipe_mistake_names_the_file_or_the_recipe_flag(tmp_path, text, override, pattern):
  recipe = tmp_path / "recipe.py"
  if text is not None:
    recipe.write_text(text)
  args = [f"--recipe={recipe if text is not None else DEMO}", "--benchmarks=train_step",
          *([override] if override else [])]
  _assert_refused_before_any_work(_run(tmp_path, "throughput.py", *args), pattern)


@pytest.mark.slow
@pytest.mark.parametrize("args, pattern", [
    # Each was a traceback (OSError, AttributeError, DataError).
    (["--config=/no/such/config.py"],
     r"^error: cannot load the config file /no/such/config\.py: No such file or directory$"),
    (["--config.train.nosuch=1"], r"^error: bad override --config\.train\.nosuch: "
     r"config\.train has no field 'nosuch'; its fields: batch_size"),
    (["--config.data.name=nifti"], r"^error: nifti: manual_dir '' is not a folder\."),
    # Measured at a size train.py refuses.
    (["--config.data.image_size=20"],
     r"^error: config\.data\.image_size must be a multiple of 8 .*, got 20$"),
])
def test_an_input_pipeline_config_mistake_is_one_error_line(tmp_path, args, pattern):
  _assert_refused_before_any_work(_run(tmp_path, "input_pipeline.py", *args), pattern)
  assert not any(tmp_path.iterdir())  # no dataset built


def test_every_raw_file_beside_performance_md_is_in_its_list():
  # The two files of 2026-12-07 (the side-by-side rounds and reconstruct.py's
  # memory) were missing from the page's list of raw lines.
  docs = os.path.join(os.path.dirname(BENCHMARKS), "docs")
  with open(os.path.join(docs, "performance.md"), encoding="utf-8") as f:
    head = f.read().split("\n## ", 1)[0]  # the list, above the first section
  raw = sorted(n for n in os.listdir(docs) if n.endswith(".jsonl"))
  assert raw and [n for n in raw if f"]({n})" not in head] == []
