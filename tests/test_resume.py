"""Killing a run with SIGKILL and running the same command again loses and duplicates nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_command(tiny_model_dir, root):
    return [sys.executable, "-m", "mascompare.cli", "run", "method=baseline", "task=arith", "task.limit=10",
            "run.batch_size=1", "generation.max_new_tokens=12", "run.progress=false", f"model.path={tiny_model_dir}",
            "model.name=tiny", f"run.output_root={root}"]


def sample_lines(root: Path) -> list[str]:
    files = list(root.glob("arith/baseline/tiny/*/samples.jsonl"))
    return files[0].read_text().splitlines() if files else []


def test_sigkill_then_rerun_finishes_without_loss_or_duplicates(tiny_model_dir, tmp_path):
    cmd = run_command(tiny_model_dir, tmp_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(sample_lines(tmp_path)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written_before = len(sample_lines(tmp_path))
    assert 3 <= written_before < 10, "the run should have been killed part-way"
    # A kill can also land in the middle of a line: simulate the worst case.
    (samples,) = tmp_path.glob("arith/baseline/tiny/*/samples.jsonl")
    with open(samples, "a") as f:
        f.write('{"id": "arith-L1-00')

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)

    ids = [json.loads(line)["id"] for line in sample_lines(tmp_path)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 10
    info = json.loads((samples.parent / "run.json").read_text())
    assert info["status"] == "finished" and info["summary"]["n"] == 10
    assert info["samples_resumed"] == written_before
