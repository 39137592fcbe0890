"""The launcher: starts a sample's sandboxes, watches them and ends them.

The runner starts it once, as `python -I -S sandbox_launch.py FD` (FD: its end of a Unix socket
pair), and it stays single-threaded, so that it may fork and run Python in the child before
exec, which a threaded runner may not. For each sample the runner sends, over the socket, three
descriptors: a memfd holding the plan as JSON (for each sandbox its command, the request its
harness reads on stdin, the files bound into it, the seccomp filter, its cgroups, rlimits, and
the namespace steps below), the pipe for the report and a lifeline pipe. The launcher forks a
worker for the sample (a fork, not a new interpreter: a few milliseconds instead of tens), which
answers with a report as JSON on the report pipe once every process of the sample is gone. The
launcher ends when the runner's end of the socket closes.

For each sandbox the worker forks a child that, in this order:

1. joins a new, empty session keyring (so nothing of the runner's keys is in reach);
2. joins the sandbox's cgroups, before any process of the sandbox exists;
3. starts a new session;
4. when the runner is root: enters a private mount namespace and binds there what the sandbox
   user could not read itself (the interpreter's prefix under root's home, mode 0700) onto
   empty directories the sandbox's bwrap binds from;
5. when the runner is root: becomes the unprivileged sandbox user (nobody), no groups;
6. enters a user and mount namespace of its own and mounts the working directory's tmpfs there
   with `size` and `nr_inodes` (bwrap's own --tmpfs has no inode limit), and so that RLIMIT_NPROC
   counts this sandbox's processes alone (the kernel counts it per user namespace);
7. sets the rlimits, which bwrap, its init and the harness inherit;
8. executes bwrap (through a descriptor opened before step 5, unless it is a script) or, in process
   isolation, Python.

Descriptors in each sandbox: 0 the request (a sealed memfd), 1 and 2 pipes this process reads
with a cap (no host file a sandbox could grow), REPORT_FD a pipe to this process (the
candidate's guard and exit notes, or the judge's verdict), IN_FD and OUT_FD the pipes between
judge and candidate, INFO_FD bwrap's --info-fd (the namespace's first process), SECCOMP_FD the
filter, then the harness files from FIRST_FILE_FD on.

Ends: the judge's exit ends the sample (the candidate gets `grace_s` to end by itself, since its
pipes close); the timeout, an output past the cap or the runner's going away (the lifeline pipe
closes, as it does when the runner stops waiting) kill what is left. A sandbox is killed through
bwrap (its --die-with-parent kills the namespace's init, and with it every process of the
namespace), and, where the runner gave no cgroup, the host's process table is then searched for
any process of the sandbox's PID namespace (or, in process isolation, its session), which is
killed and counted.

Standard library only, imported before any step that changes the user (the interpreter's own
files may then be out of reach).
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback

REPORT_FD, IN_FD, OUT_FD, INFO_FD, SECCOMP_FD, FIRST_FILE_FD = 3, 4, 5, 6, 7, 8
REPORT_BYTES = 1 << 16
DRAIN_S = 0.5  # after the last process of a sample has ended, how long its pipes may stay open
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_BIND, _MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV = 0x1000, 0x4000, 0x40000, 0x2, 0x4
_KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_RLIMITS = {name: getattr(resource, name) for name in
            ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_CORE")}
_libc = ctypes.CDLL(None, use_errno=True)


class Watched:
    """One started sandbox, as this process sees it."""

    def __init__(self, spec: dict, pid: int, pipes: dict[str, int]):
        self.name, self.spec, self.pid = spec["name"], spec, pid
        self.pidfd = os.pidfd_open(pid)
        self.pipes = pipes  # stdout, stderr, report, info: the ends this process reads
        self.stdout, self.stderr, self.report, self.info = bytearray(), bytearray(), bytearray(), bytearray()
        self.output_bytes = 0
        self.status: int | None = None
        self.cpu_s = 0.0  # of bwrap and every process it waited for
        self.killed: str | None = None  # why this process killed it: timeout, output, end, runner
        self.namespace: str | None = None  # its PID namespace, from bwrap's info
        self.namespace_init: int | None = None

    def kill(self, why: str) -> None:
        if self.status is None and self.killed is None:
            self.killed = why
            try:
                os.kill(self.pid, signal.SIGKILL)  # our unreaped child: the pid cannot belong to another
            except ProcessLookupError:
                pass


def serve(connection: socket.socket) -> None:
    """Fork a worker for each sample the runner sends, until the runner's end closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(connection, 16, 3)
        except InterruptedError:
            continue
        if not message:
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            connection.close()
            _work(*fds)  # never returns
        for fd in fds:
            os.close(fd)


