"""Fault class 6, compare's outputs: a bad --out (a file, a read-only folder) is refused with one sentence before
anything is printed or written; --json prints JSON and writes nothing; a table of many runs is summarised per method
on the terminal while the files list every run."""

from __future__ import annotations

import csv
import json

import pytest
from faults import cli, error_line, files, invoke, run_dir_of, says

from mascompare import report
from mascompare.cli import app


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare") / "sweep"
    result = invoke(app, ["run", "-m", "backend=scripted", "task=arith", "task.limit=3", "run.progress=false",
                          "method=baseline,text_mas", f"run.output_root={folder.parent}", f"hydra.sweep.dir={folder}"])
    assert result.exit_code == 0, result.output
    return folder


def test_an_out_that_is_a_file_is_refused_before_anything_is_printed(sweep_folder, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    before = files(sweep_folder)
    result = invoke(app, ["compare", str(sweep_folder), "--out", str(target)])
    assert result.exit_code == 2
    assert error_line(result.output) == f"--out={target} (where the comparison's files go) is a file; set --out to a directory."
    assert result.output.splitlines() == [f"error: {error_line(result.output)}"]  # no table before it
    assert target.read_text() == "mine" and files(sweep_folder) == before


def test_a_read_only_out_is_refused_before_anything_is_printed(sweep_folder, tmp_path):
    out = tmp_path / "read-only"
    out.mkdir()
    status, output = cli("compare", str(sweep_folder), "--out", str(out),
                         root_mount=f"mount --bind -o ro {out} {out}")
    assert status == 2
    assert error_line(output) == (f"--out={out} (where the comparison's files go) is not writable ({out} is on a "
                                  "read-only file system); set --out to a writable directory.")
    assert output.strip().splitlines() == [f"error: {error_line(output)}"]
    assert files(out) == {}


def test_compare_json_prints_json_and_writes_nothing(sweep_folder):
    run_dir = run_dir_of(sweep_folder / "0")
    for target in (sweep_folder, run_dir):
        before = files(sweep_folder)
        result = invoke(app, ["compare", str(target), "--json"])
        assert result.exit_code == 0
        assert {row["method"] for row in json.loads(result.stdout)} <= {"baseline", "text_mas"}
        assert files(sweep_folder) == before


def test_many_runs_are_summarised_per_method_on_the_terminal_and_listed_in_full_in_the_files(sweep_folder, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setattr(report, "TERMINAL_RUNS", 1)
    result = invoke(app, ["compare", str(sweep_folder), "--out", str(tmp_path / "out"), "--no-html"])
    assert result.exit_code == 0, result.output
    assert says(result.output, "2 runs, summarised per method") and "per method" in result.output
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert sorted(row["method"] for row in rows) == ["baseline", "text_mas"]
