"""Memory: how much this process may still allocate, and sizes in words.

The checks that refuse work before it starts (a volume too large to read,
`hyperrecon_jax.scans.check_read_memory`; an output too large for memory,
`hyperrecon_jax.volume_memory.check_memory`; a model too large to train,
`hyperrecon_jax.train.check_memory`) compare with `available_memory` and say
their sizes with `byte_size`; the first two allow `MEMORY_FRACTION` of it.
"""

import os

# A check that refuses work counts it against this fraction of the memory
# available: the rest is a margin for what a count leaves out (the libraries'
# own buffers, the allocator's slack).
MEMORY_FRACTION = 0.8


def available_memory(meminfo: str = "/proc/meminfo",
                     cgroup: str = "/sys/fs/cgroup",
                     self_cgroup: str = "/proc/self/cgroup") -> int | None:
  """Bytes this process may still allocate, or None when unknown.

  The kernel's MemAvailable (free memory plus reclaimable caches), lowered to
  the room left under the cgroup (container) memory limits of this process:
  at its own cgroup and at every ancestor up to the root, the least room
  wins, since a parent's limit binds its children. The room is cgroup v2's
  ``memory.max`` less ``memory.current``, or v1's ``memory.limit_in_bytes``
  less ``memory.usage_in_bytes`` (in the ``memory`` controller's tree). The
  process's cgroup comes from ``self_cgroup``; where it is unreadable, or
  names a folder that the mounted tree lacks (a container that sees its own
  cgroup as the root), the folders that exist on the way to the root count.

  Args:
    meminfo: the kernel's memory report.
    cgroup: the cgroup file system's root.
    self_cgroup: the process's cgroup membership (``/proc/self/cgroup``).

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
  v2_path, v1_path = _cgroup_paths(self_cgroup)
  for root, path, limit_file, usage_file in (
      (cgroup, v2_path, "memory.max", "memory.current"),
      (os.path.join(cgroup, "memory"), v1_path, "memory.limit_in_bytes",
       "memory.usage_in_bytes")):
    for folder in _ancestors(root, path):
      room = _room(os.path.join(folder, limit_file), os.path.join(folder, usage_file))
      if room is not None:
        available = min(available, room)
  return available


def _cgroup_paths(self_cgroup: str) -> tuple[list[str], list[str]]:
  """The process's cgroup v2 and v1 ``memory`` paths, as lists of folder names.

  Each is empty (the root) where ``self_cgroup`` is unreadable or has no such
  line, or where the path leaves the root (``..``: a cgroup outside this
  cgroup namespace, which the mounted tree does not show).
  """
  v2, v1 = "/", "/"
  try:
    with open(self_cgroup) as f:
      lines = f.read().splitlines()
  except OSError:
    lines = []
  for line in lines:
    fields = line.split(":", 2)
    if len(fields) != 3:
      continue
    hierarchy, controllers, path = fields
    if hierarchy == "0" and not controllers:
      v2 = path
    elif "memory" in controllers.split(","):
      v1 = path
  return _names(v2), _names(v1)


def _names(path: str) -> list[str]:
  names = path.split("/")
  return [] if ".." in names else [n for n in names if n not in ("", ".")]


def _ancestors(root: str, names: list[str]) -> list[str]:
  """``root/names…`` and each of its parents down to ``root`` itself."""
  return [os.path.join(root, *names[:n]) for n in range(len(names), -1, -1)]


def _room(limit_file: str, usage_file: str) -> int | None:
  """Limit less usage (at least 0); None without a limit or without the files."""
  try:
    with open(limit_file) as f:
      limit = f.read().strip()
    with open(usage_file) as f:
      usage = int(f.read().strip())
  except (OSError, ValueError):
    return None
  return max(0, int(limit) - usage) if limit.isdigit() else None


def byte_size(n: float) -> str:
  """``n`` bytes in words: GiB from 1 GiB on, MiB from 1 MiB on, else KiB."""
  if n >= 2**30:
    return f"{n / 2**30:.1f} GiB"
  return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
