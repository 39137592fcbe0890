"""Fault class 8, a loaded machine: run.threads=auto gives torch the cores free at the start (OMP_NUM_THREADS where
set decides instead), a number sets it, and the run records the count it computed with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from faults import invoke, run_dir_of, run_json

from mascompare import threads
from mascompare.cli import app


def test_a_number_or_omp_num_threads_decides(monkeypatch):
    assert threads.choose(3) == (3, "run.threads=3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose("auto") == (2, "OMP_NUM_THREADS")


@pytest.mark.parametrize("usable, busy, chosen", [(2, 1.0, 1), (2, 0.1, 2), (4, 1.4, 3), (2, 3.5, 1), (8, 0.0, 8)])
def test_auto_takes_the_cores_free_at_the_start_and_at_least_one(monkeypatch, usable, busy, chosen):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: usable)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    count, why = threads.choose("auto")
    assert count == chosen and why == f"{chosen} of {usable} cores free at the start ({busy:.1f} busy with other work)"


def test_a_busy_loop_on_our_core_is_seen_as_busy():
    core = min(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    loop = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        os.sched_setaffinity(0, {core})
        threads.busy_cores(0.3)  # the loop up to speed
        assert threads.busy_cores(0.5) >= 0.5
    finally:
        os.sched_setaffinity(0, mine)
        loop.kill()
        loop.wait()


def test_a_local_run_computes_with_the_count_set_and_records_it(tiny_model_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        result = invoke(app, ["run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
                              "generation.max_new_tokens=2", "run.progress=false", f"run.output_root={tmp_path}",
                              "task.limit=1", f"run.threads={before + 1}"])
        assert result.exit_code == 0, result.output
        assert run_json(run_dir_of(tmp_path))["environment"]["torch"]["threads"] == before + 1
    finally:
        torch.set_num_threads(before)
