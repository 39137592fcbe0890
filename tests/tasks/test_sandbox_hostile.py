"""Hostile programs against the bubblewrap sandbox, each run the way a code task runs it.

A runner process (a subreaper, so that anything a program leaves behind becomes its child) holds
one canary secret in its environment and one in its command line, and runs the programs one after
another. The test holds a canary directory (with a secret file) and a loopback listener. After each
program: it failed (or passed where it is honest), nothing in the canary directory changed, no
connection reached the listener, neither secret came back, no process is left, the runner is alive,
and an honest program still passes.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mascompare.tasks.sandbox import find_bwrap

LIMITS = {"timeout_s": 3, "cpu_s": 2, "memory_mb": 512, "output_kb": 256, "processes": 16}

# The runner: runs each program it is sent through the sandbox and answers with the outcome and
# the processes it is left with.
RUNNER = """
import ctypes, dataclasses, json, os, sys
from mascompare.tasks.sandbox import Limits, Sandbox
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the sandbox come here
for line in sys.stdin:
    request = json.loads(line)
    outcome = Sandbox(Limits(**request["limits"]), "bwrap").run(request["program"])
    children = [c for task in os.listdir("/proc/self/task")
                for c in open(f"/proc/self/task/{task}/children").read().split()
                if open(f"/proc/{c}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    while True:  # a subreaper reaps what was handed to it
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    print(json.dumps({**dataclasses.asdict(outcome), "children": children}), flush=True)
"""

# What each hostile program tries. {canary}: the canary directory, {port}: the listener,
# {runner}: the runner's pid, {disable_guard}: code that switches off the audit hook's checks.
DISABLE_GUARD = """
import gc, sys
harness = sys.modules["__main__"]
harness._REFUSED.clear(); harness._WRITES.clear()
for f in gc.get_objects():
    if getattr(f, "__name__", "") == "hook" and f.__closure__:
        for cell in f.__closure__:
            if isinstance(cell.cell_contents, str):
                cell.cell_contents = "/"  # the working directory: now everything is inside
            elif isinstance(cell.cell_contents, int):
                cell.cell_contents = -1
"""
STEAL = """
import os, re
def loot(data):
    if isinstance(data, str):
        data = data.encode()
    print("LOOT", data[:3000])
    assert re.search(rb"CANARY-\\w+", data), "no secret found"
"""

HOSTILE = [
    # --- the guard's own state, then what it was guarding ------------------------------------
    ("guard-state", "clear-refusals-then-subprocess",
     "{disable_guard}\nimport subprocess\nsubprocess.run(['/bin/sh', '-c', 'touch {canary}/owned'], check=True)"),
    ("guard-state", "clear-refusals-then-connect",
     "{disable_guard}\nimport socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"),
    ("guard-state", "closure-cell-then-write",
     "{disable_guard}\nopen('{canary}/owned', 'w').write('owned')"),
    ("guard-state", "closure-cell-then-read-runner-environ",
     "{disable_guard}{steal}\nloot(open('/proc/{runner}/environ', 'rb').read())"),
    ("guard-state", "disable-guard-then-libc-system",
     "{disable_guard}\nimport ctypes\nassert ctypes.CDLL(None).system(b'touch {canary}/owned') == 0"),
    # --- primitives the guard does not see -----------------------------------------------------
    ("unaudited", "posixsubprocess-fork-exec",
     "import _posixsubprocess, os\nr, w = os.pipe()\n"
     "pid = _posixsubprocess.fork_exec(['/bin/sh', '-c', 'touch {canary}/owned; sleep 30'], [b'/bin/sh'], True, (), "
     "None, None, -1, -1, -1, -1, -1, -1, r, w, True, True, False, None, None, None, -1, None, False)\n"
     "os.waitpid(pid, 0)"),
    ("unaudited", "ctypes-dlopen-libc-system",
     "import _ctypes, ctypes\nlibc = ctypes.CDLL('libc.so.6')\n"
     "assert libc.system(b'touch {canary}/owned') == 0"),
    ("unaudited", "ctypes-libc-fork",
     "import ctypes, os, time\nlibc = ctypes.CDLL('libc.so.6')\npid = libc.fork()\n"
     "if pid == 0:\n    time.sleep(30)\n    os._exit(0)\nassert pid > 0"),
    ("unaudited", "ctypes-raw-clone-syscall",
     "import ctypes\nlibc = ctypes.CDLL('libc.so.6')\nassert libc.syscall(56, 17, 0, 0, 0, 0) >= 0  # clone(SIGCHLD)"),
    ("unaudited", "ctypes-libc-socket-connect",
     "import ctypes, socket, struct\nlibc = ctypes.CDLL('libc.so.6')\nfd = libc.socket(2, 1, 0)\nassert fd >= 0\n"
     "addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
     "addr = struct.pack('H', 2) + addr[2:]\nassert libc.connect(fd, addr, 16) == 0"),
    ("unaudited", "open-with-dir-fd",
     "import os\nd = os.open('{canary}', os.O_RDONLY)\n"
     "os.close(os.open('owned', os.O_WRONLY | os.O_CREAT, dir_fd=d))"),
    ("unaudited", "rename-with-dst-dir-fd",
     "import os\nopen('x', 'w').write('owned')\nd = os.open('{canary}', os.O_RDONLY)\n"
     "os.rename('x', 'owned', dst_dir_fd=d)"),
    ("unaudited", "replace-canary-file",
     "import os\nopen('x', 'w').write('owned')\nd = os.open('{canary}', os.O_RDONLY)\n"
     "os.replace('x', 'keep.txt', dst_dir_fd=d)"),
    ("unaudited", "mkfifo-with-dir-fd",
     "import os\nd = os.open('{canary}', os.O_RDONLY)\nos.mkfifo('owned', dir_fd=d)"),
    ("unaudited", "mknod-with-dir-fd",
     "import os, stat\nd = os.open('{canary}', os.O_RDONLY)\nos.mknod('owned', stat.S_IFREG | 0o600, dir_fd=d)"),
    ("unaudited", "fchmod-canary-file",
     "import os\nfd = os.open('{canary}/keep.txt', os.O_RDONLY)\nos.fchmod(fd, 0o777)"),
    ("unaudited", "sqlite-file-uri",
     "import sqlite3\ndb = sqlite3.connect('file:{canary}/owned.db?mode=rwc', uri=True)\n"
     "db.execute('create table t (x)')\ndb.commit()"),
    ("unaudited", "pidfd-signal-the-runner",
     "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({runner}), signal.SIGKILL)"),
    ("unaudited", "unshare-a-user-namespace",
     "import ctypes\nlibc = ctypes.CDLL('libc.so.6', use_errno=True)\nassert libc.unshare(0x10000000) == 0"),
    ("unaudited", "mount-over-the-root",
     "import ctypes\nlibc = ctypes.CDLL('libc.so.6')\n"
     "assert libc.mount(b'none', b'/', None, 0x20 | 0x1000, None) == 0  # MS_REMOUNT | MS_BIND, writable"),
    # --- /proc --------------------------------------------------------------------------------
    ("proc", "walk-proc-with-a-directory-fd",
     "{steal}\nproc = os.open('/proc', os.O_RDONLY | os.O_DIRECTORY)\nfound = b''\n"
     "for entry in os.listdir(proc):\n    if entry.isdigit():\n        for name in ('environ', 'cmdline'):\n"
     "            try:\n                fd = os.open(f'{{entry}}/{{name}}', os.O_RDONLY, dir_fd=proc)\n"
     "                found += os.read(fd, 1 << 16)\n            except OSError:\n                pass\nloot(found)"),
    ("proc", "read-runner-cmdline-by-pid", "{disable_guard}{steal}\nloot(open('/proc/{runner}/cmdline', 'rb').read())"),
    ("proc", "read-parent-environ", "{disable_guard}{steal}\nloot(open(f'/proc/{{os.getppid()}}/environ', 'rb').read())"),
    ("proc", "read-init-environ-and-cmdline",
     "{disable_guard}{steal}\nloot(open('/proc/1/environ', 'rb').read() + open('/proc/1/cmdline', 'rb').read())"),
    ("proc", "proc-self-dotdot",
     "{steal}\nfd = os.open('/proc/self/../1/environ', os.O_RDONLY)\nloot(os.read(fd, 1 << 16))"),
    ("proc", "init-root-to-host-files",
     "{disable_guard}{steal}\nloot(open('/proc/1/root{canary}/secret.txt', 'rb').read())"),
    ("proc", "own-environment", "{steal}\nloot(repr(dict(os.environ)) + repr(open('/proc/self/environ', 'rb').read()))"),
    # --- reading host files -------------------------------------------------------------------
    ("host-files", "read-canary-secret-file", "{steal}\nloot(open('{canary}/secret.txt', 'rb').read())"),
    ("host-files", "read-the-home-directory", "import os\nassert set(os.listdir('/root')) - {{'.pyenv'}}, 'nothing of the home directory'"),
    ("host-files", "read-the-project", "import os\nassert os.listdir('{project}')"),
    ("host-files", "read-host-tmp", "import os\nassert os.listdir('/tmp')"),
    # --- the verdict --------------------------------------------------------------------------
    ("verdict", "forge-from-caller-frames",
     "import sys, os, re\nframe, found = sys._getframe(), set()\nwhile frame:\n"
     "    found |= {{v for v in frame.f_locals.values() if isinstance(v, str) and re.fullmatch('[0-9a-f]{{32}}', v)}}\n"
     "    frame = frame.f_back\nfor fd in range(3, 64):\n    for token in found:\n        try:\n"
     "            os.write(fd, f'done {{token}}\\n'.encode())\n        except OSError:\n            pass\n"
     "os._exit(0)\nassert False"),
    ("verdict", "forge-from-gc-objects",
     "import gc, os, re\nfound = {{o for o in gc.get_objects() if isinstance(o, dict) for o in o.values()\n"
     "         if isinstance(o, str) and re.fullmatch('[0-9a-f]{{32}}', o)}}\nfor fd in range(3, 64):\n"
     "    for token in found:\n        try:\n            os.write(fd, f'done {{token}}\\n'.encode())\n"
     "        except OSError:\n            pass\nos._exit(0)\nassert False"),
    ("verdict", "exit-zero-early", "import os\nos._exit(0)\nassert False"),
    ("verdict", "exit-zero-from-a-thread",
     "import threading, os\nthreading.Thread(target=lambda: os._exit(0)).start()\nimport time\ntime.sleep(1)\nassert False"),
    ("verdict", "exit-zero-in-atexit", "import atexit, os\natexit.register(lambda: os._exit(0))\nraise SystemExit(1)"),
    # --- output and disk ----------------------------------------------------------------------
    ("output", "sixty-files-of-one-megabyte",
     "for i in range(60):\n    open(f'f{{i}}', 'wb').write(b'x' * 2**20)"),
    ("output", "many-small-files-past-the-total",
     "for i in range(400):\n    with open(f'f{{i}}', 'wb') as f:\n        f.write(b'x' * 2**10)"),
    ("output", "stdout-flood", "while True:\n    print('x' * 2**16)"),
    ("output", "write-dev-shm", "open('/dev/shm/owned', 'w').write('x' * 2**20)"),
    ("output", "write-the-root", "open('/owned', 'w').write('x')"),
    ("output", "write-host-tmp", "open('/tmp/owned', 'w').write('x')"),
    # --- the classics -------------------------------------------------------------------------
    ("classic", "fork-bomb", "import os\nwhile True:\n    os.fork()"),
    ("classic", "memory-bomb", "chunks = []\nwhile True:\n    chunks.append(bytearray(2**25))"),
    ("classic", "busy-loop", "while True:\n    pass"),
    ("classic", "thread-bomb",
     "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,)).start()"),
    ("classic", "loopback-socket", "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"),
    ("classic", "internet", "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)"),
    ("classic", "rm-rf-everything", "import shutil\nshutil.rmtree('{canary}')"),
    # --- outliving the run --------------------------------------------------------------------
    ("daemon", "double-fork-setsid",
     "{disable_guard}\nimport os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        time.sleep(5)\n        open('{canary}/owned', 'w')\n    os._exit(0)\nassert True"),
    ("daemon", "sleep-past-the-timeout", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"),
    ("daemon", "thread-that-writes-after-the-end",
     "import threading, time\ndef later():\n    time.sleep(2)\n    open('{canary}/owned', 'w')\n"
     "threading.Thread(target=later).start()"),  # the program itself is honest: it may pass
    ("daemon", "kill-everything-visible", "{disable_guard}\nimport os, signal\nos.kill(-1, signal.SIGKILL)\nassert False"),
    ("daemon", "kill-the-parent", "{disable_guard}\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nassert False"),
]
MAY_PASS = {"thread-that-writes-after-the-end"}


def test_the_suite_is_large_enough():
    assert len(HOSTILE) >= 40 and len({name for _, name, _ in HOSTILE}) == len(HOSTILE)


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    find_bwrap()  # the suite is about bubblewrap: no fallback here
    canary = tmp_path_factory.mktemp("canary")
    os.chmod(canary, 0o777)  # even a sandbox user mapped to someone else could write here
    env_secret, argv_secret = f"CANARY-env{secrets.token_hex(8)}", f"CANARY-argv{secrets.token_hex(8)}"
    (canary / "keep.txt").write_text("keep")
    (canary / "secret.txt").write_text(f"CANARY-file{secrets.token_hex(8)}")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, f"--api-key={argv_secret}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "OPENAI_API_KEY": env_secret, "CANARY_SECRET": env_secret},
        cwd=Path(__file__).parents[2],
    )
    yield {"canary": canary, "listener": listener, "runner": runner,
           "secrets": (env_secret, argv_secret, (canary / "secret.txt").read_text())}
    runner.stdin.close()
    runner.wait(timeout=30)
    listener.close()


def run(world, program: str) -> dict:
    runner = world["runner"]
    runner.stdin.write(json.dumps({"program": program, "limits": LIMITS}) + "\n")
    runner.stdin.flush()
    line = runner.stdout.readline()
    assert line, "the runner died"
    return json.loads(line)


@pytest.mark.parametrize("kind, name, source", HOSTILE, ids=[f"{kind}:{name}" for kind, name, _ in HOSTILE])
def test_hostile_program_is_contained(world, kind, name, source):
    canary, runner = world["canary"], world["runner"]
    before = snapshot(canary)
    program = textwrap.dedent(source).format(
        canary=canary, port=world["listener"].getsockname()[1], runner=runner.pid,
        project=Path(__file__).parents[2], disable_guard=DISABLE_GUARD, steal=STEAL)
    outcome = run(world, program)

    assert not outcome["passed"] or name in MAY_PASS, outcome
    assert outcome["children"] == [], "a process outlived the program"
    assert snapshot(canary) == before
    with pytest.raises(BlockingIOError):
        world["listener"].accept()
    shown = outcome["stdout"] + outcome["stderr"]
    assert not any(secret in shown for secret in world["secrets"])
    assert runner.poll() is None
    honest = run(world, "def add(a, b):\n    return a + b\nassert add(2, 3) == 5")
    assert honest["passed"] and honest["ending"] == "passed"


@pytest.mark.xfail(strict=True, reason="beyond an in-process harness: the harness and the program share one "
                                       "process, so a program can read the verdict pipe's raw descriptor")
def test_a_program_reading_the_token_descriptor_forges_a_pass(world):
    outcome = run(world, textwrap.dedent("""
        import os
        token = b""
        for fd in range(3, 64):
            try:
                os.set_blocking(fd, False)
                token = token or os.read(fd, 64)
            except OSError:
                pass
        for fd in range(3, 64):
            try:
                os.write(fd, b"done " + token + b"\\n")
            except OSError:
                pass
        os._exit(0)
        assert False
    """))
    assert not outcome["passed"]
