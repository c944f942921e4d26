"""Tests of hyperrecon_jax.compilation: the XLA options of the inference and training programs."""

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import compilation


@functools.cache
def _known(option: str, value: str) -> bool:
  """Whether this jaxlib's CPU compiler accepts ``option=value``."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(np.float32(0)).compile()
  except RuntimeError:
    return False
  return True


def _needs(*options):
  """Skips a test of what the options do where this jaxlib lacks them (older ones).

  What the code does there, leave them out, is
  `test_an_option_this_jaxlib_does_not_know_is_left_out`. With
  ``HYPERRECON_REQUIRE_COMPILE_OPTIONS=1`` (CI, on the newest jax) a missing
  option fails instead: XLA renaming one would otherwise drop the CPU gains
  unseen.
  """
  def mark(test):
    @functools.wraps(test)
    def checked(*args, **kwargs):
      lacking = [o for o, v in options if not _known(o, v)]
      if lacking:
        message = f"the XLA of jax {jax.__version__} has no {', '.join(lacking)}"
        if os.environ.get("HYPERRECON_REQUIRE_COMPILE_OPTIONS") == "1":
          pytest.fail(f"HYPERRECON_REQUIRE_COMPILE_OPTIONS=1 but {message}")
        pytest.skip(message)
      return test(*args, **kwargs)
    return checked
  return mark


YNN = (compilation.YNN_FUSION_OPTION, compilation.YNN_REDUCTIONS)
SCHEDULER = (compilation.SCHEDULER_OPTION, compilation.MEMORY_OPTIMIZED)


@pytest.fixture
def fresh_options(monkeypatch):
  """The options recomputed inside the test and again after it."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  compilation.inference_options.cache_clear()
  compilation.training_options.cache_clear()
  yield
  compilation.inference_options.cache_clear()
  compilation.training_options.cache_clear()


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _inputs():
  rng = np.random.default_rng(0)
  # 32 output channels: smaller convolutions XLA keeps for itself anyway.
  return (rng.standard_normal((2, 8, 8, 16)).astype(np.float32),
          rng.standard_normal((3, 3, 16, 32)).astype(np.float32))


@_needs(YNN)
def test_on_the_cpu_no_convolution_goes_to_ynnpack(fresh_options):
  options = compilation.inference_options()
  assert options == {compilation.YNN_FUSION_OPTION: ""}
  hlo = jax.jit(_conv, compiler_options=options).lower(*_inputs()).compile().as_text()
  assert "convolution(" in hlo
  assert "ynn_fusion" not in hlo


