"""Tests of hyperrecon_jax.interrupts: the scripts' SIGINT handler remembers the signal."""

import signal

import pytest

from hyperrecon_jax import interrupts


def test_the_handler_raises_and_remembers_until_taken():
  assert interrupts.take() == []
  with pytest.raises(KeyboardInterrupt):
    interrupts.handler(signal.SIGINT, None)
  try:  # swallowed, as a library might
    interrupts.handler(signal.SIGINT, None)
  except KeyboardInterrupt:
    pass
  assert interrupts.take() == [signal.SIGINT, signal.SIGINT]
  assert interrupts.take() == []
