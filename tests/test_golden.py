"""Greedy (and seeded) outputs of every method, byte for byte, against goldens recorded before the package
was redesigned (tests/golden/outputs.json).

Each configuration runs through the runner on a tiny random-weight model (untied, tied, and a sliding-window
Gemma 3), so prompts, batching, latent mechanics, calibration, extraction and scoring are all covered. What is
compared per sample: the final text, the extracted answers and verdicts, the transcript, and per agent call its
role, round, token counts, latent steps, KV positions received, forward passes, finish reason, seed and prompt
hash. Times are left out.

Regenerate (only when a change of outputs is intended and explained): MASCOMPARE_WRITE_GOLDEN=1 pytest
tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import make_tiny_gemma3, make_tiny_model

from mascompare.app import compose_config
from mascompare.runner import execute

GOLDEN = Path(__file__).parent / "golden" / "outputs.json"
WRITE = os.environ.get("MASCOMPARE_WRITE_GOLDEN") == "1"

COMMON = ("task=arith", "task.levels=[1,2]", "task.limit=6", "generation.max_new_tokens=24", "run.batch_size=4",
          "run.progress=false")
SMALL_CALIBRATION = ("method.calibration.size=4", "method.calibration.iterations=2",
                     "method.calibration.batch_size=2")

# name -> (model, overrides)
CONFIGS = {
    "baseline": ("untied", ["method=baseline"]),
    "baseline_sampled": ("untied", ["method=baseline", "generation.temperature=0.8", "generation.top_k=20",
                                    "generation.top_p=0.9", "run.repeats=2"]),
    "baseline_decode_rows": ("untied", ["method=baseline", "backend.decode_rows=2"]),
    "text_mas_sequential": ("untied", ["method=text_mas"]),
    "text_mas_hierarchical": ("untied", ["method=text_mas", "method.structure=hierarchical"]),
    "text_mas_handoff_cap": ("tied", ["method=text_mas", "method.strip_think=true", "method.handoff_max_tokens=8"]),
    "text_mas_sampled": ("tied", ["method=text_mas", "generation.temperature=0.7"]),
    "latent_mas_sequential": ("untied", ["method=latent_mas", "method.latent_steps=3"]),
    "latent_mas_hierarchical": ("untied", ["method=latent_mas", "method.structure=hierarchical",
                                           "method.latent_steps=3"]),
    "latent_mas_tied_identity": ("tied", ["method=latent_mas", "method.latent_steps=2", "method.realign=false",
                                          "method.diagnostics=true"]),
    "latent_mas_zero_steps": ("untied", ["method=latent_mas", "method.latent_steps=0"]),
    "latent_mas_sliding_hierarchical": ("sliding", ["method=latent_mas", "method.structure=hierarchical",
                                                    "method.latent_steps=2"]),
    "latent_mas_sliding_sequential": ("sliding", ["method=latent_mas", "method.latent_steps=2"]),
    "pruned_mas_calibrated": ("untied", ["method=pruned_mas", "method.prune_rate=0.5", *SMALL_CALIBRATION]),
    "pruned_mas_unpruned_vote": ("untied", ["method=pruned_mas", "method.prune_rate=0", "method.decision=vote",
                                            "method.topology=chain"]),
    "pruned_mas_one_round_star": ("tied", ["method=pruned_mas", "method.prune_rate=0", "method.rounds=1",
                                           "method.topology=star"]),
    "pruned_latent_mas_calibrated": ("untied", ["method=pruned_latent_mas", "method.latent_steps=2",
                                                "method.prune_rate=0.5", "method.final_sees=learned",
                                                *SMALL_CALIBRATION]),
    "pruned_latent_mas_full": ("tied", ["method=pruned_latent_mas", "method.latent_steps=2",
                                        "method.prune_rate=0"]),
}

CALL_FIELDS = ("agent", "role", "round", "input_tokens", "output_tokens", "latent_steps", "kv_positions_received",
               "forward_passes", "finish_reason", "seed", "prompt_hash", "phase")
ROW_FIELDS = ("id", "repeat", "final_text", "extracted_strict", "extracted_flexible", "correct_strict",
              "correct_flexible", "extractor_version", "error", "transcript", "diagnostics")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, smollm2_tokenizer) -> dict[str, Path]:
    models = {"untied": make_tiny_model(smollm2_tokenizer, tie=False),
              "tied": make_tiny_model(smollm2_tokenizer, tie=True),
              "sliding": make_tiny_gemma3(smollm2_tokenizer, sliding_window=90)}
    dirs = {}
    for name, model in models.items():
        directory = tmp_path_factory.mktemp(f"golden-{name}")
        model.save_pretrained(directory)
        smollm2_tokenizer.save_pretrained(directory)
        dirs[name] = directory
    return dirs


def outputs_of(run_dir: Path, record) -> dict:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    samples = []
    for row in rows:
        kept = {key: row.get(key) for key in ROW_FIELDS}
        kept["calls"] = [{key: call.get(key) for key in CALL_FIELDS} for call in row["agents"]]
        samples.append(kept)
    method_info = record.method_info or {}
    graph = method_info.get("graph")
    calibration = method_info.get("calibration") or {}
    history = [{k: v for k, v in step.items()} for step in calibration.get("history") or []]
    return {"samples": samples, "graph": graph, "calibration_history": history,
            "calibration_questions": calibration.get("question_ids"),
            "accuracy": [record.summary.accuracy_strict, record.summary.accuracy_flexible]}


def run_config(name: str, model_dirs, root: Path) -> dict:
    model, overrides = CONFIGS[name]
    cfg = compose_config(*COMMON, *overrides, f"model.path={model_dirs[model]}", f"model.name=tiny-{model}",
                         f"run.output_root={root}")
    run_dir = root / name
    return outputs_of(run_dir, execute(cfg, run_dir))


@pytest.fixture(scope="module")
def golden() -> dict:
    if WRITE:
        return {}
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def written():
    results: dict = {}
    yield results
    if WRITE and results:
        GOLDEN.parent.mkdir(exist_ok=True)
        existing = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.is_file() else {}
        existing.update(results)
        GOLDEN.write_text(json.dumps(dict(sorted(existing.items())), indent=1, ensure_ascii=False) + "\n",
                          encoding="utf-8")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_equal_the_goldens(name, model_dirs, tmp_path, golden, written):
    outputs = run_config(name, model_dirs, tmp_path)
    if WRITE:
        written[name] = outputs
        return
    expected = golden[name]
    for got, want in zip(outputs["samples"], expected["samples"], strict=True):
        # Texts, tokens and scores must be identical; the latent diagnostics are float summaries of hidden
        # states, whose last digit may differ between CPUs (vector instruction sets sum in other orders).
        got_diagnostics, want_diagnostics = got.pop("diagnostics"), want.pop("diagnostics")
        assert got == want, f"{name}: sample {want['id']} (repeat {want['repeat']}) differs"
        assert got_diagnostics == approx_nested(want_diagnostics, tolerance=1e-4), \
            f"{name}: the latent diagnostics of sample {want['id']} differ by more than 1e-4"
        got["diagnostics"], want["diagnostics"] = got_diagnostics, want_diagnostics
    outputs["samples"] = expected["samples"]  # compared above
    assert outputs == approx_nested(expected, tolerance=1e-4)  # the graph's learned logits are floats too


def approx_nested(value, tolerance: float):
    """`value` with every float wrapped for comparison within `tolerance`."""
    if isinstance(value, dict):
        return {key: approx_nested(item, tolerance) for key, item in value.items()}
    if isinstance(value, list):
        return [approx_nested(item, tolerance) for item in value]
    if isinstance(value, float):
        return pytest.approx(value, abs=tolerance)
    return value
