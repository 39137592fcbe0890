"""Results folders written before the record schema existed (tests/golden/results_v0: a sweep of three methods, a
calibrated pruned_mas and pruned_latent_mas run, and a sampled run with two repeats, all on a tiny model) are
still read by `show`, `compare` and resume, with the figures they gave when they were written
(tests/golden/results_v0_compare.json is `compare --json` of that folder at the time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mascompare.cli import app

OLD = Path(__file__).parent / "golden" / "results_v0"
OLD_COMPARISON = Path(__file__).parent / "golden" / "results_v0_compare.json"
RUNS = ("arith/baseline/tiny/decb697914", "arith/pruned_mas/tiny/20f1854fac",
        "arith/pruned_latent_mas/tiny/850bb8c5f4", "sweep/0", "sweep/1", "sweep/2")


@pytest.fixture
def old_results(tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(OLD, copy)
    return copy


def without_paths(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "run_dir"} for row in rows]


def test_compare_reads_old_folders_with_the_figures_they_gave(old_results):
    result = CliRunner().invoke(app, ["compare", str(old_results), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = json.loads(OLD_COMPARISON.read_text(encoding="utf-8"))
    assert without_paths(rows) == without_paths(expected)


@pytest.mark.parametrize("run", RUNS)
def test_show_reads_old_runs(old_results, run):
    result = CliRunner().invoke(app, ["show", str(old_results / run), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    written = json.loads((OLD / run / "run.json").read_text(encoding="utf-8"))
    assert shown["summary"] == written["summary"] and shown["status"] == "finished"


def test_resume_reads_old_samples_and_runs_only_what_is_missing(old_results, tiny_model_dir):
    import yaml

    from mascompare.app import compose_config
    from mascompare.runner import execute

    run_dir = old_results / "arith/baseline/tiny/decb697914"
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    kept = [o for o in overrides if not o.startswith(("model.path=", "task.limit=", "run.output_root="))]
    cfg = compose_config(*kept, f"model.path={tiny_model_dir}", "task.limit=4", f"run.output_root={old_results}")
    before = (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    info = execute(cfg, run_dir)
    after = (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert info.samples_resumed == 6 and info.summary.n == 8  # 3 old samples x 2 repeats, 1 new x 2
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert {json.loads(line)["id"] for line in after[len(before):]} == {"arith-L4-0000"}  # the task interleaves levels


@pytest.mark.parametrize("run", RUNS)
def test_old_runs_keep_their_identity_so_their_commands_resume_them(run):
    """The command that wrote a run lands in the same directory today: its config hash is unchanged."""
    import yaml

    from mascompare.app import compose_config
    from mascompare.identity import identity_hash

    overrides = yaml.safe_load((OLD / run / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    written = json.loads((OLD / run / "run.json").read_text(encoding="utf-8"))
    assert identity_hash(compose_config(*overrides)) == written["config_hash"]