def test_the_users_xla_flags_win(fresh_options, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{compilation.YNN_FUSION_OPTION}=LIBRARY_FUSION_TYPE_DOT")
  assert compilation.inference_options() == {}


def test_an_option_this_jaxlib_does_not_know_is_left_out(fresh_options, monkeypatch):
  monkeypatch.setattr(compilation, "YNN_FUSION_OPTION", "xla_cpu_no_such_option_here")
  assert compilation.inference_options() == {}


def test_inference_jit_computes_the_convolution(fresh_options):
  x, w = _inputs()
  got = np.asarray(compilation.inference_jit(_conv)(x, w), np.float64)
  want = _numpy_conv(x, w)
  # Any order of summing the 144 products of one output in float32 is within
  # 144·eps·Σ|x·w| of the exact sum (the classic bound for recursive
  # summation, n·u·Σ|terms|); the backends differ only in that order.
  bound = 144 * np.finfo(np.float32).eps * _numpy_conv(np.abs(x), np.abs(w))
  assert np.all(np.abs(got - want) <= bound)


def _numpy_conv(x, w):
  """'SAME' NHWC × HWIO convolution (cross-correlation) in float64."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = x.shape[1] - 2, x.shape[2] - 2
  out = np.zeros((x.shape[0], h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += np.einsum("bhwc,co->bhwo", x[:, i:i + h, j:j + wd], np.asarray(w[i, j], np.float64))
  return out


def test_inference_jit_looks_the_options_up_once_at_the_first_call(monkeypatch):
  calls = []

  def options():
    calls.append(1)
    return {}

  monkeypatch.setattr(compilation, "inference_options", options)

  @compilation.inference_jit(static_argnames="power")
  def f(x, *, power):
    return x ** power

  assert calls == []  # decorating (importing a module) compiles nothing
  assert float(f(jnp.float32(3), power=2)) == 9.0
  assert float(f(jnp.float32(2), power=3)) == 8.0
  assert calls == [1]
  assert f.__name__ == "f"


def _ynn_computations(hlo: str) -> str:
  """The bodies of the YNNPACK fusions of compiled HLO text, joined.

  A YNNPACK fusion is a ``fusion`` instruction whose backend config says
  ``__ynn_fusion``; its body is the computation it ``calls``.
  """
  called = set(re.findall(r"calls=(%[\w.-]+)[^\n]*__ynn_fusion", hlo))
  return "\n\n".join(c for c in hlo.split("\n\n") if c.strip().split(" ", 1)[0] in called)


@_needs(YNN)
def test_training_steps_give_only_the_reductions_to_ynnpack(fresh_options):
  options = compilation.training_options()
  assert options[compilation.YNN_FUSION_OPTION] == "LIBRARY_FUSION_TYPE_REDUCE"
  x, w = _inputs()
  # BatchNorm's pattern: the convolution feeds a per-channel sum and more.
  centred = lambda x, w: (lambda y: y - jnp.mean(y, axis=(0, 1, 2)))(_conv(x, w))
  hlo = jax.jit(centred, compiler_options=options).lower(x, w).compile().as_text()
  ynn = _ynn_computations(hlo)
  assert "reduce(" in ynn  # the per-channel sum goes to YNNPACK
  assert "convolution(" in hlo and "convolution(" not in ynn  # the convolution stays with XLA
  # The check itself: without options YNNPACK takes the convolution too.
  default = jax.jit(centred).lower(x, w).compile().as_text()
  assert "convolution(" in _ynn_computations(default)


def _deep_gradient():
  """The gradient of a six-convolution chain whose every activation feeds the loss."""
  def loss(kernels, x):
    total = 0.0
    for kernel in kernels:
      x = jax.nn.relu(_conv(x, kernel))
      total += jnp.mean(x ** 2)
    return total

  rng = np.random.default_rng(0)
  kernels = [rng.standard_normal((3, 3, 8, 8)).astype(np.float32) for _ in range(6)]
  return jax.grad(loss), (kernels, rng.standard_normal((4, 32, 32, 8)).astype(np.float32))


@_needs(YNN, SCHEDULER)
def test_training_steps_are_scheduled_for_less_memory(fresh_options):
  options = compilation.training_options()
  assert options[compilation.SCHEDULER_OPTION] == compilation.MEMORY_OPTIMIZED
  grad, args = _deep_gradient()
  default = {compilation.YNN_FUSION_OPTION: compilation.YNN_REDUCTIONS}
  compiled = {name: jax.jit(grad, compiler_options=o).lower(*args).compile()
              for name, o in [("default", default), ("training", options)]}
  temp = {name: c.memory_analysis().temp_size_in_bytes for name, c in compiled.items()}
  # XLA's default order keeps more of the backward pass's buffers alive at
  # once (1.75 against 1.5 MiB with jaxlib 0.10); a tie would mean the option
  # no longer does what the training steps use it for.
  assert temp["training"] < temp["default"]
  # Only the order changes: the same operations give the same bits.
  got, want = compiled["training"](*args), compiled["default"](*args)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@_needs(YNN, SCHEDULER)
def test_the_training_options_step_aside_one_by_one(fresh_options, monkeypatch):
  monkeypatch.setattr(compilation, "YNN_REDUCTIONS", "LIBRARY_FUSION_TYPE_NO_SUCH_TYPE")
  assert compilation.training_options() == {
      compilation.SCHEDULER_OPTION: compilation.MEMORY_OPTIMIZED}
  compilation.training_options.cache_clear()
  monkeypatch.setenv("XLA_FLAGS", f"--{compilation.YNN_FUSION_OPTION}= "
                                  f"--{compilation.SCHEDULER_OPTION}=CPU_SCHEDULER_TYPE_DEFAULT")
  monkeypatch.setattr(compilation, "YNN_REDUCTIONS", "LIBRARY_FUSION_TYPE_REDUCE")
  assert compilation.training_options() == {}
  compilation.training_options.cache_clear()
  monkeypatch.setattr(compilation, "SCHEDULER_OPTION", "xla_cpu_no_such_option_here")
  monkeypatch.setenv("XLA_FLAGS", "")
  assert compilation.training_options() == {
      compilation.YNN_FUSION_OPTION: compilation.YNN_REDUCTIONS}
  # A flag whose text holds an option's name does not set it: a dump folder
  # named after the scheduler dropped the memory-optimized schedule.
  compilation.training_options.cache_clear()
  monkeypatch.setattr(compilation, "SCHEDULER_OPTION", "xla_cpu_scheduler_type")
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/xla_cpu_scheduler_type_dumps")
  assert compilation.training_options() == {
      compilation.YNN_FUSION_OPTION: compilation.YNN_REDUCTIONS,
      compilation.SCHEDULER_OPTION: compilation.MEMORY_OPTIMIZED}
