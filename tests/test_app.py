"""The Hydra application: a sweep's jobs in this process load the model once."""

import json
from pathlib import Path

from typer.testing import CliRunner

from mascompare import app as application
from mascompare.backends import KeptBackend
from mascompare.backends.hf import HFBackend
from mascompare.cli import app

runner = CliRunner()


def count_loads(monkeypatch) -> list:
    loads = []
    load = HFBackend.__init__

    def counted(self, *args, **kwargs):
        loads.append(args[1].name)
        load(self, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "__init__", counted)
    monkeypatch.setattr(application, "SWEEP_BACKEND", KeptBackend())  # nothing kept from earlier tests
    return loads


def final_texts(run_dir) -> dict:
    return {row["id"]: row["final_text"] for row in map(json.loads, (run_dir / "samples.jsonl").open())}


def test_a_sweep_loads_its_model_once_and_reuse_changes_no_result(tiny_model_dir, tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    common = ["task=arith", "task.limit=2", f"model.path={tiny_model_dir}", "model.name=tiny", "run.progress=false"]
    sweep = tmp_path / "sweep"
    result = runner.invoke(app, ["run", "-m", *common, "method=baseline,text_mas", "generation.max_new_tokens=3,4",
                                 f"run.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert loads == ["tiny"]  # four jobs, one load
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))]
    assert len(runs) == 4 and sorted(r["backend_reused"] for r in runs) == [False, True, True, True]

    # the last job, run on its own with a fresh model, writes the same texts
    last = max(runs, key=lambda r: r["started"])
    alone = tmp_path / "alone"
    result = runner.invoke(app, ["run", *common, f"method={last['method']}",
                                 f"generation.max_new_tokens={last['config']['generation']['max_new_tokens']}",
                                 f"run.output_root={alone}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(loads) == 2
    assert final_texts(next(alone.rglob("run.json")).parent) == final_texts(Path(last["run_dir"]))


def test_a_sweep_over_models_loads_each_once_in_turn(tiny_model_dir, tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    result = runner.invoke(app, ["run", "-m", "task=arith", "task.limit=1", f"model.path={tiny_model_dir}",
                                 "model.name=tiny,tiny_too", "generation.max_new_tokens=2,3", "run.progress=false",
                                 f"run.output_root={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(loads) == ["tiny", "tiny_too"]  # Hydra runs each model's jobs together
