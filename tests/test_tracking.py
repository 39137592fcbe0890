"""run.tracking=mlflow against real local MLflow tracking stores (SQLite), through `mascompare run`."""

import json

import pytest
from typer.testing import CliRunner

from mascompare import tracking
from mascompare.cli import app
from mascompare.errors import UserError

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: pip install 'mascompare[tracking]'")
runner = CliRunner()


def run_args(tiny_model_dir, root, *extra):
    return ["run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
            "generation.max_new_tokens=4", "run.progress=false", f"run.output_root={root}", "run.tracking=mlflow",
            *extra]


def invoke(*args, env=None):
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def artifacts(client, run_id) -> list[str]:
    return sorted(item.path for item in client.list_artifacts(run_id))


def test_a_run_is_logged_with_its_config_summary_records_and_view(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    invoke(*run_args(tiny_model_dir, tmp_path, "task.limit=2"))
    (run_json,) = (tmp_path / "arith").rglob("run.json")
    info = json.loads(run_json.read_text())
    assert (tmp_path / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mascompare")
    assert experiment.artifact_location == (tmp_path / "mlflow-artifacts").as_uri()
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED" and logged.info.run_name == "baseline"
    params = logged.data.params
    assert params["method.name"] == "baseline" and params["generation.max_new_tokens"] == "4"
    assert params["task.limit"] == "2" and params["run.tracking"] == "mlflow"
    summary = info["summary"]
    assert logged.data.metrics["accuracy_flexible"] == summary["accuracy_flexible"]
    assert logged.data.metrics["accuracy_flexible_high"] == summary["accuracy_flexible_ci95"][1]
    assert logged.data.metrics["mean_output_tokens"] == summary["mean_output_tokens"]
    assert logged.data.tags["mascompare.run_dir"] == str(run_json.parent)
    assert logged.data.tags["mascompare.config_hash"] == info["config_hash"]
    assert artifacts(client, logged.info.run_id) == ["prompts.jsonl", "run.json", "samples.jsonl", "view.html"]
    logged_samples = client.download_artifacts(logged.info.run_id, "samples.jsonl", str(tmp_path / "back"))
    assert open(logged_samples).read() == (run_json.parent / "samples.jsonl").read_text()

    invoke(*run_args(tiny_model_dir, tmp_path, "task.limit=2"))  # resumed, nothing left to do: the same MLflow run
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [logged.info.run_id]
    invoke(*run_args(tiny_model_dir, tmp_path, "task.limit=3"))  # the same run directory, other params: a new one
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.params["task.limit"] for r in runs] == ["2", "3"]
    assert runs[1].data.metrics["n"] == 3 and runs[1].data.tags["mascompare.run_dir"] == str(run_json.parent)
    assert len(list((tmp_path / "arith").rglob("run.json"))) == 1


def test_a_sweep_is_one_experiment_in_the_store_mlflow_tracking_uri_names(tiny_model_dir, tmp_path):
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    sweep = tmp_path / "results" / "multirun" / "two-methods"
    invoke(*run_args(tiny_model_dir, tmp_path / "results", "task.limit=2"), "-m", "method=baseline,text_mas",
           f"hydra.sweep.dir={sweep}", env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    assert not (tmp_path / "results" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("two-methods")
    assert experiment.tags["mascompare.sweep_dir"] == str(sweep)
    assert experiment.artifact_location == (store.parent / "mlflow-artifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [(r.info.run_name, r.data.tags["mascompare.method"]) for r in runs] == \
        [("baseline 0", "baseline"), ("text_mas 1", "text_mas")]
    assert client.get_experiment_by_name("mascompare") is None


def test_a_store_that_cannot_be_written_is_a_warning_and_the_run_stands(tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke(*run_args(tiny_model_dir, tmp_path / "results", "task.limit=1"),
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"})
    assert "could not log the run to MLflow" in result.output and "its records are in" in result.output
    (run_json,) = (tmp_path / "results").rglob("run.json")
    assert json.loads(run_json.read_text())["status"] == "finished"


def test_bad_settings_are_one_sentence_before_anything_runs(tiny_model_dir, tmp_path, monkeypatch):
    result = runner.invoke(app, run_args(tiny_model_dir, tmp_path, "run.tracking=wandb"))
    assert result.exit_code == 2
    assert result.output.strip() == "error: run.tracking must be null or one of mlflow, got 'wandb'."
    assert not any(tmp_path.iterdir())
    monkeypatch.setattr(tracking, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"needs the mlflow package: pip install 'mascompare\[tracking\]'"):
        tracking.check("mlflow")
