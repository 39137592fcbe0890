"""pruned_mas with our own team vs the AgentPrune authors' GSM8K team (method.prompt_pack=agentprune_gsm8k), on
the same questions, same model, in one process; then every message of one question under the pack.

Both runs use the same graph (method.prune_rate, default 0: the unpruned graph, so that only the team differs)
and decoding. Printed per run: calls, prompt tokens and decoded tokens per question (and their ratio, pack /
ours), the programs the pack's Programming Expert had run and how they ended, accuracy (strict and flexible;
only a sanity check with the embedded model, which scores near zero on GSM8K), and CPU time. Then the messages
of the first question under the pack, every agent in every round and the decider, each with the reply it got
(the executed program's output included), decoded with a smaller budget so the dump stays readable.

    .venv/bin/python bench/authors_pack.py                              # embedded SmolLM2 on CPU, 8 GSM8K questions
    .venv/bin/python bench/authors_pack.py --limit 2 --max-new-tokens 32 # a quick check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mascompare.app import compose_config
from mascompare.backends import KeptBackend
from mascompare.runner import execute
from mascompare.store import expand_messages, latest_records, read_texts

PACK = "agentprune_gsm8k"


def run(args, out: Path, pack: bool, kept: KeptBackend, max_new_tokens: int, limit: int):
    overrides = ["method=pruned_mas", f"task={args.task}", f"task.limit={limit}", "run.progress=false",
                 f"generation.max_new_tokens={max_new_tokens}", f"method.rounds={args.rounds}",
                 f"method.prune_rate={args.prune_rate}", f"run.batch_size={args.batch_size}",
                 f"run.output_root={out}"]
    if pack:
        overrides.append(f"method.prompt_pack={PACK}")
    started = time.process_time()
    record = execute(compose_config(*overrides), out / ("pack" if pack else "ours") / str(max_new_tokens), kept)
    return record, time.process_time() - started


def figures(record, run_dir: Path, cpu_s: float) -> dict:
    rows = [r for r in latest_records(run_dir).values()]
    n = len(rows)
    calls = [a for r in rows for a in r.agents if a.phase == "eval"]
    endings = Counter(a.execution["ending"] for a in calls if a.execution)
    return {"n": n, "calls": len(calls) / n, "prompt": sum(a.input_tokens for a in calls) / n,
            "decoded": sum(a.output_tokens for a in calls) / n,
            "at_max": sum(a.finish_reason == "length" for a in calls) / max(len(calls), 1),
            "strict": sum(bool(r.correct_strict) for r in rows), "flexible": sum(bool(r.correct_flexible) for r in rows),
            "failed": sum(r.error is not None for r in rows), "executed": dict(endings), "cpu_s": cpu_s}


def dump_messages(run_dir: Path) -> str:
    """Every call of the first question: who, which round, the messages sent, the reply (with what an executed
    program appended)."""
    texts = read_texts(run_dir)
    first = min(latest_records(run_dir).values(), key=lambda r: r.id)
    lines = [f"question {first.id} (target {first.target})"]
    for call, turn in zip(first.agents, first.transcript):
        lines.append(f"\n===== {call.agent} ({call.role}), round {call.round}: {call.input_tokens} prompt tokens, "
                     f"{call.output_tokens} decoded" + (f", hint {call.hint}" if call.hint is not None else "")
                     + (f", program {call.execution['ending']}" if call.execution else "") + " =====")
        for message in expand_messages(call.messages, texts):
            lines.append(f"--- {message['role']} ---\n{message['content']}")
        lines.append(f"--- reply ---\n{turn.text}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--limit", type=int, default=8, help="evaluated questions")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dump-max-new-tokens", type=int, default=48, help="decoding budget of the messages dump")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prune-rate", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here (default: a temp dir)")
    args = parser.parse_args()
    console = Console(width=140)
    kept = KeptBackend()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        results = {}
        for pack in (False, True):
            record, cpu_s = run(args, out, pack, kept, args.max_new_tokens, args.limit)
            run_dir = out / ("pack" if pack else "ours") / str(args.max_new_tokens)
            results[pack] = figures(record, run_dir, cpu_s)
        table = Table(title=f"pruned_mas on {args.task}, {args.limit} questions, {args.rounds} rounds, "
                            f"prune_rate {args.prune_rate}, {args.max_new_tokens} new tokens, one process")
        for column in ("team", "calls/q", "prompt tok/q", "decoded tok/q", "calls at max", "strict", "flexible",
                       "failed", "programs run", "CPU s"):
            table.add_column(column, justify="left" if column in ("team", "programs run") else "right")
        for pack, f in results.items():
            table.add_row(PACK if pack else "ours (default)", f"{f['calls']:.2f}", f"{f['prompt']:.1f}",
                          f"{f['decoded']:.1f}", f"{f['at_max']:.0%}", f"{f['strict']}/{f['n']}",
                          f"{f['flexible']}/{f['n']}", str(f["failed"]), json.dumps(f["executed"]) or "-",
                          f"{f['cpu_s']:.0f}")
        console.print(table)
        ours, theirs = results[False], results[True]
        console.print(f"pack / ours: prompt tokens {theirs['prompt'] / ours['prompt']:.2f}x, decoded tokens "
                      f"{theirs['decoded'] / ours['decoded']:.2f}x, calls {theirs['calls'] / ours['calls']:.2f}x")
        run(args, out, True, kept, args.dump_max_new_tokens, 1)
        console.print(f"\nEvery message of one question under {PACK} ({args.dump_max_new_tokens} new tokens per call):")
        print(dump_messages(out / "pack" / str(args.dump_max_new_tokens)))
    kept.close()


if __name__ == "__main__":
    main()
