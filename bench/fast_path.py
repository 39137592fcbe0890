"""The hf backend's speed: eager vs fast path (static cache, compiled steps), the fast path's check, and
hierarchical experts side by side.

1. Per model and batch (in the order given, so that a run cut short by --budget-s loses the last cells):
   the fast path's check against the eager path (backend/hf/fast_path_check.py: teacher-forced latent and decode
   steps, the logits' largest difference against the dtype's tolerance), then ms per decode step, eager vs fast,
   on the same prefilled prompts: each timed block decodes the same number of steps from the same cache state,
   eager and fast alternating, after a warm-up that pays for compiling; and the floor a step cannot beat on this
   device, the bytes it must read (the weights, and the KV cache) over the memory bandwidth.
2. Hierarchical latent_mas: its experts side by side (one row per expert and sample) vs one after
   another, on the same questions, alternating.

Times are process CPU time with one thread on CPU (other work on a shared machine does not count), and
synchronised wall time on CUDA. Ratios are what to read; absolute figures depend on the machine.

    .venv/bin/python bench/fast_path.py --layers 4                         # embedded SmolLM2 on CPU
    python3 bench/fast_path.py --random-shape qwen3-4b qwen3-8b --batches 8 1 32 --skip-hierarchical \\
        --tokenizer .gpu_kit/smollm2-tokenizer --device cuda --budget-s 300    # a GPU (see bench/gpu_kit.py)

On a machine without the embedded model, `--tokenizer DIR` (a saved tokenizer) replaces it and the shapes are
random weights built in place (bfloat16 on CUDA). Only item 2 needs hydra-core beyond what the backend itself
imports (omegaconf, pydantic).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from latent_vs_text import SHAPES, clock, load_tokenizer, random_model  # bench/ is on the path when this runs
from rich.console import Console
from rich.table import Table

from mascompare.backends.hf import HFBackend
from mascompare.backends.hf.fast_path_check import check_fast_path
from mascompare.backends.hf.loading import pick_device

QUESTIONS = ["What is 17 + 25?", "A train leaves at 3 pm and travels for 2 hours. When does it arrive?",
             "Name three primary colours.", "If x + 4 = 10, what is x?", "Summarise the water cycle in one line.",
             "How many legs do three spiders have?", "Is 91 a prime number?", "Spell 'necessary' backwards."]


def decode_block(backend: HFBackend, prompts, steps: int) -> float:
    """Seconds for `steps` one-token steps after prefilling `prompts` (the prefill is not timed)."""
    state = backend.new_cache(len(prompts))
    _, logits = backend.steps.prefill(state, prompts)
    backend.layout.make_room(state, steps)
    tokens = logits.argmax(dim=-1)
    start = clock(backend.device)
    for _ in range(steps):
        _, logits = backend.steps.step_tokens(state, tokens)
        tokens = logits.argmax(dim=-1)
    return clock(backend.device) - start


def memory_bandwidth(device: torch.device) -> tuple[float, str]:
    """Bytes per second the device's memory moves, and how that was found: the GPU's memory clock and bus width
    where torch reports them (the rated figure), else a timed copy (bytes read and written)."""
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        clock_khz, bus_bits = (getattr(properties, name, 0) for name in ("memory_clock_rate", "memory_bus_width"))
        if clock_khz and bus_bits:
            return 2 * clock_khz * 1e3 * bus_bits / 8, "rated: memory clock x bus width, double data rate"
    return copy_bandwidth(device), "measured: a timed copy, bytes read + written"


def copy_bandwidth(device: torch.device) -> float:
    source = torch.empty((2**30 if device.type == "cuda" else 2**27), dtype=torch.uint16, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(5):
        target.copy_(source)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 5 * 2 * source.nbytes / (time.perf_counter() - start)


def bytes_per_step(model, batch: int, positions: int) -> int:
    """What one decode step must read: every weight except the input embedding table (only the batch's rows of
    it; a tied table is read whole by the output head), and each row's keys and values."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        weights -= embedding.numel() * embedding.element_size()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * model.dtype.itemsize
    return weights + batch * positions * kv


