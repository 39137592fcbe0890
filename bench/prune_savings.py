"""pruned_mas: the unpruned graph vs the pruned graph on the same questions, same model, one process.

Runs the unpruned graph (method.prune_rate=0, no calibration), then calibrates on questions disjoint
from the evaluated ones, prunes one-shot and runs the fixed pruned graph on the same questions.
Prints per graph: accuracy, prompt tokens, decoded tokens and calls per sample, wall time per sample
(model loading excluded), the token reduction, and the calibration cost with the number of evaluated
questions after which pruning has paid for its calibration. The AgentPrune paper reports 28.1-72.8%
fewer prompt tokens at comparable accuracy (five gpt-4 agents, its Table 3); recompute ours from
the raw counts printed here.

    .venv/bin/python bench/prune_savings.py                      # embedded SmolLM2 on CPU, arith
    .venv/bin/python bench/prune_savings.py --limit 4 --cal-size 2 --cal-iterations 1   # a quick check
    .venv/bin/python bench/prune_savings.py --out results/bench-prune   # also keep masks.json / masks.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.methods import METHODS
from mascompare.records import Usage
from mascompare.settings import validate
from mascompare.tasks import build_task


def compose_cfg(prune_rate: float, args) -> object:
    overrides = [
        "method=pruned_mas", f"task={args.task}", f"task.limit={args.limit}", f"backend.device={args.device}",
        f"generation.max_new_tokens={args.max_new_tokens}", f"method.rounds={args.rounds}",
        f"method.topology={args.topology}", f"method.decision={args.decision}", f"method.prune_rate={prune_rate}",
        f"method.seed={args.seed}", f"method.calibration.size={args.cal_size}",
        f"method.calibration.iterations={args.cal_iterations}", f"method.calibration.batch_size={args.cal_batch_size}",
    ]
    if args.task == "arith" and args.levels:
        overrides.append(f"task.levels=[{args.levels}]")
    return compose_config(*overrides)


def run_graph(prune_rate, backend, task, samples, args, out_dir) -> dict:
    settings = validate(compose_cfg(prune_rate, args))
    accountant = Accountant()
    method = METHODS.get("pruned_mas")(settings.method, backend, task, settings.generation, accountant)
    method.prepare(out_dir, samples, resume=False)  # calibrates here when prune_rate > 0
    correct, start = 0, time.perf_counter()
    for i in range(0, len(samples), args.batch_size):
        batch = samples[i:i + args.batch_size]
        for sample, output in zip(batch, method.run(batch)):
            correct += task.score(task.extract(output.final_text).flexible, sample.target)
    elapsed = time.perf_counter() - start
    usage, n = Usage.of([r for s in samples for r in accountant.take(s.id)]), len(samples)
    info = method.run_info()
    return {"accuracy": correct / n, "input": usage.input_tokens / n, "decoded": usage.output_tokens / n,
            "calls": usage.calls / n, "seconds": elapsed / n, "graph": info["graph"],
            "calibration": info["calibration"]}


def reduction(before: float, after: float) -> str:
    return f"{1 - after / before:.1%}" if before else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arith")
    parser.add_argument("--levels", default="1,2,3", help="arith levels, comma-separated ('' = the task's default)")
    parser.add_argument("--limit", type=int, default=24, help="evaluated questions")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--topology", default="full")
    parser.add_argument("--decision", default="llm", choices=("llm", "vote"))
    parser.add_argument("--prune-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cal-size", type=int, default=16, help="calibration questions (disjoint from the evaluated)")
    parser.add_argument("--cal-iterations", type=int, default=6)
    parser.add_argument("--cal-batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="directory for the pruned graph's masks.json and masks.png")
    args = parser.parse_args()

    settings = validate(compose_cfg(args.prune_rate, args))
    backend = build_backend(settings.backend, settings.model)
    task = build_task(settings.task)
    samples = task.samples()
    console = Console()
    console.print(f"{len(samples)} {args.task} questions · {backend.model_name} on {backend.device} · "
                  f"{args.topology} graph, 4 agents, {args.rounds} round(s), decision {args.decision} · "
                  f"max_new_tokens {args.max_new_tokens} · greedy · prune rate {args.prune_rate}")

    unpruned = run_graph(0.0, backend, task, samples, args, None)
    pruned = run_graph(args.prune_rate, backend, task, samples, args, args.out)

    table = Table(title="per evaluated sample, same questions and settings")
    for column in ("graph", "edges (spatial/temporal)", "accuracy", "prompt tokens", "decoded tokens", "calls",
                   "wall time (s)"):
        table.add_column(column, justify="right")
    for name, r in (("unpruned", unpruned), (f"pruned p={args.prune_rate}", pruned)):
        edges = r["graph"]["edges_evaluated"]
        temporal = edges["temporal"] if r["graph"]["temporal_edges_used"] else "unused"  # one round
        table.add_row(name, f"{edges['spatial']}/{temporal}", f"{r['accuracy']:.0%}", f"{r['input']:.1f}",
                      f"{r['decoded']:.1f}", f"{r['calls']:.1f}", f"{r['seconds']:.2f}")
    console.print(table)
    saved_in, saved_out = unpruned["input"] - pruned["input"], unpruned["decoded"] - pruned["decoded"]
    console.print(f"prompt tokens:  {reduction(unpruned['input'], pruned['input'])} fewer "
                  f"({unpruned['input']:.1f} -> {pruned['input']:.1f}; paper: 28.1-72.8% fewer)")
    console.print(f"decoded tokens: {reduction(unpruned['decoded'], pruned['decoded'])} fewer "
                  f"({unpruned['decoded']:.1f} -> {pruned['decoded']:.1f}; the paper sees these rise in some settings)")
    total_before, total_after = unpruned["input"] + unpruned["decoded"], pruned["input"] + pruned["decoded"]
    console.print(f"all tokens:     {reduction(total_before, total_after)} fewer · accuracy "
                  f"{unpruned['accuracy']:.0%} -> {pruned['accuracy']:.0%} (n={len(samples)})")

    cal = pruned["calibration"]
    if cal.get("performed"):
        u = cal["usage"]
        console.print(f"calibration (not in the table): {cal['questions']} questions ({cal['source']}), "
                      f"{cal['iterations']} x {cal['batch_size']} graphs: {u['calls']} calls, "
                      f"{u['input_tokens']} prompt + {u['output_tokens']} decoded tokens, {cal['elapsed_s']:.1f} s")
        per_question = saved_in + saved_out
        if per_question > 0:
            console.print(f"pruning pays for its calibration after "
                          f"{(u['input_tokens'] + u['output_tokens']) / per_question:.0f} evaluated questions")
        else:
            console.print("pruning saved no tokens per question here, so calibration is not paid back")
    if args.out:
        console.print(f"masks: {args.out}/masks.json, {args.out}/masks.png")


if __name__ == "__main__":
    main()
