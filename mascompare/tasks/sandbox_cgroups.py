"""One cgroup per sandbox, where the machine lets the runner make them: limits on the whole
sandbox (bwrap's own processes included), and a way to end every process in it at once.

Two layouts occur. Pure cgroup v2: one hierarchy; a sandbox's group holds `memory.max`,
`memory.swap.max`, `pids.max` and `cpu.max` where the runner's own group lets its children use
those controllers, and `cgroup.kill` ends it. Hybrid: v1 hierarchies carry the `memory`, `pids`
and `cpu` controllers (a group in each, with `memory.limit_in_bytes` and
`memory.memsw.limit_in_bytes`, `pids.max`, `cpu.cfs_quota_us`) and a v2 hierarchy without them
still offers `cgroup.kill`. Groups nest under the runner's own group in each
hierarchy (from /proc/self/cgroup). A hierarchy where a group cannot be made or a limit cannot be
written is left out, and `mechanisms` says which one holds each limit (None: none does, and the
rlimits set before the sandbox starts are what is left). With no writable hierarchy at all (an
ordinary user on most machines), `SandboxGroup.create` returns None and the sandbox falls back
to killing by process tree.

Used on the runner's side only (the launcher just writes into the groups it is given).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field

from mascompare.tasks.sandbox_launch import exiting

CPU_PERIOD_US = 100_000
ONE_CPU = CPU_PERIOD_US  # a sandbox may use at most one CPU at a time
CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class Layout:
    """Where the runner's own groups are: its v2 group's directory, and per v1 controller its group there."""

    v2: str | None = None
    v2_controllers: frozenset[str] = frozenset()  # what children of the v2 group may use
    v1: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.v1 and self.v2:
            return "hybrid (cgroup v1 " + ", ".join(sorted(self.v1)) + " and cgroup v2)"
        if self.v1:
            return "cgroup v1 (" + ", ".join(sorted(self.v1)) + ")"
        return "cgroup v2" if self.v2 else "none"


def discover(mountinfo: str = "/proc/self/mountinfo", own: str = "/proc/self/cgroup") -> Layout:
    """The runner's groups in each mounted hierarchy that has a controller a sandbox needs (or v2)."""
    try:
        with open(own) as file:
            memberships = [line.rstrip("\n").split(":", 2) for line in file if line.count(":") >= 2]
        with open(mountinfo) as file:
            mounts = [line.split() for line in file]
    except OSError:
        return Layout()
    v1_paths = {name: path for _, names, path in memberships if names for name in names.split(",")}
    v2_path = next((path for number, names, path in memberships if number == "0" and not names), None)
    v1, v2 = {}, None
    for fields in mounts:
        separator = fields.index("-")
        root, mount_point = fields[3], _unescape(fields[4])
        fstype, options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup2" and v2 is None and v2_path is not None:
            v2 = _inside(mount_point, root, v2_path)
        elif fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in options and controller not in v1 and controller in v1_paths:
                    v1[controller] = _inside(mount_point, root, v1_paths[controller])
    v1 = {controller: path for controller, path in v1.items() if path and os.path.isdir(path)}
    if v2 and not os.path.isdir(v2):
        v2 = None
    return Layout(v2=v2, v2_controllers=_usable_v2_controllers(v2) if v2 else frozenset(), v1=v1)


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _inside(mount_point: str, root: str, group: str) -> str | None:
    """The directory of `group` (a path in the hierarchy) under a mount of the hierarchy's `root`."""
    if root != "/" and not (group == root or group.startswith(root + "/")):
        return None  # the group lies outside what this mount shows
    relative = group[len(root):] if root != "/" else group
    return os.path.join(mount_point, relative.lstrip("/")).rstrip("/") or "/"


def _usable_v2_controllers(group: str) -> frozenset[str]:
    """Controllers the children of `group` may use, enabling them when the runner may."""
    wanted = set(CONTROLLERS)
    enabled = set(_read(os.path.join(group, "cgroup.subtree_control")).split())
    missing = (wanted & set(_read(os.path.join(group, "cgroup.controllers")).split())) - enabled
    for controller in sorted(missing):  # fails in a group that holds processes itself, or without the right
        try:
            _write(os.path.join(group, "cgroup.subtree_control"), f"+{controller}")
            enabled.add(controller)
        except OSError:
            pass
    return frozenset(wanted & enabled)


