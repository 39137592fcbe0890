"""Fault class 3, refused runs: bad input refused before or after Hydra made the run's folder ends in one sentence and
exit 2, with nothing written (the output root exactly as it was, also where an earlier run lives)."""

from __future__ import annotations

import logging
import pytest
from faults import cli, error_line, files, invoke, scripted_args, scripted_run

from mascompare.cli import app

SCRIPTED_REFUSALS = [
    (["backend.base_url=not-a-url"],
     "backend.base_url must be an http:// or https:// URL such as http://127.0.0.1:8000/v1, or null, got 'not-a-url'."),
    (["run.threads=0"], "run.threads must be a positive integer or auto, got 0."),
    (["run.threads=many"], "run.threads must be a positive integer or auto, got 'many'."),
    (["+run.nested.thing=3"], "+run.nested.thing adds a key that run does not read, so it would change nothing; run's "
     "keys are batch_size, repeats, output_root, primary_metric, resume, progress, max_cost_usd, dry_run, cache, "
     "on_busy, tracking, threads."),
]


@pytest.mark.parametrize("extra, sentence", SCRIPTED_REFUSALS)
def test_bad_settings_are_one_sentence_and_write_nothing(tmp_path, extra, sentence):
    root = tmp_path / "results"
    assert scripted_run(root).exit_code == 0  # an earlier run there: left exactly as it was
    before = files(root)
    result = scripted_run(root, *extra)
    assert result.exit_code == 2 and error_line(result.output) == sentence
    assert files(root) == before


def test_a_missing_model_path_is_refused_after_hydra_made_the_folder_and_leaves_nothing(tmp_path):
    root = tmp_path / "results"
    result = invoke(app, ["run", "task=arith", "task.limit=1", "model.path=/nonexistent/model", "model.name=x",
                          "run.progress=false", f"run.output_root={root}"])
    assert result.exit_code == 2
    assert error_line(result.output) == ("model.path /nonexistent/model does not exist; point it at a local model "
                                         "directory or a hub id.")
    assert not root.exists()


def test_a_missing_api_key_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = tmp_path / "results"
    result = invoke(app, ["run", "backend=openai", "model=gpt-4o-mini", "task=arith", "task.limit=2",
                          f"run.output_root={root}"])
    assert result.exit_code == 2
    assert error_line(result.output) == (
        "The OpenAI API needs a key: set the environment variable OPENAI_API_KEY or backend.api_key_file (or "
        "backend.base_url for a server that needs none).")
    assert not root.exists()


def test_a_model_cache_that_is_a_file_names_the_variable_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    monkeypatch.setenv("MASCOMPARE_CACHE", str(cache))
    root = tmp_path / "results"
    result = invoke(app, ["run", "task=arith", "task.limit=1", "run.progress=false", f"run.output_root={root}"])
    assert result.exit_code == 2
    assert error_line(result.output) == (
        f"MASCOMPARE_CACHE={cache} (where the embedded model 'smollm2-135m' is converted on first use) is a file; "
        "set MASCOMPARE_CACHE to a directory.")
    assert not root.exists() and cache.read_text() == "not a folder"
    # nor a log handler of the folder that went: later runs in this process would fail to log into it
    assert not [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
                and str(root) in h.baseFilename]


def test_a_read_only_output_root_is_one_sentence_and_nothing_is_written(tmp_path):
    root = tmp_path / "read-only"
    root.mkdir()
    (root / "kept.txt").write_text("as it was")
    status, output = cli(*scripted_args(root), root_mount=f"mount --bind -o ro {root} {root}")
    assert status == 2, output
    assert error_line(output) == (f"run.output_root={root} is not writable ({root} is on a read-only file system); "
                                  "set run.output_root to a writable directory.")
    assert files(root) == {"kept.txt": b"as it was"}


def test_a_read_only_home_refuses_a_model_that_would_be_converted_there_and_writes_nothing(tmp_path):
    home, root = tmp_path / "home", tmp_path / "results"
    home.mkdir()
    status, output = cli("run", "task=arith", "task.limit=1", "run.progress=false", f"run.output_root={root}",
                         root_mount=f"mount --bind -o ro {home} {home} && export HOME={home} && unset MASCOMPARE_CACHE")
    assert status == 2, output
    assert error_line(output) == (
        f"MASCOMPARE_CACHE={home}/.cache/mascompare (where the embedded model 'smollm2-135m' is converted on first use) "
        f"is not writable ({home} is on a read-only file system); set MASCOMPARE_CACHE to a writable directory.")
    assert not root.exists() and files(home) == {}
