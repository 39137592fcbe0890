"""torch's thread count on a loaded machine: one thread against two, with and without a competing busy loop.

Each measurement is a fresh process that loads the embedded model (SmolLM2-135M, converted once into the
cache), answers one warm-up question, then answers --questions arith questions greedily in one batch of
--tokens new tokens with the thread count given; it reports the wall time and its own CPU time for that batch
alone. "loaded" runs a pure-Python busy loop in another process meanwhile (one core's worth of other work, as
another user's job would be). The four conditions alternate, --rounds times, so that the machine's own
background load falls on all of them alike; medians are printed, with the count that `run.threads=auto`
chooses under each load (mascompare/threads.py).

    python bench/threads.py [--rounds 3] [--questions 4] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import torch
threads, questions, tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.settings import validate
from mascompare.tasks import build_task
settings = validate(compose_config("task=arith", f"task.limit={questions}", f"generation.max_new_tokens={tokens}"))
backend = build_backend(settings.backend, settings.model)
task = build_task(settings.task)
asked = [[{"role": "user", "content": s.question}] for s in task.samples()]
backend.chat(asked[:1], settings.generation.model_copy(update={"max_new_tokens": 4}))  # warm-up
wall, cpu = time.perf_counter(), time.process_time()
backend.chat(asked, settings.generation)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "threads": torch.get_num_threads()}))
"""


def measure(threads: int, questions: int, tokens: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(questions), str(tokens)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def auto_choice() -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "from mascompare.threads import choose; print(choose('auto'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict]] = {}
    choices: dict[str, list[str]] = {"quiet": [], "loaded": []}
    for round_ in range(args.rounds):
        for load in ("quiet", "loaded"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
            try:
                time.sleep(1.0 if busy else 0)  # the busy loop at full speed before anything is measured
                choices[load].append(auto_choice())
                for threads in (1, 2) if round_ % 2 == 0 else (2, 1):
                    results.setdefault((load, threads), []).append(measure(threads, args.questions, args.tokens))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"# python bench/threads.py --rounds {args.rounds} --questions {args.questions} --tokens {args.tokens}  "
          f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average at the end "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'load':8} {'threads':>7} {'wall s':>8} {'CPU s':>8}   (medians of {args.rounds})")
    medians = {}
    for (load, threads), runs in sorted(results.items()):
        wall, cpu = statistics.median(r["wall"] for r in runs), statistics.median(r["cpu"] for r in runs)
        medians[(load, threads)] = (wall, cpu)
        print(f"{load:8} {threads:7d} {wall:8.1f} {cpu:8.1f}")
    for load in ("quiet", "loaded"):
        (w1, c1), (w2, c2) = medians[(load, 1)], medians[(load, 2)]
        print(f"{load}: two threads / one thread: wall x{w2 / w1:.2f}, CPU x{c2 / c1:.2f}; run.threads=auto chose: "
              f"{'; '.join(choices[load])}")


if __name__ == "__main__":
    main()
