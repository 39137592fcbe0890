"""Throughput of the openai backend at concurrency 1 and 8, against a real llama.cpp server.

The same 32 chat requests (baseline prompts for arith questions, greedy, so every pass decodes the
same tokens) are sent through `OpenAIBackend.chat` with backend.max_concurrency=1 and =8, in
alternating passes, and the throughput ratio is printed.

llama-cpp-python's server decodes one request at a time, so parallel slots come from replicas:
`--replicas N` starts N single-threaded servers behind one port, each request going to an idle one (as
`make serve REPLICAS=N`). With one replica the ratio shows what concurrency buys with a server
that queues (only the HTTP and prompt round trips overlap); with N replicas it shows requests
decoded in parallel, as on a vLLM server with several slots.

    python bench/api_concurrency.py --replicas 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

from mascompare.app import compose_config
from mascompare.backends import llama_server
from mascompare.backends.openai_api import OpenAIBackend
from mascompare.generation import GenerationConfig
from mascompare.methods import METHODS
from mascompare.settings import validate
from mascompare.tasks import build_task


def conversations(n: int) -> list[list[dict]]:
    """The prompts baseline sends for the first n arith questions."""
    settings = validate(compose_config("task=arith", f"task.limit={n}", "method=baseline"))
    task = build_task(settings.task)
    method = METHODS.get("baseline")(settings.method, None, task, None, None)
    return [method.prompt(s.question) for s in task.samples()]


def throughput(base_url: str, concurrency: int, requests: list, gen: GenerationConfig) -> tuple[float, int]:
    settings = validate(compose_config("model=smollm2-135m-server", f"backend.base_url={base_url}",
                                       f"backend.max_concurrency={concurrency}", f"model.api_model={llama_server.ALIAS}"))
    backend = OpenAIBackend(settings.backend, settings.model)
    start = time.perf_counter()
    completions = backend.chat(requests, gen)
    elapsed = time.perf_counter() - start
    backend.close()
    assert not any(c.error for c in completions), [c.error for c in completions if c.error][:1]
    return len(requests) / elapsed, sum(c.completion_tokens for c in completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3, help="alternating passes per concurrency")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    requests = conversations(args.requests)
    gen = validate(compose_config(f"generation.max_new_tokens={args.max_new_tokens}")).generation
    print(f"{args.requests} requests, max_new_tokens {args.max_new_tokens}, greedy, {args.passes} alternating passes")
    for replicas in args.replicas:
        with llama_server.start(replicas=replicas, threads=1) as server:
            throughput(server.base_url, 8, requests[:4], gen)  # warm-up
            rates = {1: [], 8: []}
            for _ in range(args.passes):
                for concurrency in (1, 8):
                    rate, tokens = throughput(server.base_url, concurrency, requests, gen)
                    rates[concurrency].append(rate)
            one, eight = statistics.median(rates[1]), statistics.median(rates[8])
            print(f"replicas {replicas} (1 thread each): concurrency 1 {one:.2f} req/s, concurrency 8 {eight:.2f} "
                  f"req/s, ratio {eight / one:.2f}x  ({tokens} completion tokens per pass)")


if __name__ == "__main__":
    main()
