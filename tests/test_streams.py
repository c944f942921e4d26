"""hyperrecon_jax.streams: the fixed offsets that every published number depends on."""

import jax
import ml_collections
import numpy as np
import pytest

from hyperrecon_jax import streams


@pytest.mark.parametrize("name, offset", [
    ("init", 0), ("train", 1), ("validation", 2), ("evaluation", 3), ("replay", 4)])
def test_each_stream_is_the_documented_offset_of_the_seed(name, offset):
  config = ml_collections.ConfigDict({"train": {"seed": 7}})
  assert streams.seed(config, name) == streams.seed(7, name) == 7 + offset
  assert streams.seed(np.int64(7), name) == 7 + offset  # a seed read from an array
  np.testing.assert_array_equal(jax.random.key_data(streams.key(config, name)),
                                jax.random.key_data(jax.random.key(7 + offset)))


def test_streams_are_distinct_and_unknown_names_are_refused():
  assert len({streams.seed(0, n) for n in streams.OFFSETS}) == len(streams.OFFSETS)
  with pytest.raises(KeyError, match="unknown random stream 'noise'"):
    streams.key(0, "noise")
