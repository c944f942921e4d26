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


def test_last_is_the_latest_signal_not_yet_taken():
  assert interrupts.take() == [] and interrupts.last() is None
  for signum in (signal.SIGINT, signal.SIGTERM):
    with pytest.raises(KeyboardInterrupt):
      interrupts.handler(signum, None)
  assert interrupts.last() == signal.SIGTERM  # what a swallowed interrupt is sent again as
  assert interrupts.take() == [signal.SIGINT, signal.SIGTERM]
  assert interrupts.last() is None
