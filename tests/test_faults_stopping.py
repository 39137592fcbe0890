"""Fault class 4, stopping: Ctrl-C (once or twice) and SIGTERM stop an API run within two seconds, cancelling the
requests in flight, with run.json saying `stopped` and why; a disk that fills up mid-run stops it with exit 1, one
sentence naming the file and the setting, and the same record; each time the same command resumes with nothing lost
or duplicated."""

from __future__ import annotations

import signal
import sys
import time

import pytest
import yaml
from faults import cli_process, error_line, keys_once, run_dir_of, run_json, scripted_args, scripted_run

EVERY_SAMPLE = [("arith-L1-0000", 0), ("arith-L2-0000", 0), ("arith-L3-0000", 0), ("arith-L4-0000", 0)]
SILENT = {"default": {"text": "The answer is 0.", "delay_s": 60}}  # answers after a minute: all requests in flight


def started(root, process, timeout: float = 60) -> None:
    """Wait until the run has begun (run.json written) and its requests are out."""
    deadline = time.monotonic() + timeout
    while not list(root.rglob("run.json")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.5)


@pytest.mark.parametrize("signals, status, said", [
    ([signal.SIGINT], 130, "interrupted (Ctrl-C); run the same command again to resume"),
    ([signal.SIGINT, signal.SIGINT], 130, "interrupted (Ctrl-C); run the same command again to resume"),
    ([signal.SIGTERM], 143, "terminated (SIGTERM); run the same command again to resume"),
])
def test_a_signal_stops_an_api_run_within_two_seconds_with_a_true_status(tmp_path, signals, status, said):
    root = tmp_path / "results"
    process = cli_process(*scripted_args(root, "backend.max_concurrency=4", script=SILENT, limit=4))
    started(root, process)
    sent = time.monotonic()
    for number in signals:
        process.send_signal(number)
        time.sleep(0.1)
    output, _ = process.communicate(timeout=30)
    assert time.monotonic() - sent < 2.0, output
    assert process.returncode == status, output
    assert "Traceback" not in output and "Exception in thread" not in output, output
    assert [line for line in output.splitlines() if line.startswith("stopped:")] == [f"stopped: {said}"]
    run_dir = run_dir_of(root)
    info = run_json(run_dir)
    assert info["status"] == "stopped" and info["stop_reason"] == said

    resumed = scripted_run(root, "backend.max_concurrency=4", script={}, limit=4)  # same script file, answering
    assert resumed.exit_code == 0, resumed.output
    assert keys_once(run_dir) == EVERY_SAMPLE and run_json(run_dir)["status"] == "finished"


def test_a_disk_that_fills_up_mid_run_stops_it_with_exit_1_and_the_reason_and_resume_completes(tmp_path):
    root, copy = tmp_path / "disk", tmp_path / "copy"
    root.mkdir()
    script = tmp_path / "disk-script.yaml"
    script.write_text(yaml.safe_dump({"default": {"text": "The answer is 0.", "delay_s": 0.1}}), encoding="utf-8")
    args = [*scripted_args(root, f"backend.script={script}", "backend.max_concurrency=1", limit=40)]
    command = " ".join(f"'{a}'" for a in [sys.executable, "-c", "import sys; from mascompare.cli import app; "
                                          "app(sys.argv[1:])", *args])
    # in a private 1.1 MB tmpfs: the run starts, a filler takes the rest of the space, the run stops; then room
    # is made (the filler goes) and the same command resumes; the run's folder is copied out before the tmpfs goes
    shell = (f"mount -t tmpfs -o size=1100k tmpfs {root} && cd {root} && ({command} > {tmp_path}/first.txt 2>&1 & "
             f"pid=$!; n=0; while [ -z \"$(find {root} -name samples.jsonl)\" ] && [ $n -lt 600 ]; do sleep 0.05; "
             f"n=$((n+1)); done; "
             f"dd if=/dev/zero of={root}/filler bs=1k 2>/dev/null; wait $pid; echo $? > {tmp_path}/first.rc; "
             f"cp -r {root} {copy}/; rm {root}/filler; {command} > {tmp_path}/second.txt 2>&1; "
             f"echo $? > {tmp_path}/second.rc; cp -r {root}/. {tmp_path}/after)")
    copy.mkdir()
    process = cli_process(root_mount=shell)  # the mount line does all the work; its python only prints help
    process.communicate(timeout=120)
    first = (tmp_path / "first.txt").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first
    stopped_dir = run_dir_of(copy)
    samples = stopped_dir / "samples.jsonl"
    assert error_line(first) == (f"Writing {root}/{samples.relative_to(copy / 'disk')} failed: No space left on "
                                 f"device (run.output_root={root}); make room there and run the same command again "
                                 "to resume.")
    info = run_json(stopped_dir)
    assert info["status"] == "stopped" and "No space left on device" in info["stop_reason"]
    assert samples.read_bytes().endswith(b"\n")  # whole lines only: the failed one was cut back
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.txt").read_text()
    after = run_dir_of(tmp_path / "after")
    assert len(keys_once(after)) == 40 == len(set(keys_once(after))) and run_json(after)["status"] == "finished"


def test_a_disk_full_before_the_run_refuses_it_with_exit_1_and_writes_nothing(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    args = scripted_args(root / "results", script={})
    command = " ".join(f"'{a}'" for a in [sys.executable, "-c", "import sys; from mascompare.cli import app; "
                                          "app(sys.argv[1:])", *args])
    # a private 512 kB tmpfs, filled before the run: a fault of the machine, not of the input (exit 1, not 2)
    shell = (f"mount -t tmpfs -o size=512k tmpfs {root} && (dd if=/dev/zero of={root}/filler bs=1k 2>/dev/null; "
             f"ls -A {root} > {tmp_path}/before.txt; {command} > {tmp_path}/out.txt 2>&1; echo $? > {tmp_path}/rc; "
             f"ls -A {root} > {tmp_path}/after.txt)")
    cli_process(root_mount=shell).communicate(timeout=120)  # the mount line does the work; its python prints help
    output = (tmp_path / "out.txt").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1", output
    assert error_line(output) == (f"run.output_root={root / 'results'} is on a full disk (under 1 MB free at {root}); "
                                  "free some space or set run.output_root to another disk.")
    assert "Traceback" not in output
    assert (tmp_path / "after.txt").read_text() == (tmp_path / "before.txt").read_text() == "filler\n"


def test_a_failed_fast_path_check_with_fail_stops_the_run_with_a_true_status(tiny_model_dir, tmp_path, monkeypatch):
    from faults import invoke

    from mascompare.backends.hf import backend as hf_backend
    from mascompare.backends.hf.fast_path_check import CheckResult
    from mascompare.cli import app

    def failing(steps, state, prompts, visible, room, latent):
        hidden, logits = steps.prefill(state, prompts, visible)  # the run's own prefill, then a failed verdict
        return CheckResult(False, "logits differ by 3.5 at step 2", {}), hidden, logits

    monkeypatch.setattr(hf_backend, "check_fast_path", failing)
    result = invoke(app, ["run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
                          "generation.max_new_tokens=2", "run.progress=false", f"run.output_root={tmp_path}",
                          "task.limit=2", "backend.compile=true", "backend.fast_path_check=fail"])
    assert result.exit_code == 2
    sentence = ("The fast path (backend.compile) failed its check against the eager path: logits differ by 3.5 at "
                "step 2; set backend.fast_path_check=fallback to run eagerly instead, or backend.compile=false.")
    assert error_line(result.output) == sentence
    info = run_json(run_dir_of(tmp_path))
    assert info["status"] == "stopped" and info["stop_reason"] == sentence
