"""The hf backend's speed: eager vs fast path (static cache, compiled steps), and hierarchical experts side by side.

1. ms per decode step and tokens/s at batch 1, 8 and 32, eager vs fast path (`backend.compile`),
   on the same prefilled prompts: each timed block decodes the same number of steps from the same
   cache state, eager and fast alternating, after a warm-up that pays for compiling.
2. Hierarchical latent_mas: its experts side by side (one row per expert and sample) vs one after
   another (the order before), on the same questions, alternating.

Times are process CPU time with one thread on CPU (other work on a shared machine does not count),
and synchronised wall time on CUDA. Ratios are what to read; absolute figures depend on the machine.

    .venv/bin/python bench/fast_path.py                                   # embedded SmolLM2 on CPU
    .venv/bin/python bench/fast_path.py --random-shape qwen3-4b --device cuda
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.backends.hf import HFBackend
from mascompare.generation import GenerationConfig
from mascompare.methods import build_method
from mascompare.tasks import build_task

from latent_vs_text import SHAPES, clock, random_backend  # bench/ is on the path when this runs


def with_model(base: HFBackend, model, compiled: bool) -> HFBackend:
    return HFBackend.from_loaded(model, base.tokenizer, base.model_name, base.device, compiled=compiled)


def decode_block(backend: HFBackend, prompts, steps: int) -> float:
    """Seconds for `steps` one-token steps after prefilling `prompts` (the prefill is not timed)."""
    state = backend.new_cache(len(prompts))
    _, logits = backend.prefill(state, prompts)
    backend.layout.make_room(state, steps)
    tokens = logits.argmax(dim=-1)
    start = clock(backend.device)
    for _ in range(steps):
        _, logits = backend.steps.step_tokens(state, tokens)
        tokens = logits.argmax(dim=-1)
    return clock(backend.device) - start


def hierarchical_seconds(backend, task, samples, steps: int, max_new_tokens: int, side_by_side: bool) -> float:
    cfg = compose_config("method=latent_mas", "task=arith", "method.structure=hierarchical",
                         f"method.latent_steps={steps}")
    method = build_method(cfg.method, backend, task, GenerationConfig(max_new_tokens=max_new_tokens), Accountant())
    join = backend.can_join_rows
    backend.can_join_rows = (lambda: True) if side_by_side else (lambda: False)
    try:
        start = clock(backend.device)
        method.run(samples)
        return clock(backend.device) - start
    finally:
        backend.can_join_rows = join


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=32, help="decode steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per path and batch, alternating")
    parser.add_argument("--latent-steps", type=int, default=10)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--random-shape", choices=sorted(SHAPES), help="random weights of this shape (speed only)")
    parser.add_argument("--layers", type=int, help="keep only the first N decoder layers (compiling on a CPU is slow)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = compose_config("method=baseline", "task=arith", f"task.limit={args.questions}",
                         f"backend.device={args.device}", "backend.compile=false")
    base = build_backend(cfg.backend, cfg.model)
    model = random_backend(args.random_shape, str(base.device), base).model if args.random_shape else base.model
    if args.layers:
        model.model.layers = model.model.layers[:args.layers]
        model.config.num_hidden_layers = args.layers
    eager, fast = with_model(base, model, compiled=False), with_model(base, model, compiled=True)
    task = build_task(cfg.task)
    samples = task.load()
    console = Console()
    console.print(f"{args.random_shape or base.model_name} ({model.config.num_hidden_layers} layers) on {base.device} "
                  f"({model.dtype}), "
                  f"{torch.get_num_threads()} thread(s); {args.steps} decode steps per block, "
                  f"{args.repeats} blocks per path, alternating; times are "
                  f"{'synchronised wall' if base.device.type == 'cuda' else 'process CPU'} time")

    questions = [[{"role": "user", "content": s.question}] for s in samples]
    table = Table(title="one decode step")
    for column in ("batch", "eager ms/step", "fast ms/step", "eager tokens/s", "fast tokens/s", "fast speed-up"):
        table.add_column(column, justify="right")
    for batch in args.batches:
        prompts = base.encode_chat([questions[i % len(questions)] for i in range(batch)])
        for backend in (eager, fast):  # warm-up: compiling, first-call allocations
            decode_block(backend, prompts, 4)
        times = {"eager": [], "fast": []}
        for _ in range(args.repeats):
            times["eager"].append(decode_block(eager, prompts, args.steps) / args.steps)
            times["fast"].append(decode_block(fast, prompts, args.steps) / args.steps)
        e, f = statistics.median(times["eager"]), statistics.median(times["fast"])
        table.add_row(str(batch), f"{e * 1e3:.2f}", f"{f * 1e3:.2f}", f"{batch / e:.1f}", f"{batch / f:.1f}",
                      f"{e / f:.2f}x")
    console.print(table)

    hierarchical = {"one after another": [], "side by side": []}
    hierarchical_seconds(eager, task, samples[:2], args.latent_steps, 8, True)  # warm-up
    for _ in range(args.repeats):
        for name in hierarchical:
            hierarchical[name].append(hierarchical_seconds(
                eager, task, samples, args.latent_steps, 32, side_by_side=name == "side by side"))
    apart, together = (statistics.median(hierarchical[k]) for k in ("one after another", "side by side"))
    console.print(f"hierarchical latent_mas, {len(samples)} questions, m={args.latent_steps}, 32 new tokens, eager: "
                  f"experts one after another {apart:.2f} s, side by side {together:.2f} s: {apart / together:.2f}x")


if __name__ == "__main__":
    main()
