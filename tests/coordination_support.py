"""A stand-in for the key-value store of JAX's coordination service, on a dict.

For tests of what the processes of a run tell each other through it
(`hyperrecon_jax.train.sharded.coordination_client`) without starting them.
"""


class KeyValueStore:
  """The key-value calls of JAX's distributed client that the project makes."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key, value):
    if key in self.values:
      raise RuntimeError(f"ALREADY_EXISTS: {key}")  # as the service: a key is set once
    self.values[key] = value

  def key_value_dir_get(self, prefix):
    return [(k, v) for k, v in sorted(self.values.items()) if k.startswith(prefix)]

  def blocking_key_value_get(self, key, timeout_in_ms):
    del timeout_in_ms  # every key a test reads is set before
    return self.values[key]
