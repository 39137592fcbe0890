"""The runner's batch size choice (run.batch_size=auto) and its longest-first order."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import decoding
from mascompare.app import compose_config
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.runner import execute


def test_auto_batch_size_is_8_off_cuda(tiny_backend):
    assert tiny_backend.auto_batch_size(["What is 2 + 2?"], decoding()) == 8


def test_auto_batch_size_on_cuda_fits_the_kv_cache_in_half_the_free_memory(tiny_backend, monkeypatch):
    free = {"bytes": 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 2**34))
    tiny_backend.device = torch.device("cuda")  # only the choice is computed: nothing runs on the device
    short, long = ["What is 2 + 2?"], ["What is 2 + 2? " * 200]
    gen = decoding(max_new_tokens=256)
    config = tiny_backend.model.config
    bytes_per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * \
        (config.hidden_size // config.num_attention_heads) * 4
    free["bytes"] = 2**20 * 64
    small = tiny_backend.auto_batch_size(long, gen)
    positions = 4 * (tiny_backend.count_tokens([{"role": "user", "content": long[0]}]) + 256 + 256)
    assert small == free["bytes"] // 2 // (positions * bytes_per_position) >= 1
    assert tiny_backend.auto_batch_size(short, gen) > small  # shorter questions, more rows
    free["bytes"] *= 4
    assert tiny_backend.auto_batch_size(long, gen) > small  # more memory, more rows
    free["bytes"] = 2**40
    assert tiny_backend.auto_batch_size(short, gen) == 256  # capped


def test_bad_batch_size_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run.batch_size must be a positive integer or auto, got 'many'"):
        execute(compose_config("task=arith", "run.batch_size=many"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_auto_batch_size_runs_longest_questions_first(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(app, [
        "run", "method=baseline", "task=arith", "task.limit=6", f"model.path={tiny_model_dir}", "model.name=tiny",
        "generation.max_new_tokens=3", "run.progress=false", f"run.output_root={tmp_path}", "run.batch_size=auto",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "arith" / "baseline" / "tiny").iterdir()
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    questions = {s.id: s.question for s in _arith_samples(6)}
    lengths = [len(questions[row["id"]]) for row in rows]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1
    assert json.loads((run_dir / "run.json").read_text())["batch_size"] == 8
    assert {row["batch"] for row in rows} == {0}  # six samples, one batch of up to eight


def _arith_samples(limit):
    from mascompare.tasks import build_task, task_settings

    return build_task(task_settings(compose_config("task=arith", f"task.limit={limit}").task)).samples()