def _work(plan_fd: int, report_fd: int, lifeline_fd: int) -> None:
    """One sample, in a forked worker: its report (or the error that stopped it) goes down the report pipe."""
    try:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of its sandboxes come here to be reaped
        with os.fdopen(plan_fd, "rb") as file:
            plan = json.loads(file.read())
        plan["lifeline_fd"] = lifeline_fd
        report = run_sample(plan)
    except BaseException:  # the runner must hear of it, whatever it was
        report = {"error": traceback.format_exc(limit=-3)}
    data = memoryview(json.dumps(report).encode())
    try:
        while data:
            data = data[os.write(report_fd, data):]
    finally:
        os._exit(0)


def run_sample(plan: dict) -> dict:
    os.set_blocking(plan["lifeline_fd"], False)
    begun = time.monotonic()
    links = _link_pipes() if plan["link"] else None
    watched = [_start(spec, links) for spec in plan["sandboxes"]]
    if links:
        for fd in links.values():
            os.close(fd)
    timed_out = _watch(watched, plan, begun)
    report = {"seconds": time.monotonic() - begun, "timed_out": timed_out, "sandboxes": {}}
    for sandbox in watched:
        report["sandboxes"][sandbox.name] = _describe(sandbox, plan)
    _reap_orphans()
    return report


def _reap_orphans(wait_s: float = 2.0) -> None:
    """Reap what was handed to this worker (a namespace's init whose bwrap was killed first) as it ends."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.002)
        except ChildProcessError:
            return


def _link_pipes() -> dict[str, int]:
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()
    return {"requests_read": requests_read, "requests_write": requests_write,
            "replies_read": replies_read, "replies_write": replies_write}


def _start(spec: dict, links: dict | None) -> Watched:
    """Fork the child that becomes the sandbox; the parent keeps the reading ends."""
    request = _sealed_memfd(spec["stdin"].encode())
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    report_read, report_write = os.pipe()
    child_fds = {0: request, 1: stdout_write, 2: stderr_write, REPORT_FD: report_write}
    parent_fds = {"stdout": stdout_read, "stderr": stderr_read, "report": report_read}
    if links:
        incoming, outgoing = (("requests_read", "replies_write") if spec["name"] == "candidate"
                              else ("replies_read", "requests_write"))
        child_fds[IN_FD], child_fds[OUT_FD] = links[incoming], links[outgoing]
    if spec.get("info"):
        info_read, info_write = os.pipe()
        child_fds[INFO_FD] = info_write
        parent_fds["info"] = info_read
    if spec.get("seccomp"):
        child_fds[SECCOMP_FD] = _sealed_memfd(base64.b64decode(spec["seccomp"]))
    for number, path in enumerate(spec.get("files", ())):
        child_fds[FIRST_FILE_FD + number] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    executable = os.open(spec["argv"][0], os.O_RDONLY | os.O_CLOEXEC)  # reachable before the user changes
    if os.pread(executable, 2, 0) == b"#!":  # a script cannot run from a close-on-exec descriptor: by path
        os.close(executable)
        executable = None
    pid = os.fork()
    if pid == 0:
        _become_sandbox(spec, child_fds, executable)  # never returns
    for fd in [*child_fds.values(), *([executable] if executable is not None else [])]:
        if fd not in (links or {}).values():
            os.close(fd)
    for fd in parent_fds.values():
        os.set_blocking(fd, False)
    return Watched(spec, pid, parent_fds)


def _sealed_memfd(data: bytes) -> int:
    """A read-only descriptor on an in-memory file that nobody can change or grow."""
    fd = os.memfd_create("sandbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    read_only = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return read_only


def _become_sandbox(spec: dict, child_fds: dict[int, int], executable: int) -> None:
    """In the forked child: the steps of the module's docstring, then exec. Never returns."""
    step = "placing descriptors"
    try:
        executable = _place(child_fds, executable)
        step = "joining a new session keyring"
        keyring = _join_new_session_keyring()
        if keyring:
            os.write(REPORT_FD, f"launch keyring {keyring}\n".encode())
        step = "joining its cgroups"
        for path in spec.get("cgroup_procs", ()):
            with open(path, "w") as file:
                file.write("0")
        os.setsid()
        if spec.get("stage_binds"):
            step = "binding the interpreter in a private mount namespace"
            _check(_libc.unshare(_CLONE_NEWNS))
            _check(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
            for source, target in spec["stage_binds"]:
                _check(_libc.mount(source.encode(), target.encode(), None, _MS_BIND | _MS_REC, None))
        if spec.get("user"):
            step = "becoming the sandbox user"
            uid, gid = spec["user"]
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # the exec would do it: its /proc files are its own again
        if spec.get("work_tmpfs"):
            step = "mounting its working directory"
            uid, gid = os.getuid(), os.getgid()
            _check(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS))
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as file:
                    file.write(text)
            path, options = spec["work_tmpfs"]
            _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()))
        step = "setting its limits"
        for name, (soft, hard) in spec.get("rlimits", {}).items():
            resource.setrlimit(_RLIMITS[name], (soft, hard))
        step = "starting"
        os.chdir(spec["cwd"])
        os.execve(spec["argv"][0] if executable is None else executable, spec["argv"], spec["env"])
    except BaseException as error:  # whatever it was, the sandbox did not start
        try:
            os.write(REPORT_FD, f"launch failed: {step}: {error}\n".encode())
        finally:
            os._exit(127)


