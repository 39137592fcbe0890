"""Fault class 5, two sweeps into one folder: a second, different sweep given the folder of the first is refused with
one sentence before anything is written, so that the first sweep's job folders, multirun.yaml and comparison stay as
they were and compare still shows its runs; the first sweep's own command resumes it."""

from __future__ import annotations

import json

from faults import error_line, files, invoke

from mascompare.cli import app


def sweep(sweep_dir, *extra):
    return invoke(app, ["run", "-m", "backend=scripted", "task=arith", "run.progress=false",
                        f"run.output_root={sweep_dir.parent}", f"hydra.sweep.dir={sweep_dir}", *extra])


def test_a_second_sweep_into_the_first_ones_folder_is_refused_and_changes_nothing(tmp_path):
    folder = tmp_path / "sweep"
    first = sweep(folder, "method=baseline,text_mas", "task.limit=2")
    assert first.exit_code == 0, first.output
    before = files(folder)
    assert "multirun.yaml" in before and "comparison.csv" in before and "0/run.json" in before

    second = sweep(folder, "method=baseline", "task.limit=3,4")
    assert second.exit_code == 2
    assert error_line(second.output) == (
        f"hydra.sweep.dir={folder} holds another sweep (backend=scripted task=arith run.progress=false "
        f"run.output_root={tmp_path} method=baseline,text_mas task.limit=2); give this sweep a folder of its own, or "
        "run that sweep's own command to resume it.")
    assert files(folder) == before
    compared = invoke(app, ["compare", str(folder), "--json"])
    assert sorted(row["method"] for row in json.loads(compared.stdout)) == ["baseline", "text_mas"]

    again = sweep(folder, "method=baseline,text_mas", "task.limit=2")  # its own command: resumed, nothing redone
    assert again.exit_code == 0, again.output
    for job in ("0", "1"):
        assert files(folder / job)["samples.jsonl"] == before[f"{job}/samples.jsonl"]
