"""Sweeps: the comparison written when a sweep ends, failed jobs, launchers, sweepers and presets."""

import csv
import importlib.util
import json

import pytest
import yaml
from typer.testing import CliRunner

from test_report import make_run

from mascompare.app import compose_config
from mascompare.cli import app
from mascompare.store import FAILURE_FILE
from mascompare.sweep import CompareSweep

runner = CliRunner()


def sweep_args(tiny_model_dir, sweep_dir, *extra):
    return ["run", "-m", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
            "generation.max_new_tokens=4", "run.progress=false", f"run.output_root={sweep_dir.parent}",
            f"hydra.sweep.dir={sweep_dir}", *extra]


def csv_rows(sweep_dir):
    return list(csv.DictReader((sweep_dir / "comparison.csv").open()))


def test_sweep_end_writes_the_comparison_with_the_swept_key_as_a_column(tiny_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = runner.invoke(app, sweep_args(tiny_model_dir, sweep, "method=baseline", "task.limit=2,3"),
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("comparison.md", "comparison.csv", "comparison.tex", "pareto.png"):
        assert (sweep / name).is_file(), name
    rows = csv_rows(sweep)
    assert [(r["method"], r["task.limit"], r["n"]) for r in rows] == [("baseline", "2", "2"), ("baseline", "3", "3")]
    assert "| task.limit |" in (sweep / "comparison.md").read_text()


def test_a_failed_job_is_listed_and_hides_none_of_the_others(tiny_model_dir, tmp_path):
    # job 0 fails first; Hydra's BasicSweeper still runs job 1, then raises job 0's error
    sweep = tmp_path / "sweep"
    result = runner.invoke(app, sweep_args(tiny_model_dir, sweep, "method=baseline", "task.limit=-1,2"))
    assert result.exit_code == 2 and "task.limit must be a non-negative integer" in result.output
    failure = json.loads((sweep / "0" / FAILURE_FILE).read_text())
    assert "task.limit must be a non-negative integer" in failure["error"] and "task.limit=-1" in failure["overrides"]
    assert [(r["method"], r["n"]) for r in csv_rows(sweep)] == [("baseline", "2")]
    md = (sweep / "comparison.md").read_text()
    assert "## Failed jobs" in md and "`0` (" in md and "task.limit=-1" in md

    # the same sweep again with the bad value fixed: the job succeeds and is no longer listed as failed
    result = runner.invoke(app, sweep_args(tiny_model_dir, sweep, "method=baseline", "task.limit=1,2"))
    assert result.exit_code == 0, result.output
    assert not (sweep / "0" / FAILURE_FILE).exists() and "Failed jobs" not in (sweep / "comparison.md").read_text()


def test_a_failed_reference_job_leaves_the_others_compared_with_the_default_reference(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "baseline", [True, False])
    make_run(sweep / "1", "pruned_mas", [True, True], method_cfg={"prune_rate": 0.5})
    (sweep / "2").mkdir()
    (sweep / "2" / FAILURE_FILE).write_text(json.dumps({"error": "RuntimeError: out of memory", "overrides": []}))
    CompareSweep(reference="pruned_mas:method.prune_rate=0", by=[])._write(sweep, config=None)
    rows = {r["method"]: r for r in csv_rows(sweep)}
    assert rows["baseline"]["reference"] == "(reference)" and rows["pruned_mas"]["n_paired"] == "2"
    assert "RuntimeError: out of memory" in (sweep / "comparison.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason='needs hydra-joblib-launcher: pip install -e ".[joblib]"')
def test_two_job_sweep_through_the_joblib_launcher(tiny_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = sweep_args(tiny_model_dir, sweep, "hydra/launcher=joblib_api", "hydra.launcher.n_jobs=2",
                      "method=baseline,text_mas", "task.limit=2")
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for job in ("0", "1"):
        assert json.loads((sweep / job / "run.json").read_text())["status"] == "finished"
    rows = {r["method"]: r for r in csv_rows(sweep)}
    assert rows["text_mas"]["reference"] == "(reference)" and rows["baseline"]["n_paired"] == "2"


def test_experiment_presets_compose():
    smoke = {arm: compose_config("+experiment=smoke", f"+experiment/smoke_arm={arm}")
             for arm in ("baseline", "text_mas", "latent_mas", "pruned_mas", "pruned_latent_mas")}
    assert {arm: cfg.method.name for arm, cfg in smoke.items()} == {arm: arm for arm in smoke}
    assert smoke["baseline"].task.name == "arith" and smoke["baseline"].task.limit == 8
    assert "calibration" not in smoke["baseline"].method  # an arm's knobs stay with its method
    for arm in ("pruned_mas", "pruned_latent_mas"):
        calibration = smoke[arm].method.calibration
        assert calibration.size == calibration.iterations * calibration.batch_size == 2  # 2 calibration graphs

    latent = compose_config("+experiment=latentmas_gsm8k", "+experiment/latentmas_gsm8k_arm=latent_mas_hierarchical",
                            "model=qwen3-14b")
    method = latent.method
    assert (method.name, method.structure, method.latent_steps) == ("latent_mas", "hierarchical", 10)
    assert (latent.task.name, latent.generation.temperature, latent.generation.top_p) == ("gsm8k", 0.6, 0.95)

    assert latent.run.repeats == 3  # the paper averages three sampled runs

    pruned = compose_config("+experiment=agentprune_gsm8k", "+experiment/agentprune_gsm8k_arm=pruned")
    assert (pruned.method.name, pruned.method.prune_rate, pruned.task.limit) == ("pruned_mas", 0.5, 1279)
    assert pruned.run.repeats == 1


@pytest.mark.parametrize("option, expected", [
    ("hydra/launcher=joblib_api", "hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("hydra/sweeper=latent_optuna", "direction: maximize"),
])
def test_scale_out_presets_compose(option, expected):
    plugin = "hydra_joblib_launcher" if "joblib" in option else "hydra_optuna_sweeper"
    if importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(f"needs the {plugin} plugin")
    result = runner.invoke(app, ["run", "method=latent_mas", option, "--cfg", "hydra"])
    assert result.exit_code == 0, result.output
    assert expected in result.output and "mascompare.sweep.CompareSweep" in result.output


def test_the_optuna_preset_tunes_on_a_split_that_evaluation_can_skip():
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        pytest.skip("needs the hydra_optuna_sweeper plugin")
    result = runner.invoke(app, ["run", "method=latent_mas", "hydra/sweeper=latent_optuna", "--cfg", "hydra"])
    params = yaml.safe_load(result.output)["hydra"]["sweeper"]["params"]
    # overrides, as the sweeper sends them
    assert (str(params["task.offset"]), str(params["task.limit"])) == ("0", "40")
