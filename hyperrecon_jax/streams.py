"""Named random streams: every PRNG key and data seed a run derives from one seed.

A run's ``config.train.seed`` s gives each consumer its own stream, so that
training, validation and evaluation draw independent numbers and each can be
reproduced alone. The offsets are fixed: they define every number this
project has published (a checkpoint trained with seed s validates with
``key(s + 2)`` today and tomorrow).

| stream | what | value |
| --- | --- | --- |
| ``init`` | parameter initialization | ``key(s)`` |
| ``train`` | per-step λ sampling and measurement noise | ``key(s + 1)`` |
| ``validation`` | validation measurement noise (loop, loss scales) | ``key(s + 2)`` |
| ``evaluation`` | evaluation measurement noise (report, explorer) | ``key(s + 3)`` |
| ``replay`` | the train-split order of the DHS replay in a report | seed ``s + 4`` |

The shuffling of the training data uses ``s`` itself (`data.batches`).
"""

import numbers

OFFSETS = {"init": 0, "train": 1, "validation": 2, "evaluation": 3, "replay": 4}


def seed(config_or_seed, name: str) -> int:
  """The integer seed of stream ``name`` for a config (its ``train.seed``) or a seed."""
  if name not in OFFSETS:
    raise KeyError(f"unknown random stream {name!r}; known: {sorted(OFFSETS)}")
  base = (config_or_seed if isinstance(config_or_seed, numbers.Integral)
          else config_or_seed.train.seed)
  return int(base) + OFFSETS[name]


def key(config_or_seed, name: str):
  """The PRNG key of stream ``name`` (see the module docstring)."""
  import jax  # here, so that importing the report stays free of jax
  return jax.random.key(seed(config_or_seed, name))
