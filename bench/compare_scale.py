"""`mascompare compare` on a generated folder of many runs: wall time, process CPU time and peak memory.

The folder is a sweep of --runs runs of one task and model (five methods, each at --runs / 5 settings of a
method knob), each with --samples answered questions in batches of five (two agent calls per question, token
counts, times and verdicts drawn from a seeded generator), written through the store as a run writes them:
samples.jsonl, prompts.jsonl and run.json with a full composed config. `compare` then runs once per checkout
given, in its own process, on the same folder (with its page, view.html, as by default), and once more with
--no-html:

    python bench/compare_scale.py --tree /tmp/main-checkout --tree . --repeat 5   # before and after, in turn

Each checkout runs with PYTHONPATH set to it and OMP_NUM_THREADS=1. Peak memory is the child's maximum
resident set size.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("baseline", "text_mas", "pruned_mas", "latent_mas", "pruned_latent_mas")


def generate(root: Path, runs: int, samples: int, seed: int = 0) -> None:
    from omegaconf import OmegaConf

    from mascompare.app import compose_config
    from mascompare.identity import identity_hash, short_hash
    from mascompare.records import RunRecord, SampleRecord, Turn, Usage, UsageRecord
    from mascompare.runner import recorded_config
    from mascompare.store import RunStore, write_json

    os.fsync = lambda fd: None  # a generated folder need not survive a power cut: write it fast
    rng = random.Random(seed)
    base = {method: OmegaConf.to_container(compose_config(f"method={method}", "task=arith", "model.name=tiny"),
                                           resolve=True) for method in METHODS}
    questions = [f"What is {k} + {k + 3}? Work it out step by step and give the final number." for k in range(samples)]
    for k in range(runs):
        method = METHODS[k % len(METHODS)]
        config = {**base[method], "method": {**base[method]["method"], "knob": k // len(METHODS)}}
        cfg = OmegaConf.create(config)
        store = RunStore(root / str(k))
        skill = rng.uniform(0.2, 0.8)
        for i, question in enumerate(questions):
            calls = [UsageRecord(f"q{i}", agent, agent, input_tokens=rng.randint(80, 400),
                                 output_tokens=rng.randint(5, 200), forward_passes=rng.randint(5, 200),
                                 wall_time_s=rng.uniform(0.1, 2.0), finish_reason=rng.choice(("eos", "length")),
                                 messages=[{"role": "system", "content": "You are one of a careful team."},
                                           {"role": "user", "content": f"{question}\n\nAnswer as {agent}."}])
                     for agent in ("planner", "solver")]
            right = rng.random() < skill
            store.append(SampleRecord(
                id=f"q{i}", repeat=0, batch=i // 5, target=str(2 * i + 3), error=None, usage=Usage.of(calls),
                agents=calls, transcript=[Turn(c.agent, c.role, 0, "some text") for c in calls],
                final_text="The answer is 7.", question_hash=short_hash(question), target_hash=short_hash(str(i)),
                extracted_strict="7", extracted_flexible="7", correct_strict=right, correct_flexible=right,
                extractor_version="numeric-2", wall_time_s=sum(c.wall_time_s for c in calls)))
        from mascompare import stats

        record = RunRecord(status="finished", run_dir=str(store.dir), task="arith", method=method, model="tiny",
                           backend="hf", config=recorded_config(cfg), config_hash=identity_hash(cfg),
                           samples_total=samples, summary=stats.summarize_records(list(store.latest().values())))
        write_json(store.dir / "run.json", record.to_json())


def measure(tree: Path, root: Path, out: Path, *extra: str) -> tuple[float, float, float, int, int]:
    """(wall s, CPU s, peak MB, exit status, lines printed) of one `compare` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    command = [sys.executable, "-c", "import resource, sys; from mascompare.cli import app\n"
               "try:\n    app(sys.argv[1:])\nfinally:\n"
               "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
               "    print(f'@@ {u.ru_utime + u.ru_stime:.2f} {u.ru_maxrss / 1024:.0f}', file=sys.stderr)",
               "compare", str(root), "--out", str(out), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)  # `python -c` imports from
    # its working directory first: the checkout's own, not the one this benchmark runs in
    wall = time.perf_counter() - started
    marks = [line.split() for line in done.stderr.splitlines() if line.startswith("@@ ")]
    cpu, peak = (float(marks[-1][1]), float(marks[-1][2])) if marks else (float("nan"), float("nan"))
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    return wall, cpu, peak, done.returncode, len(done.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable; default .)")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, each running every checkout and variant once in turn (the machine's noise "
                             "falls alike on all); the summary gives each one's median and fastest")
    parser.add_argument("--keep", type=Path, help="generate into this folder (and keep it); reused if it exists")
    args = parser.parse_args()
    trees = args.tree or [Path(".")]
    variants = (("default", ()), ("--no-html", ("--no-html",)))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch) / "sweep"
        if not root.exists():
            started = time.perf_counter()
            generate(root, args.runs, args.samples)
            print(f"generated {args.runs} runs x {args.samples} samples in {time.perf_counter() - started:.0f} s "
                  f"({sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 2**20:.0f} MB)")
        print(f"{'checkout':40} {'variant':10} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} {'exit':>5} {'lines out':>9}")
        measured: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
        for _ in range(args.repeat):
            for k, tree in enumerate(trees):
                for variant, extra in variants:
                    out = Path(scratch) / f"out-{k}-{variant}"
                    wall, cpu, peak, status, lines = measure(tree.resolve(), root, out, *extra)
                    measured.setdefault((k, variant), []).append((wall, cpu, peak))
                    print(f"{str(tree):40} {variant:10} {wall:8.1f} {cpu:8.1f} {peak:8.0f} {status:5d} {lines:9d}",
                          flush=True)
        if args.repeat > 1 or len(trees) > 1:
            print(f"\n{'checkout':40} {'variant':10} {'median CPU s':>12} {'fastest':>8} {'median wall s':>13} "
                  f"{'max peak MB':>11} {'CPU vs first':>12}")
            for (k, variant), rows in measured.items():
                cpu = statistics.median(r[1] for r in rows)
                first = statistics.median(r[1] for r in measured[(0, variant)])
                print(f"{str(trees[k]):40} {variant:10} {cpu:12.1f} {min(r[1] for r in rows):8.1f} "
                      f"{statistics.median(r[0] for r in rows):13.1f} {max(r[2] for r in rows):11.0f} "
                      f"{cpu / first:11.2f}x")


if __name__ == "__main__":
    main()
