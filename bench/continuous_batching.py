"""Static vs continuous batching of the hf backend's chat, on completions of mixed lengths, one process.

`baseline` (one chat call per batch of questions) answers the same questions two ways:

- static: batches of R questions; every row stays in the batch until the batch's longest answer ends;
- continuous: one call with every question and `backend.decode_rows=R`: a row that finishes takes the next
  waiting question.

The arms alternate (A, B, A, B, ...) so that a change of load on a shared machine hits them alike; times
are process CPU time with one thread. Prints the answers' lengths, each arm's time per question, the ratios,
and checks that every arm gives the same texts (greedy decoding: batching changes speed, not answers).

    .venv/bin/python bench/continuous_batching.py      # embedded SmolLM2 on CPU, 16 arith questions, R=4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.methods import METHODS
from mascompare.settings import validate
from mascompare.tasks import build_task

ARMS = ("static", "continuous")


def run_arm(arm: str, backend, method, samples, rows: int) -> tuple[float, list[str]]:
    """Process CPU seconds and final texts of one pass over the questions."""
    backend.decode_rows = rows if arm == "continuous" else None
    batches = [samples] if arm == "continuous" else [samples[i:i + rows] for i in range(0, len(samples), rows)]
    start = time.process_time()
    texts = [output.final_text for batch in batches for output in method.run(batch)]
    return time.process_time() - start, texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arith")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--rows", type=int, default=4, help="rows decoded at once (R)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="alternating passes per arm")
    args = parser.parse_args()
    torch.set_num_threads(1)

    settings = validate(compose_config("method=baseline", f"task={args.task}", f"task.limit={args.limit}",
                                       f"generation.max_new_tokens={args.max_new_tokens}", "backend.device=cpu"))
    backend = build_backend(settings.backend, settings.model)
    task = build_task(settings.task)
    samples = task.samples()
    accountant = Accountant()
    method = METHODS.get("baseline")(settings.method, backend, task, settings.generation, accountant)
    method.prepare(None, samples, resume=False)
    run_arm("static", backend, method, samples[:2], 2)  # warm-up: a process's first passes are slow
    for sample in samples[:2]:
        accountant.take(sample.id)

    seconds = {arm: [] for arm in ARMS}
    texts = {}
    for _ in range(args.repeats):
        for arm in ARMS:
            elapsed, texts[arm] = run_arm(arm, backend, method, samples, args.rows)
            seconds[arm].append(elapsed)
    lengths = [accountant.take(s.id)[0].output_tokens for s in samples]
    print(f"{len(samples)} {args.task} questions · baseline · {backend.model_name} on {backend.device} "
          f"({backend.dtype}, {torch.get_num_threads()} thread) · R={args.rows} rows · max_new_tokens "
          f"{args.max_new_tokens} · greedy · {args.repeats} alternating passes per arm, process CPU time")
    print(f"completion tokens per question: {lengths} (mean {statistics.mean(lengths):.1f}, "
          f"{sum(n == args.max_new_tokens for n in lengths)} at max_new_tokens)")
    for arm in ARMS:
        per_question = [t / len(samples) for t in seconds[arm]]
        print(f"{arm:<11} {statistics.median(per_question):.3f} s per question (median; passes: "
              f"{', '.join(f'{t:.3f}' for t in per_question)})")
    median = {arm: statistics.median(seconds[arm]) for arm in ARMS}
    print(f"static / continuous: {median['static'] / median['continuous']:.2f}x CPU time")
    same = all(texts[arm] == texts[ARMS[0]] for arm in ARMS)
    print(f"same texts in every arm: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