def hierarchical_seconds(backend, task, samples, steps: int, max_new_tokens: int, side_by_side: bool) -> float:
    from mascompare.accounting import Accountant
    from mascompare.app import compose_config
    from mascompare.methods import METHODS
    from mascompare.settings import validate

    settings = validate(compose_config("method=latent_mas", "task=arith", "method.structure=hierarchical",
                                       f"method.latent_steps={steps}", f"generation.max_new_tokens={max_new_tokens}"))
    method = METHODS.get("latent_mas")(settings.method, backend, task, settings.generation, Accountant())
    method.prepare(None, samples, resume=False)
    join = backend.can_join_rows
    backend.can_join_rows = (lambda: True) if side_by_side else (lambda: False)
    try:
        start = clock(backend.device)
        method.run(samples)
        return clock(backend.device) - start
    finally:
        backend.can_join_rows = join


def speed_table(console, model, tokenizer, name, device, args, started) -> None:
    """The check and eager vs fast ms per step at each batch, for one model."""
    eager = HFBackend.from_loaded(model, tokenizer, name, device)
    fast = HFBackend.from_loaded(model, tokenizer, name, device, compiled=True, fast_path_check="skip")
    if args.compile_backend:
        fast.steps.compile_config.backend = args.compile_backend
    bandwidth, how = memory_bandwidth(device)
    how += f"; a timed copy moves {copy_bandwidth(device) / 1e12:.2f} TB/s" if how.startswith("rated") else ""
    console.print(f"{name} ({model.config.num_hidden_layers} layers, "
                  f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters) on {device} ({model.dtype}), "
                  f"{torch.get_num_threads()} thread(s); {args.steps} decode steps per block, {args.repeats} blocks "
                  f"per path, alternating; times are {'synchronised wall' if device.type == 'cuda' else 'process CPU'} "
                  f"time; memory bandwidth {bandwidth / 1e12:.2f} TB/s ({how})")
    table = Table(title=f"{name}: one decode step")
    for column in ("batch", "check", "max |Δlogit|", "top-token flips (decisive)", "compile s", "eager ms/step",
                   "fast ms/step", "eager tokens/s", "fast tokens/s", "floor ms/step", "fast speed-up", "fast / floor"):
        table.add_column(column, justify="right")
    questions = [[{"role": "user", "content": q}] for q in QUESTIONS]
    for batch in args.batches:
        if time.perf_counter() - started > args.budget_s:
            table.add_row(str(batch), *["skipped (--budget-s)"] + [""] * 10)
            continue
        prompts = eager.encode_chat([questions[i % len(questions)] for i in range(batch)])
        # the check compiles the shape the timed blocks use: the same rows, room for the same steps
        result, _, _ = check_fast_path(fast.steps, fast.new_cache(batch), prompts, None, args.steps, latent=True)
        figures = result.figures
        paths = (eager, fast) if "raised" not in (result.reason or "") else (eager,)  # a raising path is not timed
        for backend in paths:  # warm-up: first-call allocations (and compiling, if the check did not)
            decode_block(backend, prompts, 4)
        times = {backend: [] for backend in paths}
        for _ in range(args.repeats):
            for backend in paths:
                times[backend].append(decode_block(backend, prompts, args.steps) / args.steps)
        e, f = (statistics.median(times[b]) if b in times else float("nan") for b in (eager, fast))
        floor = bytes_per_step(model, batch, max(map(len, prompts)) + args.steps // 2) / bandwidth
        diff = figures["max_abs_diff"]
        row = [str(batch), "passed" if result.passed else f"FAILED: {result.reason}",
               "nan" if diff is None else f"{diff:.4g} (tol {figures['tolerance']:g})",
               f"{figures['top_token_differences']} ({figures['decisive_top_token_differences']})",
               str(figures.get("first_compiled_step_s", "—")), f"{e * 1e3:.2f}", f"{f * 1e3:.2f}", f"{batch / e:.1f}",
               f"{batch / f:.1f}", f"{floor * 1e3:.2f}", f"{e / f:.2f}x", f"{f / floor:.1f}x"]
        table.add_row(*row)
        # each row as soon as it is measured: a run cut short keeps what it measured
        console.print(f"  {name} at {time.perf_counter() - started:.0f} s: " + " | ".join(
            f"{column.header} {value}" for column, value in zip(table.columns, row)))
    console.print(table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=32, help="decode steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per path and batch, alternating")
    parser.add_argument("--random-shape", nargs="+", choices=sorted(SHAPES), help="random weights of these shapes")
    parser.add_argument("--tokenizer", help="a saved tokenizer's folder, instead of the embedded model's "
                                            "(needs --random-shape)")
    parser.add_argument("--layers", type=int, help="keep only the first N decoder layers (compiling on a CPU is slow)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile-backend", help="torch.compile's backend for the fast path (default: inductor; "
                                                  "'eager' traces without generating code: cheap, for a CPU)")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no new batch after this many seconds (the rest are reported as skipped)")
    parser.add_argument("--skip-hierarchical", action="store_true", help="leave out item 2 (hierarchical experts)")
    parser.add_argument("--latent-steps", type=int, default=10)
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    if args.tokenizer and not args.random_shape:
        parser.error("--tokenizer needs --random-shape: it replaces the embedded model's tokenizer only")
    torch.set_num_threads(1)
    started = time.perf_counter()
    console = Console(width=200)

    if args.tokenizer:
        device, tokenizer, base = pick_device(args.device), load_tokenizer(args.tokenizer), None
    else:
        from mascompare.app import compose_config
        from mascompare.backends import build_backend
        from mascompare.settings import validate

        settings = validate(compose_config("method=baseline", "task=arith", f"backend.device={args.device}",
                                           "backend.compile=false"))
        base = build_backend(settings.backend, settings.model)
        device, tokenizer = base.device, base.tokenizer
    for shape in args.random_shape or [None]:
        model = random_model(shape, tokenizer, device) if shape else base.model
        if args.layers:
            model.model.layers = model.model.layers[:args.layers]
            model.config.num_hidden_layers = args.layers
            if getattr(model.config, "layer_types", None):  # the caches' layers follow it
                model.config.layer_types = model.config.layer_types[:args.layers]
        speed_table(console, model, tokenizer, f"random {shape}" if shape else base.model_name, device, args, started)
        if shape:
            del model
            gc.collect()  # the model and its compiled forward hold each other
            if device.type == "cuda":
                torch.cuda.empty_cache()

    if not args.skip_hierarchical:
        from mascompare.app import compose_config
        from mascompare.tasks import build_task, task_settings

        eager = base or HFBackend.from_loaded(random_model(args.random_shape[-1], tokenizer, device), tokenizer,
                                              "random", device)
        task = build_task(task_settings(compose_config("task=arith", f"task.limit={args.questions}").task))
        samples = task.samples()
        hierarchical = {"one after another": [], "side by side": []}
        hierarchical_seconds(eager, task, samples[:2], args.latent_steps, 8, True)  # warm-up
        for _ in range(args.repeats):
            for name, seconds in hierarchical.items():
                seconds.append(hierarchical_seconds(eager, task, samples, args.latent_steps, 32,
                                                    side_by_side=name == "side by side"))
        apart, together = (statistics.median(hierarchical[k]) for k in ("one after another", "side by side"))
        console.print(f"hierarchical latent_mas, {len(samples)} questions, m={args.latent_steps}, 32 new tokens, "
                      f"eager: experts one after another {apart:.2f} s, side by side {together:.2f} s: "
                      f"{apart / together:.2f}x")
    console.print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
