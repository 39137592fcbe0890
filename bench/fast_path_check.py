"""What the fast path's check (backend.fast_path_check) costs, as a share of a smoke run.

The smoke experiment's five arms (8 arith questions, batch 8, 64 new tokens; pruned methods with their short
calibrations) run one after another on the embedded model with the fast path forced on (backend.compile=true),
each on its own backend, so each checks its own first batch, as separate `mascompare run` commands would; a
sweep that keeps its backend checks once. Per arm: process CPU time of the check and of the whole arm (the check
included), one thread. The check's first compiled step compiles the shape the run's first step would compile
anyway, and its fast prefill is the run's own; after each arm, the same check runs again on the warm backend, less
a plain prefill of the same prompts: its cost without compiling.

On a CPU the fast path is traced by torch.compile's `eager` backend (no code generation; inductor would take
minutes per shape on a small machine), so the figures are the check's forward passes against the run's.

    .venv/bin/python bench/fast_path_check.py
"""

from __future__ import annotations

import argparse
import time

import torch

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.backends.hf import HFBackend
from mascompare.backends.hf import backend as hf_backend
from mascompare.backends.hf.fast_path_check import check_fast_path
from mascompare.methods import METHODS
from mascompare.settings import validate
from mascompare.tasks import build_task

ARMS = ("baseline", "text_mas", "latent_mas", "pruned_mas", "pruned_latent_mas")


class TimedCheck:
    """check_fast_path, timed in process CPU seconds, its arguments kept for a warm rerun."""

    def __init__(self):
        self.seconds, self.calls = 0.0, []

    def __call__(self, steps, state, prompts, visible, room, latent):
        start = time.process_time()
        outcome = check_fast_path(steps, state, prompts, visible, room, latent)
        self.seconds += time.process_time() - start
        self.calls.append((steps, prompts, room, latent))
        return outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = validate(compose_config("backend.device=cpu", "backend.compile=false"))
    base = build_backend(loaded.backend, loaded.model)
    print(f"{base.model_name} on cpu ({base.dtype}), {torch.get_num_threads()} thread; fast path forced on, traced by "
          "torch.compile's eager backend; process CPU time")
    rows, total_check, total_run = [], 0.0, 0.0
    for arm in args.arms:
        settings = validate(compose_config("+experiment=smoke", f"+experiment/smoke_arm={arm}"))
        backend = HFBackend.from_loaded(base.model, base.tokenizer, base.model_name, "cpu", compiled=True)
        backend.steps.compile_config.backend = "eager"
        timed = TimedCheck()
        hf_backend.check_fast_path = timed
        try:
            task = build_task(settings.task)
            samples = task.samples()
            start = time.process_time()
            method = METHODS.get(settings.method.name)(settings.method, backend, task, settings.generation,
                                                       Accountant())
            method.prepare(None, samples, resume=False)
            batch_size = settings.run.batch_size
            for i in range(0, len(samples), batch_size):
                method.run(samples[i:i + batch_size])
            elapsed = time.process_time() - start
        finally:
            hf_backend.check_fast_path = check_fast_path
        steps, prompts, room, latent = timed.calls[0]
        start = time.process_time()
        check_fast_path(steps, steps.layout.new(len(prompts)), prompts, None, room, latent)  # shapes compiled now
        checked = time.process_time() - start
        start = time.process_time()
        steps.prefill(steps.layout.new(len(prompts)), prompts)  # what the run itself pays of that
        warm = checked - (time.process_time() - start)
        record = backend.run_info()["fast_path"]
        rows.append((arm, record["path"], record["passed"], record["rows"], timed.seconds, warm, elapsed))
        total_check, total_run = total_check + timed.seconds, total_run + elapsed
        print(f"{arm:<18} path {record['path']}, check passed={record['passed']} on {record['rows']} row(s) "
              f"(max |Δlogit| {record['max_abs_diff']:.2g}): check {timed.seconds:.2f} s ({warm:.2f} s warm) of "
              f"{elapsed:.2f} s = {timed.seconds / elapsed:.1%} ({warm / elapsed:.1%} warm)")
    warm_total = sum(row[5] for row in rows)
    print(f"all arms, each checking its first batch: check {total_check:.2f} s of {total_run:.2f} s = "
          f"{total_check / total_run:.1%} ({warm_total / total_run:.1%} without compiling)")
    first = rows[0]
    print(f"one sweep keeping its backend (checks once, on the {first[0]} arm's first batch): "
          f"{first[4] / total_run:.1%} ({first[5] / total_run:.1%} without compiling)")


if __name__ == "__main__":
    main()
