"""Throughput of API runs: samples streamed through one request pool vs batches that wait for their slowest.

The same run (baseline on mixed-length questions, greedy, so every pass decodes the same tokens) goes
through the runner with `backend.stream=true` (each sample its own task, `backend.max_concurrency` at
once) and `backend.stream=false` (batches of `run.batch_size`, each waiting for its slowest request),
in alternating passes against two llama.cpp replicas behind one port (`make serve REPLICAS=2`), and
the ratio of the medians of samples per second is printed.

Mixed lengths: three questions in four ask for one number (a few tokens), one in four for a long
explanation (it runs to max_new_tokens), shuffled with a fixed seed: most answers short and a few
running to the cap, as a small model's answers often are.

What the barrier loses is the slots (here: replicas) left idle while a batch's last requests finish,
at most one long answer per batch on every slot but one. With as many requests in flight as slots
(the default: each batch of 2 waits for the slower of two) that is much of the run; with more in
flight than slots (`--concurrency 8 --batch-size 8` on 2 slots) the requests queue at the balancer,
which keeps both replicas busy for most of each batch, and only its tail is lost. The load average is printed: on a machine busy with other work, an idle replica's
core goes to that work, and the ratio says less.

    python bench/api_streaming.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from mascompare.app import compose_config
from mascompare.backends import llama_server
from mascompare.runner import execute

SHORT = "What is {a} + {b}? Reply with the number only, nothing else."
LONG = ("Explain in great detail, step by step, how a school could plan a trip for {a} pupils in {b} buses, "
        "with every consideration you can think of, then say how many pupils ride in each bus.")


def questions(n: int, path: Path) -> None:
    """n questions, one in four long, shuffled with a fixed seed, as a custom-task JSONL file."""
    rng = random.Random(0)
    rows = [{"id": f"q{k:03d}", "question": (LONG if k % 4 == 0 else SHORT).format(a=rng.randint(10, 99),
                                                                                 b=rng.randint(2, 9)),
             "answer": "0"} for k in range(n)]
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def one_pass(base_url: str, task_file: Path, stream: bool, args, root: Path) -> tuple[float, list[int]]:
    """Samples per second of one fresh run, and each sample's decoded tokens."""
    cfg = compose_config("model=smollm2-135m-server", f"backend.base_url={base_url}", "task=custom",
                         f"task.path={task_file}", f"generation.max_new_tokens={args.max_new_tokens}",
                         f"backend.stream={str(stream).lower()}", f"backend.max_concurrency={args.concurrency}",
                         f"run.batch_size={args.batch_size}", "run.progress=false", "run.resume=false",
                         "backend.timeout_s=3600",  # requests queue at the replicas: waiting is not a failure
                         f"run.output_root={root}")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's summary table
        info = execute(cfg, root / ("stream" if stream else "barrier"))
    elapsed = time.perf_counter() - start
    assert info.summary.errors == 0, info.summary
    rows = [json.loads(line) for line in (Path(info.run_dir) / "samples.jsonl").open()]
    return len(rows) / elapsed, [r["usage"]["output_tokens"] for r in sorted(rows, key=lambda r: r["id"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, help="backend.max_concurrency (default: the replicas' slots)")
    parser.add_argument("--batch-size", type=int, help="run.batch_size of the barrier runs (default: the slots)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3, help="alternating passes per mode")
    args = parser.parse_args()
    # as many requests in flight as the server decodes at once (one per replica), as max_concurrency is meant
    # to be set: then a slow request holds a slot that the barrier leaves the others idle beside
    args.concurrency = args.concurrency or args.replicas
    args.batch_size = args.batch_size or args.replicas
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch, llama_server.start(replicas=args.replicas, threads=1) as server:
        root = Path(scratch)
        questions(args.samples, root / "questions.jsonl")
        rates, decoded = {True: [], False: []}, []
        for _ in range(args.passes):
            for stream in (False, True):
                rate, tokens = one_pass(server.base_url, root / "questions.jsonl", stream, args, root)
                rates[stream].append(rate)
                decoded.append(tokens)
    assert all(tokens == decoded[0] for tokens in decoded), "greedy: every pass decodes the same tokens"
    barrier, streamed = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{args.samples} samples (baseline; 1 in 4 questions asks for a long answer), max_new_tokens "
          f"{args.max_new_tokens}, greedy; {args.replicas} llama.cpp replicas (1 thread each) behind one port; "
          f"backend.max_concurrency {args.concurrency}, barrier run.batch_size {args.batch_size}; "
          f"{args.passes} alternating passes; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"decoded tokens per sample: min {min(decoded[0])}, median {statistics.median(decoded[0]):.0f}, "
          f"max {max(decoded[0])}, total {sum(decoded[0])} per pass")
    print(f"per-batch barrier: {barrier:.2f} samples/s  (passes: {', '.join(f'{r:.2f}' for r in rates[False])})")
    print(f"streaming pool:    {streamed:.2f} samples/s  (passes: {', '.join(f'{r:.2f}' for r in rates[True])})")
    print(f"ratio streaming / barrier: {streamed / barrier:.2f}x")


if __name__ == "__main__":
    main()
