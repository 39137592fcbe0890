"""latent_mas vs pruned_latent_mas vs pruned_mas on the same questions, same model, one process.

Runs latent_mas (sequential, its four agents), pruned_latent_mas (pruned_mas's four solvers in latent
space plus a final agent: the full graph, and the graph calibrated and pruned at p = 0.5, with the final
agent seeing every agent or only its learned in-edges) and pruned_mas (the same solvers exchanging text,
one round, calibrated and pruned at p = 0.5) on the same questions with the same decoding settings.
Prints per method and evaluated sample: accuracy with its 95% Wilson interval, KV positions the agents
attend to (latent methods: the cache positions each agent's mask lets it see, summed over agents; per
agent below), prompt tokens processed, forward passes, decoded tokens and process CPU time per sample
(one torch thread, model loading excluded); then each method's calibration cost apart, and the ratios
against latent_mas measured in this run.

    .venv/bin/python bench/pruned_latent.py                                  # embedded SmolLM2 on CPU
    .venv/bin/python bench/pruned_latent.py --limit 4 --cal-size 2 --cal-iterations 1   # a quick check
    .venv/bin/python bench/pruned_latent.py --out results/bench-pruned-latent  # keep masks.json / masks.png
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.methods import METHODS
from mascompare.records import Usage
from mascompare.settings import validate
from mascompare.stats import wilson_interval
from mascompare.tasks import build_task

ARMS = {  # label -> method and its own settings
    "latent_mas": ("latent_mas", ["method.structure=sequential"]),
    "pruned_latent_mas p=0": ("pruned_latent_mas", ["method.prune_rate=0"]),
    "pruned_latent_mas p=0.5": ("pruned_latent_mas", ["method.prune_rate=0.5"]),
    "pruned_latent_mas p=0.5 final_sees=learned": ("pruned_latent_mas", ["method.prune_rate=0.5",
                                                                         "method.final_sees=learned"]),
    "pruned_mas p=0.5": ("pruned_mas", ["method.prune_rate=0.5", "method.rounds=1", "method.decision=llm"]),
}
FULL_GRAPH = "pruned_latent_mas p=0"  # the same agents unpruned: what pruning saves is measured against it


def compose_cfg(method: str, own: list[str], args) -> object:
    overrides = [f"method={method}", "task=arith", f"task.limit={args.limit}", f"task.levels=[{args.levels}]",
                 f"generation.max_new_tokens={args.max_new_tokens}", f"backend.device={args.device}", *own]
    if method != "pruned_mas":
        overrides.append(f"method.latent_steps={args.latent_steps}")
    if method != "latent_mas":
        overrides += [f"method.calibration.size={args.cal_size}", f"method.calibration.iterations={args.cal_iterations}",
                      f"method.calibration.batch_size={args.cal_batch_size}", f"method.seed={args.seed}"]
    return compose_config(*overrides)


def run_arm(label, method_name, own, backend, task, samples, args) -> dict:
    settings = validate(compose_cfg(method_name, own, args))
    accountant = Accountant()
    method = METHODS.get(method_name)(settings.method, backend, task, settings.generation, accountant)
    out = Path(args.out) / label.replace(" ", "_") if args.out else None
    start = time.process_time()
    method.prepare(out, samples, resume=False)  # pruned methods calibrate here
    calibration_cpu = time.process_time() - start
    correct, start = 0, time.process_time()
    for i in range(0, len(samples), args.batch_size):
        batch = samples[i:i + args.batch_size]
        for sample, output in zip(batch, method.run(batch)):
            correct += task.score(task.extract(output.final_text).flexible, sample.target)
    cpu = time.process_time() - start
    records = [r for s in samples for r in accountant.take(s.id)]
    per_agent = defaultdict(int)
    for r in records:
        per_agent[r.agent] += r.kv_positions_received
    n = len(samples)
    info = method.run_info()
    return {"label": label, "correct": correct, "n": n,
            "usage": {k: v / n for k, v in Usage.of(records).to_json().items() if isinstance(v, (int, float))},
            "kv_per_agent": {a: v / n for a, v in per_agent.items()}, "cpu": cpu / n,
            "calibration": info.get("calibration"), "calibration_cpu": calibration_cpu, "graph": info.get("graph")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2", help="arith levels, comma-separated")
    parser.add_argument("--limit", type=int, default=16, help="evaluated questions")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--latent-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cal-size", type=int, default=8, help="calibration questions (disjoint from the evaluated)")
    parser.add_argument("--cal-iterations", type=int, default=3)
    parser.add_argument("--cal-batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="directory for masks.json and masks.png of each pruned method")
    args = parser.parse_args()

    torch.set_num_threads(1)  # process CPU time is then a stable measure on a shared machine
    settings = validate(compose_cfg("latent_mas", [], args))
    backend = build_backend(settings.backend, settings.model)
    task = build_task(settings.task)
    samples = task.samples()
    console = Console(width=140)
    console.print(f"{len(samples)} arith questions (levels {args.levels}) · {backend.model_name} on {backend.device}, "
                  f"1 thread · max_new_tokens {args.max_new_tokens} · greedy · m = {args.latent_steps} · "
                  f"batch {args.batch_size} · calibration {args.cal_iterations} x {args.cal_batch_size} graphs "
                  f"on {args.cal_size} questions")
    arms = [run_arm(label, name, own, backend, task, samples, args) for label, (name, own) in ARMS.items()]

    table = Table(title="per evaluated sample, same questions and settings (calibration apart, below)")
    for column in ("method", "accuracy [95% CI]", "KV positions attended", "prompt tokens", "forward passes",
                   "decoded tokens", "CPU s"):
        table.add_column(column, justify="right")
    for arm in arms:
        u, low_high = arm["usage"], wilson_interval(arm["correct"], arm["n"])
        table.add_row(arm["label"], f"{arm['correct']}/{arm['n']} [{low_high[0]:.0%}, {low_high[1]:.0%}]",
                      f"{u['kv_positions_received']:.1f}", f"{u['input_tokens']:.1f}", f"{u['forward_passes']:.1f}",
                      f"{u['output_tokens']:.1f}", f"{arm['cpu']:.2f}")
    console.print(table)
    by_label = {arm["label"]: arm for arm in arms}
    for arm in arms[1:]:
        references = ["latent_mas"] + ([FULL_GRAPH] if arm["label"].startswith("pruned_latent_mas p=0.") else [])
        for name in references:
            reference = by_label[name]["usage"]
            ratios = {key: arm["usage"][key] / reference[key] if reference[key] else float("nan")
                      for key in ("kv_positions_received", "forward_passes", "output_tokens")}
            console.print(f"{arm['label']} / {name}: KV positions attended {ratios['kv_positions_received']:.2f}x, "
                          f"forward passes {ratios['forward_passes']:.2f}x, decoded tokens "
                          f"{ratios['output_tokens']:.2f}x, CPU time {arm['cpu'] / by_label[name]['cpu']:.2f}x")
    for arm in arms:
        if arm["usage"]["kv_positions_received"]:
            agents = ", ".join(f"{a} {v:.1f}" for a, v in arm["kv_per_agent"].items())
            console.print(f"KV positions attended per agent, {arm['label']}: {agents}")
    for arm in arms:
        cal = arm["calibration"] or {}
        if cal.get("performed"):
            u = cal["usage"]
            console.print(f"calibration of {arm['label']} (not in the table): {cal['iterations']} x "
                          f"{cal['batch_size']} graphs on {cal['questions']} questions: {u['calls']} calls, "
                          f"{u['input_tokens']} prompt + {u['output_tokens']} decoded tokens, "
                          f"{u['kv_positions_received']} KV positions attended, {u['forward_passes']} forward passes, "
                          f"{arm['calibration_cpu']:.1f} CPU s")
        if arm["graph"] and "kept" in arm["graph"]:
            g = arm["graph"]
            kept = ", ".join(f"{i}->{j}" for i, j in g["kept"])
            console.print(f"graph kept by {arm['label']}: {g['edges_kept']} of {g['edges_initial']} edges: {kept} "
                          f"(final agent sees {g['final_sees']}; skipped agents: {g['agents_skipped'] or 'none'})")
    if args.out:
        console.print(f"masks: {args.out}/<arm>/masks.json and masks.png")


if __name__ == "__main__":
    main()
