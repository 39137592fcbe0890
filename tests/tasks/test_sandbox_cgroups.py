"""A cgroup per sandbox: finding the runner's groups in each layout, the limits written, and on this
machine the whole sandbox (bwrap and its init included) inside its groups and nothing left after."""

import os
import subprocess
import sys
import threading
import time

import pytest

from mascompare.tasks import sandbox as sandbox_module
from mascompare.tasks.sandbox import Limits, Sandbox, run_python
from mascompare.tasks.sandbox_cgroups import Layout, SandboxGroup, discover

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_GROUPS = "9:name=systemd:/\n8:pids:/\n4:memory:/jobs/one\n1:cpu:/\n0::/\n"
V2_MOUNTS = "29 23 0:26 /runner-ns {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_GROUPS = "0::/runner-ns/session\n"


def fake_tree(tmp_path, mounts: str, groups: str, directories: list[str]):
    for directory in directories:
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    (tmp_path / "mountinfo").write_text(mounts.format(root=tmp_path))
    (tmp_path / "cgroup").write_text(groups)
    return str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")


def test_the_hybrid_layout_nests_under_the_runners_group_in_each_hierarchy(tmp_path):
    files = fake_tree(tmp_path, HYBRID_MOUNTS, HYBRID_GROUPS, ["cpu", "memory/jobs/one", "pids", "unified"])
    layout = discover(*files)
    assert layout.v1 == {"cpu": f"{tmp_path}/cpu", "memory": f"{tmp_path}/memory/jobs/one", "pids": f"{tmp_path}/pids"}
    assert layout.v2 == f"{tmp_path}/unified" and layout.v2_controllers == frozenset()
    assert layout.describe() == "hybrid (cgroup v1 cpu, memory, pids and cgroup v2)"
    group = SandboxGroup.create(layout, "box", 256 * 2**20, 16)
    assert (tmp_path / "memory/jobs/one/box/memory.limit_in_bytes").read_text() == str(256 * 2**20)
    assert (tmp_path / "memory/jobs/one/box/memory.memsw.limit_in_bytes").read_text() == str(256 * 2**20)
    assert (tmp_path / "pids/box/pids.max").read_text() == "16"
    assert (tmp_path / "cpu/box/cpu.cfs_quota_us").read_text() == "100000"
    assert group.mechanisms == {"memory": "cgroup v1 memory.limit_in_bytes", "pids": "cgroup v1 pids.max",
                                "cpu": "cgroup v1 cpu.cfs_quota_us (one CPU)",
                                "kill": "SIGKILL to each process the groups list"}  # a fake tree has no cgroup.kill
    assert len(group.procs_files) == 4 and group.v2 == f"{tmp_path}/unified/box"


def test_pure_v2_uses_one_group_with_the_controllers_the_runner_may_hand_down(tmp_path):
    files = fake_tree(tmp_path, V2_MOUNTS, V2_GROUPS, ["session"])
    (tmp_path / "session/cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "session/cgroup.subtree_control").write_text("memory\n")
    layout = discover(*files)  # a mount of /runner-ns shows the group /runner-ns/session at <root>/session
    assert layout.v2 == f"{tmp_path}/session" and layout.v1 == {} and layout.describe() == "cgroup v2"
    assert layout.v2_controllers == {"memory", "pids", "cpu"}  # cpu and pids enabled on the way
    group = SandboxGroup.create(layout, "box", 2**30, 64)
    box = tmp_path / "session/box"
    assert [(box / name).read_text() for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max")] == \
        [str(2**30), "0", "64", "100000 100000"]
    assert group.mechanisms["memory"] == "cgroup v2 memory.max" and group.procs_files == [str(box / "cgroup.procs")]


def test_without_any_cgroup_mount_there_is_no_group(tmp_path):
    files = fake_tree(tmp_path, "22 1 0:21 / /proc rw - proc proc rw\n", "0::/\n", [])
    layout = discover(*files)
    assert layout == Layout() and layout.describe() == "none"
    assert SandboxGroup.create(layout, "box", 2**30, 64) is None


layout_here = discover()
needs_cgroups = pytest.mark.skipif(not (layout_here.v1 or layout_here.v2) or os.geteuid() != 0,
                                   reason="needs writable cgroups (root, with cgroups mounted)")


@needs_cgroups
def test_a_killed_group_is_empty_and_removable():
    group = SandboxGroup.create(layout_here, f"mascompare-test-{os.getpid()}", 256 * 2**20, 8)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for path in group.procs_files:
            with open(path, "w") as file:
                file.write(str(sleeper.pid))
        assert group.processes() == {sleeper.pid}
        assert group.kill() == 1 and group.processes() == set()
        assert sleeper.wait(timeout=10) == -9
    finally:
        sleeper.kill()
        group.remove()
    assert not any(os.path.exists(directory) for directory in group.directories)


@needs_cgroups
def test_the_whole_sandbox_bwrap_and_its_init_included_lives_in_its_groups_and_they_go_after():
    seen = []

    def watch():  # while the program sleeps: every process in this runner's sandbox groups
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            for directory in layout_here.v1.values():
                for name in os.listdir(directory):
                    if name.startswith(f"mascompare-{os.getpid()}-") and name.endswith("-candidate"):
                        with open(os.path.join(directory, name, "cgroup.procs")) as file:
                            pids = file.read().split()
                        if len(pids) == 3 and any("python" in _command(pid) for pid in pids):
                            seen.append({os.path.basename(directory): [_command(pid) for pid in pids]})
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcome = run_python("import time\ntime.sleep(3)", Limits(timeout_s=20))
    watcher.join()
    assert outcome.passed and seen
    names = next(iter(seen[0].values()))
    assert names.count("bwrap") == 2 and any("python" in name for name in names)  # bwrap, its init, the harness
    leftover_groups = [name for directory in layout_here.v1.values() for name in os.listdir(directory)
                       if name.startswith(f"mascompare-{os.getpid()}-")]
    assert leftover_groups == []


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return "gone"


@needs_cgroups
def test_the_memory_group_counts_kernel_memory_so_an_inode_flood_ends_at_it():
    # files far above what memory allows (a 10 GB working directory allows 10 million): each empty file's
    # inode and dentry are kernel memory
    outcome = run_python("for i in range(5_000_000):\n    open(f'f{i}', 'w').close()",
                         Limits(timeout_s=60, cpu_s=60, memory_mb=48, output_kb=10**7))
    assert not outcome.passed and outcome.ending == "limit"
    assert outcome.status == "killed: out of memory (limit 48 MiB)" and outcome.leftovers == 0


def test_with_cgroups_switched_off_the_sandbox_falls_back_and_says_so(monkeypatch):
    monkeypatch.setenv("MASCOMPARE_SANDBOX_CGROUPS", "0")
    sandbox_module._cgroup_layout.cache_clear()
    try:
        sandbox = Sandbox(Limits(timeout_s=2), "bwrap")
        info = sandbox.info()
        assert info["cgroups"] == "none"
        assert info["mechanisms"]["end"] == "SIGKILL to the namespace's init + the host's process table searched"
        assert info["mechanisms"]["memory"] == "RLIMIT_AS per process"
        outcome = sandbox.run("import time\ntime.sleep(30)")
        assert outcome.ending == "timeout" and outcome.leftovers == 0
        assert sandbox.run("print(2 + 2)").stdout == "4\n"
    finally:
        sandbox_module._cgroup_layout.cache_clear()
