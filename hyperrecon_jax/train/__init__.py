"""Training: configuration, train state, the jitted step, the loop.

``train_and_evaluate(config, workdir)`` is the whole run; the pieces are public
for tests, benchmarks and custom loops::

  model = build_model(config)
  state = create_state(config, model, jax.random.key(0))
  step = jax.jit(make_train_step(config, model, operator), donate_argnums=0)
  state, metrics = step(state, {"image": images}, jax.random.key(1))
"""

from hyperrecon_jax.train.config_checks import check_config
from hyperrecon_jax.train.configuration import ConfigError
from hyperrecon_jax.train.configuration import describe_model
from hyperrecon_jax.train.configuration import from_stored
from hyperrecon_jax.train.configuration import num_coeffs
from hyperrecon_jax.train.configuration import num_lambdas
from hyperrecon_jax.train.loop import Interrupted
from hyperrecon_jax.train.loop import NonFiniteLossError
from hyperrecon_jax.train.loop import train_and_evaluate
from hyperrecon_jax.train.memory_checks import check_memory
from hyperrecon_jax.train.memory_checks import check_step_memory
from hyperrecon_jax.train.run_fields import changed_fields
from hyperrecon_jax.train.state import TrainState
from hyperrecon_jax.train.state import build_model
from hyperrecon_jax.train.state import create_state
from hyperrecon_jax.train.state import learning_rate
from hyperrecon_jax.train.state import memory_floor
from hyperrecon_jax.train.state import stack_lambdas
from hyperrecon_jax.train.state import unstack
from hyperrecon_jax.train.step import make_train_step
from hyperrecon_jax.train.step import sample_coefficients
from hyperrecon_jax.train.step import validation_lambdas
from hyperrecon_jax.train.trained import check_data_folder
from hyperrecon_jax.train.trained import load_config
from hyperrecon_jax.train.trained import load_trained

__all__ = [
    "ConfigError", "Interrupted", "NonFiniteLossError", "TrainState", "build_model",
    "changed_fields", "check_config", "check_data_folder", "check_memory", "check_step_memory",
    "create_state", "describe_model", "from_stored", "learning_rate",
    "load_config", "load_trained", "make_train_step", "memory_floor", "num_coeffs",
    "num_lambdas", "sample_coefficients", "stack_lambdas", "train_and_evaluate", "unstack",
    "validation_lambdas",
]
