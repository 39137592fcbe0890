"""The candidate's side of a sandbox: runs one program, then answers its judge's calls.

Started as `python -I -S sandbox_candidate.py` inside the candidate's sandbox, with a request as
JSON on stdin (the program, its working directory, where the interpreter's packages are, its
descriptors). It runs the program as module `solution` (not `__main__`: demo code under
`if __name__ == "__main__":` stays out). Then, in `serve` mode, it answers the judge over two
pipes until the judge closes them (`judge.py` holds the other end):

    ["name", name]                  -> what the program's global `name` is
    ["call", ref, args, kwargs]     -> the call's result, or the exception it raised
    ["getattr", ref, name]          -> an attribute of a kept object
    ["setattr", ref, name, value]   -> ["ok"]

and a name or attribute is answered as ["value", v] (a builtin value), ["callable", ref] (a
function or class, kept here and called by reference), ["module", name] (the judge imports its own
copy of a standard module), ["handle", ref] (any other object, kept here: the judge can pass it
back and set or read its attributes, never compare it) or ["missing"]. A call answers
["return", value, changed] (`changed`: the arguments as they are after the call when the call
changed them, so that the judge can mirror changes made in place; else null), ["handle", ref]
(an instance from calling a class), ["raise", type, message] or ["refused", reason] (the result
is not a builtin value).

In `alone` mode (a program run for how it ends, not judged) it reports `done` on the report pipe
once the program has returned; the program can write to that pipe too, so that report is no
verdict.

A guard, a Python audit hook (a program cannot remove it, but can reach its state), refuses
starting processes, sockets, changing files outside the working directory, reading other
processes' /proc entries, signalling other processes, changing resource limits, and looking up
native functions through ctypes, and reports each refusal on the report pipe. It catches what
ordinary code does by mistake; the sandbox around it is the boundary.

Standard library only: this runs in the sandbox's bare interpreter.
"""

from __future__ import annotations

import json
import os
import re
import sys

PROGRAM_NAME = "solution.py"  # as tracebacks name the program

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


def report(fd: int, line: str) -> None:
    try:
        os.write(fd, f"{line}\n".encode())
    except OSError:  # a full report pipe must not block the program
        pass


def guard(work: str, report_fd: int):
    own_pid = os.getpid()

    def refuse(what: str):
        report(report_fd, f"refused {what}")
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


class Kept:
    """The objects the judge refers to by number: the program's functions, classes and instances."""

    def __init__(self):
        self.objects: list = []
        self.numbers: dict[int, int] = {}  # id(object) -> its number; the objects stay alive in the list

    def add(self, value) -> int:
        number = self.numbers.get(id(value))
        if number is None:
            self.objects.append(value)
            number = self.numbers[id(value)] = len(self.objects) - 1
        return number

    def get(self, ref: int):
        if type(ref) is not int or not 0 <= ref < len(self.objects):
            raise LookupError(f"no kept object {ref!r}")
        return self.objects[ref]


def describe(value, kept: Kept, wire) -> list:
    """How a global or an attribute crosses: a builtin value, a callable, a module, or a handle."""
    if isinstance(value, type(sys)) and isinstance(getattr(value, "__name__", None), str):
        return ["module", value.__name__]
    if callable(value):
        return ["callable", kept.add(value)]
    try:
        return ["value", wire.encode(value)]
    except (wire.NotBuiltin, RecursionError):
        return ["handle", kept.add(value)]


def serve(module, channel, kept: Kept, wire, source: str) -> str | None:
    """Answer the judge until it closes the pipes; the traceback of the last exception a call raised."""
    last_traceback = None
    while True:
        try:
            request = channel.receive()
        except wire.ChannelClosed:
            return last_traceback
        kind = request[0] if type(request) is list and request else None
        try:
            if kind == "name":
                value = module.__dict__.get(request[1], _MISSING)
                answer = ["missing"] if value is _MISSING else describe(value, kept, wire)
            elif kind == "getattr":
                answer = describe(getattr(kept.get(request[1]), request[2]), kept, wire)
            elif kind == "setattr":
                setattr(kept.get(request[1]), request[2], wire.decode(request[3], kept.get))
                answer = ["ok"]
            elif kind == "call":
                answer = call(kept.get(request[1]), request[2], request[3], kept, wire)
            else:
                answer = ["refused", "the judge sent a malformed request"]
        except BaseException as error:  # SystemExit too: the program's function may call sys.exit
            last_traceback = _traceback(error, source)
            answer = ["raise", type(error).__name__, _message(error)]
        try:
            channel.send(answer)
        except RecursionError:
            channel.send(["refused", "the program returned a value nested too deeply"])
        except OSError:  # the judge has gone
            return last_traceback


_MISSING = object()


def call(target, raw_args, raw_kwargs, kept: Kept, wire) -> list:
    args = wire.decode(raw_args, kept.get)
    kwargs = wire.decode(raw_kwargs, kept.get)
    if type(args) is not list or type(kwargs) is not dict or not all(type(key) is str for key in kwargs):
        return ["refused", "the judge sent malformed arguments"]
    result = target(*args, **kwargs)
    if isinstance(target, type) and isinstance(result, target):  # an instance of the program's class
        return ["handle", kept.add(result)]
    try:
        value = wire.encode(result)
    except wire.NotBuiltin as error:
        return ["refused", f"the program returned {error}"]
    except RecursionError:
        return ["refused", "the program returned a value nested too deeply (or containing itself)"]
    try:
        after = [wire.encode(args, kept.add), wire.encode(kwargs, kept.add)]
    except (wire.NotBuiltin, RecursionError):
        after = None
    changed = after if after is not None and after != [raw_args, raw_kwargs] else None
    return ["return", value, changed]


def _traceback(error: BaseException, source: str) -> str:
    """From the program's frames on, quoting its lines (the interpreter's own report reads them from disk)."""
    import linecache  # here, not at the top: imports cost every sandbox's start-up
    import traceback

    linecache.cache[PROGRAM_NAME] = (len(source), None, source.splitlines(True), PROGRAM_NAME)
    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename != PROGRAM_NAME:
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(error), error, frames))


def _message(error: BaseException) -> str:
    try:
        return str(error)[:2000]
    except BaseException:  # a str() that raises, on an exception the program defined
        return ""


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sandbox_wire as wire

    request = json.loads(sys.stdin.read())
    sys.path.extend(request["packages"])  # the interpreter's site-packages (numpy...); -S left them out
    report_fd = request["report_fd"]
    os.set_blocking(report_fd, False)
    sys.addaudithook(guard(os.path.realpath(request["work"]), report_fd))
    source = request["program"]
    module = type(sys)("solution")
    sys.modules["solution"] = module
    try:
        exec(compile(source, PROGRAM_NAME, "exec"), module.__dict__)
        sys.stdout.flush()
    except BaseException as error:  # SystemExit too: leaving early is no pass
        report(report_fd, f"raised {type(error).__name__} {getattr(error, 'errno', None) or 0}")
        sys.stderr.write(_traceback(error, source))
        sys.stderr.flush()
        os._exit(1)
    if request["mode"] == "alone":
        report(report_fd, "done")
        os._exit(0)  # lingering threads and the program's exit handlers change nothing now
    channel = wire.Channel(request["requests_fd"], request["replies_fd"], request["message_limit"])
    last_traceback = serve(module, channel, Kept(), wire, source)
    if last_traceback:
        sys.stderr.write(last_traceback)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
