"""The API path without a server: the openai backend against a server played in this process (backend=scripted),
through the runner: streaming, retries, failures and resume, budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.runner import execute
from mascompare.tasks import build_task, task_settings


def questions(limit: int) -> list[str]:
    return [s.question for s in build_task(task_settings(compose_config("task=arith", f"task.limit={limit}").task)).samples()]


def run(tmp_path: Path, script: dict, *overrides: str, limit: int = 4):
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(script), encoding="utf-8")
    cfg = compose_config("backend=scripted", f"backend.script={path}", "method=baseline", "task=arith",
                         f"task.limit={limit}", "run.progress=false", f"run.output_root={tmp_path}",
                         "backend.backoff_s=0.01", "backend.max_backoff_s=0.05", *overrides)
    record = execute(cfg, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    return record, lines


def test_streaming_writes_each_sample_when_it_finishes_and_a_slow_one_holds_up_only_itself(tmp_path):
    slow = questions(4)[0]
    script = {"rules": [{"when": slow, "replies": [{"text": "The answer is 1.", "delay_s": 1.0}]}]}
    record, lines = run(tmp_path, script, "backend.max_concurrency=4", "backend.stream=true")
    assert record.status == "finished" and record.summary.n == 4
    assert [line["id"] for line in lines][-1] == "arith-L1-0000"  # the slow first question is written last
    assert len({line["batch"] for line in lines}) == 4  # each sample its own task


def test_retries_after_429_and_5xx_then_success_are_one_recorded_call(tmp_path):
    first = questions(2)[0]
    script = {"rules": [{"when": first, "replies": [{"status": 429, "headers": {"retry-after": "0"}},
                                                    {"status": 503}, {"text": "The answer is 5."}]}]}
    record, lines = run(tmp_path, script, limit=2)
    assert record.summary.n == 2 and record.summary.errors == 0
    answered = next(line for line in lines if line["id"] == "arith-L1-0000")
    assert answered["final_text"] == "The answer is 5." and answered["usage"]["calls"] == 1
    assert answered["agents"][0]["usage_source"] == "api"


def test_a_request_failing_after_its_retries_fails_its_sample_alone_and_resume_retries_only_it(tmp_path):
    first = questions(3)[0]
    failing = {"rules": [{"when": first, "replies": [{"status": 503}]}]}
    record, lines = run(tmp_path, failing, "backend.max_retries=1", limit=3)
    assert record.summary.n == 2 and record.summary.errors == 1
    (failed,) = [line for line in lines if line["error"]]
    assert failed["id"] == "arith-L1-0000" and "failed after 2 attempts" in failed["error"]
    record, lines = run(tmp_path, {}, "backend.max_retries=1", limit=3)  # the server has recovered
    assert record.samples_resumed == 2 and record.summary.n == 3 and record.summary.errors == 0
    assert len(lines) == 4 and lines[-1]["id"] == "arith-L1-0000" and not lines[-1]["error"]


@pytest.mark.parametrize("reply, problem", [
    ({"body": "<html>busy</html>"}, "malformed response"),
    ({"delay_s": 2.0}, "Timeout"),
])
def test_bodies_that_are_not_completions_and_silent_servers_are_retried(tmp_path, reply, problem):
    first = questions(2)[0]
    script = {"rules": [{"when": first, "replies": [reply]}]}
    record, lines = run(tmp_path, script, "backend.max_retries=1", "backend.timeout_s=0.3", limit=2)
    (failed,) = [line for line in lines if line["error"]]
    assert "failed after 2 attempts" in failed["error"] and problem in failed["error"]
    assert record.summary.n == 1


def test_a_refused_key_stops_the_run_with_one_sentence(tmp_path):
    with pytest.raises(UserError, match="refused the request for model 'smollm2-135m' with HTTP 401"):
        run(tmp_path, {"default": {"status": 401}})


def test_a_server_without_usage_is_counted_locally_and_marked_an_estimate(tmp_path):
    record, lines = run(tmp_path, {"default": {"text": "The answer is 3.", "usage": None}}, limit=1)
    (call,) = lines[0]["agents"]
    assert call["usage_source"] == "estimate" and call["input_tokens"] > 0 and call["output_tokens"] > 0


def test_the_budget_stops_a_streamed_run_before_it_would_pass_the_cap(tmp_path):
    price = "+model.price={input: 10000, output: 10000}"  # a cent a token
    record, lines = run(tmp_path, {}, price, "run.max_cost_usd=5", "generation.max_new_tokens=8", limit=8)
    assert record.status == "stopped" and record.stop_reason.startswith("budget:")
    assert 0 < len(lines) < 8 and record.summary.cost_usd_spent <= 5
