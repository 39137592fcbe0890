"""The CLI through typer's CliRunner: runs, sweeps, listing, showing and bad input."""

import json

import pytest
from typer.testing import CliRunner

from mascompare.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tiny_run_args(tiny_model_dir, tmp_path, *extra):
    return ["run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
            "generation.max_new_tokens=4", "run.progress=false", f"run.output_root={tmp_path}", *extra]


def test_run_writes_samples_and_run_json(tiny_model_dir, tmp_path):
    result = invoke(*tiny_run_args(tiny_model_dir, tmp_path, "task.limit=3", "run.batch_size=2"))
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "arith" / "baseline" / "tiny").iterdir())
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["arith-L1-0000", "arith-L2-0000", "arith-L3-0000"]
    for row in rows:
        assert row["usage"]["input_tokens"] > 0 and 1 <= row["usage"]["output_tokens"] <= 4
        assert row["usage"]["calls"] == 1 and row["agents"][0]["role"] == "answerer"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["summary"]["n"] == 3
    assert info["config"]["generation"]["max_new_tokens"] == 4
    assert info["versions"]["torch"] and "model_load_s" in info
    assert "accuracy_strict_ci95" in info["summary"]

    shown = invoke("show", str(run_dir))
    assert shown.exit_code == 0 and "accuracy (flexible)" in shown.output


def test_same_command_resumes_and_more_samples_extend_the_run(tiny_model_dir, tmp_path):
    assert invoke(*tiny_run_args(tiny_model_dir, tmp_path, "task.limit=2")).exit_code == 0
    assert invoke(*tiny_run_args(tiny_model_dir, tmp_path, "task.limit=4")).exit_code == 0
    (run_dir,) = list((tmp_path / "arith" / "baseline" / "tiny").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["samples_resumed"] == 2 and info["summary"]["n"] == 4
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 4


def test_multirun_runs_one_job_per_value(tiny_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = invoke(*tiny_run_args(tiny_model_dir, tmp_path, "task.limit=2,3", f"hydra.sweep.dir={sweep}"), "-m")
    assert result.exit_code == 0, result.output
    counts = sorted(len((sweep / str(i) / "samples.jsonl").read_text().splitlines()) for i in (0, 1))
    assert counts == [2, 3]


def test_cfg_job_prints_every_knob_without_running(tmp_path):
    result = invoke("run", "method=baseline", "task=arith", "--cfg", "job")
    assert result.exit_code == 0
    for key in ("max_new_tokens:", "batch_size:", "temperature:", "top_k:", "seed:", "limit:"):
        assert key in result.output


def test_a_key_on_the_command_line_is_warned_about_and_never_shown():
    result = invoke("run", "method=baseline", "task=arith", "backend.api_key=sk-visible-to-ps", "--cfg", "job")
    assert result.exit_code == 0
    assert "warning: backend.api_key on the command line is visible to every local user" in result.output
    assert "sk-visible-to-ps" not in result.output


def test_list_shows_every_group():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("baseline", "gsm8k", "arith", "custom", "smollm2-135m", "gemma3-270m", "qwen3-8b", "hf"):
        assert name in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["method=baselin"], "Unknown method 'baselin'. Did you mean 'baseline'?"),
        (["task=gsm9k"], "Unknown task 'gsm9k'. Did you mean 'gsm8k'?"),
        (["model=smollm2"], "Unknown model 'smollm2'. Did you mean 'smollm2-135m'?"),
        (["-m", "method=baseline,latentmas"], "Unknown method 'latentmas'."),
        (["task.limt=3"], "Unknown config key 'task.limt'. Did you mean 'limit'?"),
        (["task=arith", "task.limit=-3"], "task.limit must be a non-negative integer or null, got -3."),
        (["task=custom", "task.path=/nonexistent/file.jsonl"], "/nonexistent/file.jsonl"),
        (["task=arith", "run.batch_size=0"], "run.batch_size must be a positive integer"),
        (["task.limit=[1"], "Cannot parse the override 'task.limit=[1'"),
        # method knobs are checked before the model is even looked for
        (["method=latent_mas", "method.latent_steps=-1", "model.path=/nonexistent"],
         "method.latent_steps must be a non-negative integer, got -1."),
        (["method=text_mas", "method.structure=tree"], "method.structure must be one of sequential, hierarchical"),
        (["task=mbpp", "task.sandbox.isolation=docker"], "task.sandbox.isolation must be bwrap or process, got 'docker'."),
    ],
)
def test_bad_input_is_one_sentence_exit_2(args, expected, tmp_path):
    result = runner.invoke(app, ["run", *args, f"run.output_root={tmp_path}"])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_full_error_env_shows_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    result = runner.invoke(app, ["run", "task=arith", "task.limit=-3", f"run.output_root={tmp_path}"])
    assert result.exit_code != 0 and result.exception is not None


def test_show_rejects_a_directory_without_run_json(tmp_path):
    result = invoke("show", str(tmp_path))
    assert result.exit_code == 2 and "has no run.json" in result.output


@pytest.mark.embedded
def test_smoke_baseline_on_the_embedded_model(tmp_path):
    result = invoke("run", "method=baseline", "task=gsm8k", "task.limit=2", "generation.max_new_tokens=16",
                    "run.progress=false", f"run.output_root={tmp_path}")
    assert result.exit_code == 0, result.output
    (run_json,) = tmp_path.glob("gsm8k/baseline/smollm2-135m/*/run.json")
    info = json.loads(run_json.read_text())
    assert info["summary"]["n"] == 2 and 0 < info["summary"]["mean_output_tokens"] <= 16
    assert info["summary"]["mean_input_tokens"] > 50  # a GSM8K question through the chat template
