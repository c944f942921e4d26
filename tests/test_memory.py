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


def _self_cgroup(tmp_path, text):
  path = tmp_path / "proc" / "self" / "cgroup"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def test_available_memory_is_memavailable_lowered_to_the_cgroup_s_room(tmp_path):
  meminfo = _meminfo(tmp_path, 1000)  # 1,024,000 bytes
  at_root = str(tmp_path / "no_proc")  # no /proc/self/cgroup: the root's limit counts

  def available(cgroup):
    return memory.available_memory(meminfo, cgroup, at_root)

  assert available(str(tmp_path / "none")) == 1_024_000
  # cgroup v2: 500,000 allowed, 100,000 in use.
  v2 = _cgroup(tmp_path / "v2", {"memory.max": "500000\n", "memory.current": "100000\n"})
  assert available(v2) == 400_000
  # No limit ("max"), or a limit above what the machine has: MemAvailable.
  unlimited = _cgroup(tmp_path / "max", {"memory.max": "max\n", "memory.current": "5\n"})
  assert available(unlimited) == 1_024_000
  roomy = _cgroup(tmp_path / "roomy", {"memory.max": "9000000", "memory.current": "0"})
  assert available(roomy) == 1_024_000
  # cgroup v1, and a group already over its limit.
  v1 = _cgroup(tmp_path / "v1", {"memory/memory.limit_in_bytes": "300000",
                                 "memory/memory.usage_in_bytes": "400000"})
  assert available(v1) == 0


def test_the_limits_of_the_process_s_own_cgroup_and_its_ancestors_count(tmp_path):
  meminfo = _meminfo(tmp_path, 1000)  # 1,024,000 bytes
  # cgroup v2: the root has no limit (as the kernel's root cgroup), the
  # parent allows 800,000 with 300,000 in use (room 500,000), the process's
  # own group has none ("max").
  v2 = _cgroup(tmp_path / "v2", {
      "user.slice/memory.max": "800000\n", "user.slice/memory.current": "300000\n",
      "user.slice/job.scope/memory.max": "max\n",
      "user.slice/job.scope/memory.current": "100000\n"})
  in_job = _self_cgroup(tmp_path / "v2", "0::/user.slice/job.scope\n")
  assert memory.available_memory(meminfo, v2, in_job) == 500_000
  # A tighter limit on the process's own group wins: 450,000 − 100,000.
  (tmp_path / "v2/cgroup/user.slice/job.scope/memory.max").write_text("450000\n")
  assert memory.available_memory(meminfo, v2, in_job) == 350_000
  # A sibling's limit does not count.
  elsewhere = _self_cgroup(tmp_path / "other", "0::/system.slice\n")
  assert memory.available_memory(meminfo, v2, elsewhere) == 1_024_000

  # cgroup v1 (hybrid, as Docker's older hosts): the memory controller's line
  # names the group; its root is unlimited (the kernel's largest page-aligned
  # value), the group allows 600,000 with 200,000 in use.
  v1 = _cgroup(tmp_path / "v1", {
      "memory/memory.limit_in_bytes": "9223372036854771712",
      "memory/memory.usage_in_bytes": "3339685888",
      "memory/process_api/b20c/memory.limit_in_bytes": "600000",
      "memory/process_api/b20c/memory.usage_in_bytes": "200000"})
  hybrid = _self_cgroup(tmp_path / "v1", "5:devices:/\n4:cpu,memory:/process_api/b20c\n0::/\n")
  assert memory.available_memory(meminfo, v1, hybrid) == 400_000

  # A container that sees its own cgroup as the root: /proc names the host's
  # path, the tree has only the root's files (700,000 − 100,000).
  ns = _cgroup(tmp_path / "ns", {"memory.max": "700000", "memory.current": "100000"})
  for line in ("0::/docker/4f1e\n", "0::/../../docker/4f1e\n"):
    seen = _self_cgroup(tmp_path / "ns", line)
    assert memory.available_memory(meminfo, ns, seen) == 600_000


def test_without_memavailable_the_system_s_free_pages_count(tmp_path, monkeypatch):
  (tmp_path / "meminfo").write_text("MemTotal: 5 kB\n")
  pages = {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}
  monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
  assert memory.available_memory(str(tmp_path / "meminfo"), str(tmp_path),
                                 str(tmp_path / "no_proc")) == 3 * 4096

  def unknown(name):
    raise ValueError(name)

  monkeypatch.setattr(memory.os, "sysconf", unknown)
  assert memory.available_memory(str(tmp_path / "missing"), str(tmp_path),
                                 str(tmp_path / "no_proc")) is None


@pytest.mark.parametrize("n, words", [
    (0, "0 KiB"), (1536, "2 KiB"), (2**20 - 1, "1024 KiB"), (2**20, "1 MiB"),
    (int(2.5 * 2**20), "2 MiB"), (2**30 - 1, "1024 MiB"), (2**30, "1.0 GiB"),
    (int(1.25 * 2**30), "1.2 GiB"),
])
def test_byte_size_says_a_size_in_its_largest_unit_from_one(n, words):
  assert memory.byte_size(n) == words
