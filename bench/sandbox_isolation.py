"""What bubblewrap isolation costs against process isolation, on the HumanEval reference solutions.

1. Start-up: an empty program, run alternately under `bwrap` and `process` isolation; the median
   milliseconds per program of each, and their difference (what the namespaces, mounts and seccomp
   filter add).
2. Throughput: the 164 HumanEval reference solutions with their tests, scored as a code task scores
   a batch (`score_ahead`, `--workers` at once), in alternating passes per isolation level;
   programs per second of each and their ratio. Every reference must pass.
3. With `--references`: every HumanEval and MBPP reference solution once under `bwrap`, with the
   count that passed (all should).

Timings are wall clock, measured side by side in alternating runs on the same machine.

    python bench/sandbox_isolation.py --workers 2 --references
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from omegaconf import OmegaConf

from mascompare.tasks import build_task
from mascompare.tasks.code import with_candidate
from mascompare.tasks.sandbox import Limits, Sandbox

ISOLATIONS = ("bwrap", "process")


def reference_answers(task_name: str, isolation: str, workers: int):
    """The task, and its reference solutions as a model would answer: (fenced code, target)."""
    task = build_task(OmegaConf.create({"name": task_name, "source": "offline",
                                        "sandbox": {"isolation": isolation, "workers": workers}}))
    return task, [(f"```python\n{s.metadata['canonical_solution']}\n```", s.target) for s in task.load()]


def score_all(task, answers) -> tuple[float, list]:
    """Seconds to score the answers as a batch, and the outcomes of those that did not pass."""
    began = time.perf_counter()
    task.score_ahead(answers)
    elapsed = time.perf_counter() - began
    failed = [task.outcome(with_candidate(target, task.extract(text).strict)) for text, target in answers
              if not task.score(task.extract(text).strict, target)]
    return elapsed, failed


def startup_ms(rounds: int) -> dict[str, float]:
    sandboxes = {isolation: Sandbox(Limits(), isolation) for isolation in ISOLATIONS}
    times = {isolation: [] for isolation in ISOLATIONS}
    for _ in range(rounds):
        for isolation, sandbox in sandboxes.items():
            outcome = sandbox.run("pass")
            assert outcome.passed, outcome
            times[isolation].append(outcome.seconds * 1000)
    return {isolation: statistics.median(ms) for isolation, ms in times.items()}


def throughput(passes: int, workers: int) -> dict[str, float]:
    rates = {isolation: [] for isolation in ISOLATIONS}
    for _ in range(passes):
        for isolation in ISOLATIONS:
            task, answers = reference_answers("humaneval", isolation, workers)
            elapsed, failed = score_all(task, answers)
            assert not failed, f"{len(failed)} HumanEval references failed under {isolation}: {failed[0]}"
            rates[isolation].append(len(answers) / elapsed)
    return {isolation: statistics.median(r) for isolation, r in rates.items()}


def references_passing(workers: int) -> None:
    for name in ("humaneval", "mbpp"):
        task, answers = reference_answers(name, "bwrap", workers)
        _, failed = score_all(task, answers)
        print(f"{name}: {len(answers) - len(failed)}/{len(answers)} reference solutions pass under bwrap")
        for outcome in failed:
            print(f"  {outcome.ending}: {outcome.status}: {outcome.stderr.strip().splitlines()[-1:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="empty programs per isolation level for start-up")
    parser.add_argument("--passes", type=int, default=2, help="alternating HumanEval passes per isolation level")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--references", action="store_true", help="also check every HumanEval and MBPP reference")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.workers} workers")

    startup = startup_ms(args.rounds)
    print(f"start-up per program (median of {args.rounds}, alternating): "
          + ", ".join(f"{iso} {ms:.1f} ms" for iso, ms in startup.items())
          + f"; bwrap adds {startup['bwrap'] - startup['process']:.1f} ms")

    rates = throughput(args.passes, args.workers)
    print(f"HumanEval references, {args.workers} workers (median of {args.passes} alternating passes): "
          + ", ".join(f"{iso} {rate:.1f} programs/s" for iso, rate in rates.items())
          + f"; bwrap/process {rates['bwrap'] / rates['process']:.2f}")

    if args.references:
        references_passing(args.workers)


if __name__ == "__main__":
    main()
