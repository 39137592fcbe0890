"""Fault class 2, server answers: a usage count that is a string or negative, and an answer without text, fail their
own sample with a sentence that says so (retried, recorded, shown by show and compare); a run whose every sample
failed stops with exit 1 and the reason; the same command, once the server answers properly, runs exactly the
failed samples again."""

from __future__ import annotations

import json

import pytest
from faults import error_line, invoke, keys_once, run_dir_of, run_json, sample_lines, says, scripted_run

from mascompare.app import compose_config
from mascompare.cli import app
from mascompare.tasks import build_task, task_settings


def first_question() -> str:
    return next(iter(build_task(task_settings(compose_config("task=arith", "task.limit=1").task)).samples())).question


@pytest.mark.parametrize("reply, error", [
    ({"usage": {"prompt_tokens": "twelve", "completion_tokens": 3}},
     "malformed response (its usage.prompt_tokens is 'twelve', not a token count)"),
    ({"usage": {"prompt_tokens": 9, "completion_tokens": -2}},
     "malformed response (its usage.completion_tokens is -2, not a token count)"),
    ({"text": None}, "the server answered without text (finish_reason 'stop')"),
])
def test_a_malformed_answer_fails_its_sample_alone_and_resume_runs_only_it(tmp_path, reply, error):
    root = tmp_path / "results"
    script = {"rules": [{"when": first_question(), "replies": [{"text": "The answer is 2.", **reply}]}]}
    result = scripted_run(root, script=script)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    run_dir = run_dir_of(root)
    (failed,) = [line for line in sample_lines(run_dir) if line["error"]]
    assert failed["id"] == "arith-L1-0000" and error in failed["error"]
    summary = run_json(run_dir)["summary"]
    assert summary["n"] == 2 and summary["errors"] == 1
    assert summary["mean_input_tokens"] >= 0 and summary["mean_output_tokens"] >= 0  # no negative count counted
    assert says(result.output, "why they failed") and says(result.output, error)
    assert says(invoke(app, ["show", str(run_dir)]).output, error)

    resumed = scripted_run(root, script={})  # the same script file, now answering every request properly
    assert resumed.exit_code == 0
    lines = sample_lines(run_dir)
    assert len(lines) == 4 and lines[-1]["id"] == "arith-L1-0000" and lines[-1]["error"] is None  # only it again
    assert run_json(run_dir)["summary"]["errors"] == 0
    assert len(set(keys_once(run_dir))) == 3


def test_a_run_whose_every_sample_failed_stops_with_exit_1_and_the_reason(tmp_path):
    root = tmp_path / "results"
    result = scripted_run(root, script={"default": {"status": 503}})
    assert result.exit_code == 1
    assert error_line(result.output) == (
        "The run stopped: every sample failed (3 samples), e.g. with: failed after 2 attempts; last: HTTP 503: "
        "scripted status 503; fix that and run the same command again to retry them.")
    info = run_json(run_dir_of(root))
    assert info["status"] == "stopped" and info["stop_reason"].startswith("every sample failed (3 samples)")
    compared = invoke(app, ["compare", str(run_dir_of(root)), "--json"])
    assert compared.exit_code == 0 and json.loads(compared.stdout)[0]["errors"] == 3

    resumed = scripted_run(root, script={})
    assert resumed.exit_code == 0 and run_json(run_dir_of(root))["status"] == "finished"
    assert [line["error"] is None for line in sample_lines(run_dir_of(root))] == [False] * 3 + [True] * 3
