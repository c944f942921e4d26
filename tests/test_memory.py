"""hyperrecon_jax.memory: the memory left to the process, from files written here."""

import pytest

from hyperrecon_jax import memory


def _meminfo(tmp_path, kib):
  path = tmp_path / "meminfo"
  path.write_text(f"MemTotal:       99999999 kB\nMemFree:  1 kB\nMemAvailable:   {kib} kB\n")
  return str(path)


def _cgroup(tmp_path, files):
  root = tmp_path / "cgroup"
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  return str(root)


def test_available_memory_is_memavailable_lowered_to_the_cgroup_s_room(tmp_path):
  meminfo = _meminfo(tmp_path, 1000)  # 1,024,000 bytes
  no_cgroup = str(tmp_path / "none")
  assert memory.available_memory(meminfo, no_cgroup) == 1_024_000
  # cgroup v2: 500,000 allowed, 100,000 in use.
  v2 = _cgroup(tmp_path / "v2", {"memory.max": "500000\n", "memory.current": "100000\n"})
  assert memory.available_memory(meminfo, v2) == 400_000
  # No limit ("max"), or a limit above what the machine has: MemAvailable.
  unlimited = _cgroup(tmp_path / "max", {"memory.max": "max\n", "memory.current": "5\n"})
  assert memory.available_memory(meminfo, unlimited) == 1_024_000
  roomy = _cgroup(tmp_path / "roomy", {"memory.max": "9000000", "memory.current": "0"})
  assert memory.available_memory(meminfo, roomy) == 1_024_000
  # cgroup v1, and a group already over its limit.
  v1 = _cgroup(tmp_path / "v1", {"memory/memory.limit_in_bytes": "300000",
                                 "memory/memory.usage_in_bytes": "400000"})
  assert memory.available_memory(meminfo, v1) == 0


def test_without_memavailable_the_system_s_free_pages_count(tmp_path, monkeypatch):
  (tmp_path / "meminfo").write_text("MemTotal: 5 kB\n")
  pages = {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}
  monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
  assert memory.available_memory(str(tmp_path / "meminfo"), str(tmp_path)) == 3 * 4096

  def unknown(name):
    raise ValueError(name)

  monkeypatch.setattr(memory.os, "sysconf", unknown)
  assert memory.available_memory(str(tmp_path / "missing"), str(tmp_path)) is None


@pytest.mark.parametrize("n, words", [
    (0, "0 KiB"), (1536, "2 KiB"), (2**20 - 1, "1024 KiB"), (2**20, "1 MiB"),
    (int(2.5 * 2**20), "2 MiB"), (2**30 - 1, "1024 MiB"), (2**30, "1.0 GiB"),
    (int(1.25 * 2**30), "1.2 GiB"),
])
def test_byte_size_says_a_size_in_its_largest_unit_from_one(n, words):
  assert memory.byte_size(n) == words