@dataclass(eq=False)
class SandboxGroup:
    """The groups of one sandbox, one per usable hierarchy, with its limits written."""

    directories: list[str]
    v2: str | None  # its group in the v2 hierarchy, if any
    memory: str | None  # the group that holds its memory limit
    mechanisms: dict[str, str | None]

    @classmethod
    def create(cls, layout: Layout, name: str, memory_bytes: int, processes: int) -> SandboxGroup | None:
        directories, mechanisms = [], dict.fromkeys(("memory", "pids", "cpu", "kill"))
        memory_group = v2_group = None

        def make(parent: str) -> str | None:
            path = os.path.join(parent, name)
            try:
                os.mkdir(path)
            except OSError:
                return None
            directories.append(path)
            return path

        try:
            if layout.v2 and (v2_group := make(layout.v2)):
                if os.path.exists(os.path.join(v2_group, "cgroup.kill")):
                    mechanisms["kill"] = "cgroup v2 cgroup.kill"
                if "memory" in layout.v2_controllers and _try_write(v2_group, "memory.max", memory_bytes):
                    _try_write(v2_group, "memory.swap.max", 0)
                    mechanisms["memory"], memory_group = "cgroup v2 memory.max", v2_group
                if "pids" in layout.v2_controllers and _try_write(v2_group, "pids.max", processes):
                    mechanisms["pids"] = "cgroup v2 pids.max"
                if "cpu" in layout.v2_controllers and _try_write(v2_group, "cpu.max", f"{ONE_CPU} {CPU_PERIOD_US}"):
                    mechanisms["cpu"] = "cgroup v2 cpu.max (one CPU)"
            if mechanisms["memory"] is None and "memory" in layout.v1 and (group := make(layout.v1["memory"])):
                if _try_write(group, "memory.limit_in_bytes", memory_bytes):
                    _try_write(group, "memory.memsw.limit_in_bytes", memory_bytes)  # no escape into swap
                    mechanisms["memory"], memory_group = "cgroup v1 memory.limit_in_bytes", group
            if mechanisms["pids"] is None and "pids" in layout.v1 and (group := make(layout.v1["pids"])):
                if _try_write(group, "pids.max", processes):
                    mechanisms["pids"] = "cgroup v1 pids.max"
            if mechanisms["cpu"] is None and "cpu" in layout.v1 and (group := make(layout.v1["cpu"])):
                if _try_write(group, "cpu.cfs_period_us", CPU_PERIOD_US) and \
                        _try_write(group, "cpu.cfs_quota_us", ONE_CPU):
                    mechanisms["cpu"] = "cgroup v1 cpu.cfs_quota_us (one CPU)"
        except BaseException:
            cls(directories, v2_group, memory_group, mechanisms).remove()
            raise
        if not directories:
            return None
        if mechanisms["kill"] is None:
            mechanisms["kill"] = "SIGKILL to each process the groups list"
        return cls(directories, v2_group, memory_group, mechanisms)

    @property
    def procs_files(self) -> list[str]:
        """Where a process writes its pid to join every group of the sandbox."""
        return [os.path.join(directory, "cgroup.procs") for directory in self.directories]

    def processes(self) -> set[int]:
        found = set()
        for path in self.procs_files:
            found.update(int(pid) for pid in _read(path).split())
        return found

    def kill(self, wait_s: float = 5.0) -> int:
        """End every process in the groups; how many were there and not already exiting. Raises if any is
        still there after `wait_s`."""
        alive = {pid for pid in self.processes() if not exiting(pid)}
        if not self.processes():
            return 0
        one_write = bool(self.v2) and _try_write(self.v2, "cgroup.kill", 1)
        deadline = time.monotonic() + wait_s
        while (left := self.processes()) and time.monotonic() < deadline:
            if not one_write:  # the v1 way: no process in a sandbox can start another, so this ends
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.002)
        if left:
            raise RuntimeError(f"processes {sorted(left)} of a sandbox survived SIGKILL")
        return len(alive)

    def out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the group for its memory limit."""
        if self.memory is None:
            return False
        text = _read(os.path.join(self.memory, "memory.events" if self.memory == self.v2 else "memory.oom_control"))
        return any(line.split()[0] == "oom_kill" and int(line.split()[1]) > 0 for line in text.splitlines() if line)

    def remove(self) -> None:
        for directory in reversed(self.directories):
            for _ in range(200):  # a group empties a moment after its last process has exited
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        raise
                    time.sleep(0.005)


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def _write(path: str, value) -> None:
    with open(path, "w") as file:
        file.write(str(value))


def _try_write(directory: str, name: str, value) -> bool:
    try:
        _write(os.path.join(directory, name), value)
        return True
    except OSError:
        return False
