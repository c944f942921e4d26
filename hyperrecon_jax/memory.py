"""Memory: how much this process may still allocate, and sizes in words.

The checks that refuse work before it starts (an output too large for memory,
`hyperrecon_jax.outputs.check_memory`; a model too large to train,
`hyperrecon_jax.train.check_memory`) compare with `available_memory` and say
their sizes with `byte_size`.
"""

import os


def available_memory(meminfo: str = "/proc/meminfo",
                     cgroup: str = "/sys/fs/cgroup") -> int | None:
  """Bytes this process may still allocate, or None when unknown.

  The kernel's MemAvailable (free memory plus reclaimable caches), lowered to
  the room left under a cgroup (container) memory limit: cgroup v2's
  ``memory.max`` less ``memory.current``, or v1's ``memory.limit_in_bytes``
  less ``memory.usage_in_bytes``.

  Args:
    meminfo: the kernel's memory report.
    cgroup: the cgroup file system's root.

  Returns:
    Bytes, or None where neither the report nor ``sysconf`` says.
  """
  available = None
  try:
    with open(meminfo) as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  if available is None:
    try:
      available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
      return None
  for limit_file, usage_file in (("memory.max", "memory.current"),
                                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
    limit_file, usage_file = (os.path.join(cgroup, f) for f in (limit_file, usage_file))
    try:
      with open(limit_file) as f:
        limit = f.read().strip()
      with open(usage_file) as f:
        usage = int(f.read().strip())
    except (OSError, ValueError):
      continue
    if limit.isdigit():
      available = min(available, max(0, int(limit) - usage))
    break
  return available


def byte_size(n: float) -> str:
  """``n`` bytes in words: GiB from 1 GiB on, MiB from 1 MiB on, else KiB."""
  if n >= 2**30:
    return f"{n / 2**30:.1f} GiB"
  return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
