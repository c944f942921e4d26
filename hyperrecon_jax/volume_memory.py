"""The memory a reconstruction of a volume takes, refused before any model work.

`hyperrecon_jax.reconstruct.volume` holds every output volume until
`hyperrecon_jax.outputs.write` writes them, and the model's work beside them
(`working_memory`): its slices on the model's grid, one batch through the Unet,
compiling the program. `check_memory` refuses a reconstruction whose count
exceeds `memory.MEMORY_FRACTION` of the memory available (`memory.available_memory`),
naming how many λ would fit. `benchmarks/reconstruct_memory.py` measures the
count against what the process grows by.
"""

import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import memory
from hyperrecon_jax import outputs
from hyperrecon_jax.scans import Scan

# What `reconstruct.volume` holds beside the output volumes (`working_memory`):
# - float32 values per slice and pixel of the model's grid: the slices on the
#   device (1), their zero-filled input (2), one λ's reconstructions (1), and
#   the input's magnitude with the squares it is summed from (3);
MODEL_GRID_PLANES = 7
# - feature maps of the model's width at full resolution that one row of a
#   batch holds at once in the Unet: a skip connection, a layer's input and
#   its output;
FULL_RESOLUTION_MAPS = 3
# - compiling and running the program, and what the process keeps of it: the
#   first call of the 64×64 model on a 256×256×180 volume at one λ grew the
#   process by 288–371 MiB over three runs (VmHWM above VmRSS), of which
#   about 110 MiB are its arrays by their shapes; a second call in the same
#   process, 66 MiB.
COMPILE_BYTES = 512 * 2**20


def working_memory(config, scan: Scan, batch: int | None = None) -> int:
  """Bytes `reconstruct.volume` needs beside the output volumes (`check_memory`).

  ``MODEL_GRID_PLANES · S · size² · 4 + rows · FULL_RESOLUTION_MAPS · size² ·
  channels · itemsize + COMPILE_BYTES`` for S slices, ``rows`` slices per
  call. It bounds what the process grows by above its size at the check,
  `outputs.write` included (the output volumes are not counted here): with
  them, `check_memory` counted 1.15× (the 64×64 model, a 512×512×180
  volume, two λ and the input saved) to 2.4× (the same model, 256×256×180,
  one λ) what the process grew by (`benchmarks/reconstruct_memory.py`,
  docs/performance.md).

  Args:
    config: the model's config.
    scan: from `scans.read_input`.
    batch: slices per call (default ``config.eval.chunk``).

  Returns:
    The bytes.
  """
  size = int(config.data.image_size)
  rows = max(1, min(int(batch or config.eval.chunk), len(scan.slices)))
  planes = MODEL_GRID_PLANES * len(scan.slices) * size * size * 4
  maps = (rows * FULL_RESOLUTION_MAPS * size * size * int(config.model.channels)
          * jnp.dtype(config.model.dtype).itemsize)
  return planes + maps + COMPILE_BYTES


def check_memory(scan: Scan, num_lambdas: int, dtype="float32", *, save_input: bool = False,
                 working: int = 0, available: int | None = None) -> int:
  """Refuses an output that would not fit in memory, before any model work.

  The reconstructions are held in memory until written: ``num_lambdas``
  volumes of the output's grid (`Scan.output_shape`) in `outputs.storage_dtype`,
  the zero-filled input if saved, and two float32 volumes (one being put back,
  one being written); beside them, ``working`` bytes of the model's work.
  That must fit in `memory.MEMORY_FRACTION` of the memory available.

  Args:
    scan: the `Scan`.
    num_lambdas: the number of λ values.
    dtype: the output's value type (`outputs.output_dtype`).
    save_input: whether the zero-filled input is kept too.
    working: bytes the model's work needs beside the volumes
      (`working_memory`).
    available: bytes available (default: `memory.available_memory`; no check when
      unknown).

  Returns:
    The bytes needed.

  Raises:
    InputError: the size, the memory, and how many λ values fit.
  """
  voxels = int(np.prod(scan.output_shape))
  itemsize = outputs.storage_dtype(dtype).itemsize
  per_volume = voxels * itemsize
  fixed = 2 * voxels * 4 + int(working)
  need = (num_lambdas + int(save_input)) * per_volume + fixed
  available = memory.available_memory() if available is None else available
  if available is None:
    return need
  allowed = int(memory.MEMORY_FRACTION * available)
  if need <= allowed:
    return need
  fit = (allowed - fixed) // per_volume - int(save_input)
  grid = "×".join(str(n) for n in scan.output_shape)
  how = (f"give at most {fit:,} λ value{'s' if fit > 1 else ''} per run" if fit >= 1
         else "even one λ does not fit: free memory first")
  if scan.kind == "h5" and itemsize > 2:
    how += " or --dtype=float16"
  volumes = f"{num_lambdas:,} λ value(s)" + (" and the zero-filled input" if save_input else "")
  raise errors.InputError(
      f"{scan.path}: {volumes} × {grid} voxels × {itemsize} bytes, two float32 volumes being "
      f"put back and written, and {memory.byte_size(int(working))} of the model's work need "
      f"{memory.byte_size(need)} of memory, more than the {memory.byte_size(allowed)} allowed "
      f"({memory.MEMORY_FRACTION:.0%} of the {memory.byte_size(available)} available); {how}")