def _place(child_fds: dict[int, int], executable: int | None) -> int | None:
    """Put each descriptor at its number and close every other but the executable's (close-on-exec)."""
    moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, 100) for target, source in child_fds.items()}
    if executable is not None:
        executable = fcntl.fcntl(executable, fcntl.F_DUPFD_CLOEXEC, 100)
    for target, source in moved.items():
        os.dup2(source, target)
    top = max(child_fds) + 1
    keep = executable if executable is not None else top - 1
    os.closerange(top, keep)
    os.closerange(max(keep + 1, top), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for fd in range(3, top):
        if fd not in child_fds:
            try:
                os.close(fd)
            except OSError:
                pass
    return executable


def _join_new_session_keyring() -> str | None:
    """None when joined; else why not (an old kernel, a container that refuses keyctl)."""
    number = _SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        return f"shared (no keyctl number known for {os.uname().machine})"
    if _libc.syscall(number, _KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        return f"shared ({os.strerror(ctypes.get_errno())})"
    return None


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _watch(watched: list[Watched], plan: dict, begun: float) -> bool:
    """Read every sandbox's pipes until all have ended; True when the timeout ended them."""
    deadline = begun + plan["timeout_s"]
    grace_until = drain_until = None
    timed_out = False
    lifeline = plan["lifeline_fd"]
    readers = {fd: (sandbox, name) for sandbox in watched for name, fd in sandbox.pipes.items()}
    exits = {sandbox.pidfd: sandbox for sandbox in watched}
    while readers or exits:
        now = time.monotonic()
        if drain_until is not None and now >= drain_until:  # a leftover holds a pipe: found and killed later
            break
        if now >= deadline and not timed_out and any(s.status is None for s in watched):
            timed_out = True
            for sandbox in watched:
                sandbox.kill("timeout")
        if grace_until is not None and now >= grace_until:
            for sandbox in watched:
                sandbox.kill("end")
        waits = [time for time in (deadline, grace_until, drain_until) if time is not None and time > now]
        timeout = max(0.0, min(waits) - now) if waits else 1.0
        ready, _, _ = select.select([*readers, *exits, lifeline], [], [], timeout)
        for fd in ready:
            if fd == lifeline:
                if not _lifeline_alive(lifeline):
                    for sandbox in watched:
                        sandbox.kill("runner")
                continue
            if fd in exits:
                sandbox = exits.pop(fd)
                _, sandbox.status, usage = os.wait4(sandbox.pid, 0)
                sandbox.cpu_s = usage.ru_utime + usage.ru_stime
                os.close(fd)
                if sandbox.name == "judge" and grace_until is None:
                    grace_until = time.monotonic() + plan["grace_s"]
                if not exits:
                    drain_until = time.monotonic() + DRAIN_S
                continue
            sandbox, name = readers[fd]
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                del readers[fd]
                os.close(fd)
                if name == "info":
                    _note_namespace(sandbox)
                continue
            _keep(sandbox, name, data, plan)
    return timed_out


def _lifeline_alive(fd: int) -> bool:
    try:
        return bool(os.read(fd, 1 << 10))
    except BlockingIOError:
        return True


def _keep(sandbox: Watched, name: str, data: bytes, plan: dict) -> None:
    """Keep the head of stdout and the tail of stderr; past the cap, the sandbox is killed."""
    if name in ("stdout", "stderr"):
        sandbox.output_bytes += len(data)
        if sandbox.output_bytes > plan["output_bytes"]:
            sandbox.kill("output")
        kept = plan["shown_bytes"]
        if name == "stdout":
            sandbox.stdout += data[:max(0, kept - len(sandbox.stdout))]
        else:
            sandbox.stderr += data
            del sandbox.stderr[:-kept]
    else:
        buffer = getattr(sandbox, name)
        buffer += data[:max(0, REPORT_BYTES - len(buffer))]


def _note_namespace(sandbox: Watched) -> None:
    try:
        sandbox.namespace_init = int(json.loads(bytes(sandbox.info))["child-pid"])
        sandbox.namespace = os.readlink(f"/proc/{sandbox.namespace_init}/ns/pid")
    except (ValueError, KeyError, TypeError, OSError):
        pass


def _leftovers(sandbox: Watched) -> int:
    """Processes of the sandbox still in the host's process table after its end: killed and counted."""
    found = 0
    for _ in range(500):
        alive = [pid for pid in _host_processes() if _belongs(pid, sandbox) and not _dead(pid)]
        if not alive:
            return found
        found = max(found, sum(1 for pid in alive if not exiting(pid)))
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    raise RuntimeError(f"processes of the {sandbox.name} sandbox survived SIGKILL")


def exiting(pid: int) -> bool:
    """Whether a process is on its way out (a tmpfs of many files takes a while to free as it goes)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] in "ZX" or bool(int(fields[6]) & 0x4)  # PF_EXITING


def _dead(pid: int) -> bool:
    """A zombie, or gone: nothing that runs any more."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def _host_processes() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _belongs(pid: int, sandbox: Watched) -> bool:
    """In the sandbox's PID namespace, or in the session its launcher started."""
    try:
        if sandbox.namespace is not None and os.readlink(f"/proc/{pid}/ns/pid") == sandbox.namespace:
            return True
        with open(f"/proc/{pid}/stat") as file:
            session = int(file.read().rsplit(")", 1)[1].split()[3])
        return session == sandbox.pid
    except (OSError, ValueError, IndexError):
        return False


def _describe(sandbox: Watched, plan: dict) -> dict:
    status = sandbox.status
    if status is None:  # its pipes outlived the drain: end it now
        sandbox.kill("end")
        _, status, usage = os.wait4(sandbox.pid, 0)
        sandbox.cpu_s = usage.ru_utime + usage.ru_stime
    leftovers = 0 if plan["cgroups"] else _leftovers(sandbox)
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "cpu_s": round(sandbox.cpu_s, 3),
        "killed": sandbox.killed,
        "stdout": sandbox.stdout.decode("utf-8", errors="replace"),
        "stderr": sandbox.stderr.decode("utf-8", errors="replace"),
        "output_bytes": sandbox.output_bytes,
        "report": sandbox.report.decode("utf-8", errors="replace"),
        "leftovers": leftovers,
    }


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
