"""baseline vs text_mas vs latent_mas on the same questions, same model, same settings, one process.

Prints per method: accuracy, decoded and input tokens per sample, latent steps, forward passes per
batch (one after another: on a GPU, where a pass costs about the same at any batch, time follows them),
time per sample (model loading excluded), and the latent/text ratios, for one structure or both (`--structure both`);
then latent_mas throughput at batch 1 vs batch 8. Times are process CPU time with one thread on a CPU
(other work on a shared machine does not count) and synchronised wall time on CUDA. Ratios are measured
side by side in one run; absolute seconds are not stable, ratios are.

    .venv/bin/python bench/latent_vs_text.py                     # embedded SmolLM2 on CPU
    .venv/bin/python bench/latent_vs_text.py --random-shape qwen3-4b --device cuda   # GPU, random weights
    .venv/bin/python bench/latent_vs_text.py --random-shape smollm2-135m --structure both   # CPU: every agent
        # of a random-weight model decodes max_new_tokens, so both methods run at exactly equal settings

On a machine without the embedded model (a GPU machine), `--tokenizer DIR` (a saved tokenizer, e.g. the SmolLM2
one that bench/gpu_kit.py saves) replaces it, with `--random-shape`. The script needs hydra-core, omegaconf
(bench/gpu_kit.py copies them for a machine that lacks them) and pydantic, not datasets, openai or gguf.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends import build_backend
from mascompare.backends.hf import HFBackend
from mascompare.backends.hf.loading import pick_device
from mascompare.methods import METHODS as METHOD_CLASSES
from mascompare.records import Usage
from mascompare.settings import validate
from mascompare.tasks import build_task

METHODS = ("baseline", "text_mas", "latent_mas")
# Published shapes, vocabularies included, for random-weight speed runs on a GPU (no download needed); "tiny"
# only shows on a CPU that a script runs.
SHAPES = {
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, vocab_size=151936),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                         vocab_size=49152),  # small enough for a CPU
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, vocab_size=49152),
}


def compose_cfg(method: str, args, *extra: str) -> object:
    overrides = [f"method={method}", f"task={args.task}", f"task.limit={args.limit}",
                 f"generation.max_new_tokens={args.max_new_tokens}", *extra]
    if method != "baseline":
        overrides.append(f"method.structure={args.structure}")
    if method == "latent_mas":
        overrides.append(f"method.latent_steps={args.latent_steps}")
    return compose_config(*overrides)


def random_model(shape: str, tokenizer, device: torch.device):
    """A random-weight Qwen3 of the published shape (its vocabulary holds the tokenizer's ids), built in place on
    `device`: bfloat16 on CUDA, float32 elsewhere."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    assert config.vocab_size >= len(tokenizer), "the shape's vocabulary must hold the tokenizer's ids"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def random_backend(shape: str, device: torch.device, tokenizer, compiled: bool = False) -> HFBackend:
    """A random-weight Qwen3 of the published shape, with `tokenizer`."""
    return HFBackend.from_loaded(random_model(shape, tokenizer, device), tokenizer, f"random-{shape}", device,
                                 compiled=compiled)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def run_method(method_name, backend, task, samples, batch_size, args) -> dict:
    settings = validate(compose_cfg(method_name, args))
    accountant = Accountant()
    method = METHOD_CLASSES.get(method_name)(settings.method, backend, task, settings.generation, accountant)
    method.prepare(None, samples, resume=False)
    passes = [0]  # forward passes of the model, one after another: the method's critical path
    counter = backend.model.register_forward_pre_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    correct, start = 0, clock(backend.device)
    try:
        for i in range(0, len(samples), batch_size):
            batch = samples[i:i + batch_size]
            for sample, output in zip(batch, method.run(batch)):
                correct += task.score(task.extract(output.final_text).flexible, sample.target)
    finally:
        counter.remove()
    elapsed = clock(backend.device) - start
    usage = Usage.of([r for s in samples for r in accountant.take(s.id)])
    n = len(samples)
    return {"accuracy": correct / n, "decoded": usage.output_tokens / n, "input": usage.input_tokens / n,
            "latent": usage.latent_steps / n, "seconds": elapsed / n,
            "passes": None if backend.compiled else passes[0] / -(-n // batch_size)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arith")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--latent-steps", type=int, default=10)
    parser.add_argument("--structure", default="sequential", choices=("sequential", "hierarchical", "both"))
    parser.add_argument("--skip-batch-1", action="store_true", help="leave out latent_mas at batch 1")
    parser.add_argument("--random-shape", choices=sorted(SHAPES), help="random weights of this shape (speed only)")
    parser.add_argument("--tokenizer", help="a saved tokenizer's folder, instead of the embedded model's "
                                            "(needs --random-shape)")
    parser.add_argument("--compile", action="store_true", help="the fast path (static caches, compiled steps)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.tokenizer and not args.random_shape:
        parser.error("--tokenizer needs --random-shape: it replaces the embedded model's tokenizer only")

    settings = validate(compose_cfg("baseline", args, f"backend.device={args.device}",
                                    f"backend.compile={str(args.compile).lower()}"))
    if args.tokenizer:
        device = pick_device(args.device)
        backend = random_backend(args.random_shape, device, load_tokenizer(args.tokenizer), args.compile)
    else:
        backend = build_backend(settings.backend, settings.model)
        if args.random_shape:
            backend = random_backend(args.random_shape, backend.device, backend.tokenizer, args.compile)
    task = build_task(settings.task)
    samples = task.samples()
    console = Console(width=100)  # room for every column
    for structure in ("sequential", "hierarchical") if args.structure == "both" else (args.structure,):
        args.structure = structure
        latent = compare_methods(console, backend, task, samples, args)
    if not args.skip_batch_1:
        batch1 = run_method("latent_mas", backend, task, samples, 1, args)["seconds"]
        console.print(f"latent_mas throughput, batch {args.batch_size} vs batch 1: {batch1 / latent['seconds']:.2f}x "
                      f"({1 / batch1:.2f} vs {1 / latent['seconds']:.2f} samples/s)")


def compare_methods(console, backend, task, samples, args) -> dict:
    """Every method on the same questions: the table and the latent/text ratios. Returns latent_mas's figures."""
    console.print(f"{len(samples)} {args.task} questions · {backend.model_name} on {backend.device} "
                  f"({backend.dtype}, {torch.get_num_threads()} thread(s)) · max_new_tokens {args.max_new_tokens} · "
                  f"batch {args.batch_size} · {args.structure} · m={args.latent_steps} · greedy")
    for name in METHODS:  # warm-up: the first forward passes of a process are slow
        run_method(name, backend, task, samples[:2], 2, args)
    results = {name: run_method(name, backend, task, samples, args.batch_size, args) for name in METHODS}

    table = Table(title="per sample, same questions and settings")
    for column in ("method", "accuracy", "decoded tokens", "input tokens", "latent steps", "passes per batch",
                   "time (s)"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(name, f"{r['accuracy']:.0%}", f"{r['decoded']:.1f}", f"{r['input']:.1f}", f"{r['latent']:.0f}",
                      "—" if r["passes"] is None else f"{r['passes']:.0f}", f"{r['seconds']:.2f}")
    console.print(table)
    text, latent = results["text_mas"], results["latent_mas"]
    console.print(f"latent/text decoded tokens: {latent['decoded'] / text['decoded']:.3f} "
                  f"({1 - latent['decoded'] / text['decoded']:.1%} fewer; paper: 70.8-83.7% fewer)")
    console.print(f"latent/text input tokens:   {latent['input'] / text['input']:.3f}")
    console.print(f"text/latent time ({args.structure}): {text['seconds'] / latent['seconds']:.2f}x speed-up "
                  "(paper: 4.0-4.3x)")
    if latent["passes"]:  # where a pass costs about the same at any batch (a GPU), time follows this ratio
        console.print(f"text/latent forward passes per batch ({args.structure}): "
                      f"{text['passes'] / latent['passes']:.2f}x")
    return latent


if __name__ == "__main__":
    main()
