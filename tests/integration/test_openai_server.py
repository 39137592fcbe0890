"""The openai backend end to end against a real llama.cpp server serving the embedded SmolLM2 GGUF.

A fault-injecting proxy sits between the backend and the server for the fault cases: the server
killed mid-run, 429 with Retry-After, 5xx, slow responses hitting the timeout, a body that is not
JSON, a response without usage, client errors. In each, nothing already written is lost.
"""

import json
import socket
import time
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from conftest import decoding
from mascompare.app import compose_config
from mascompare.backends import llama_server
from mascompare.backends.openai_api import OpenAIBackend
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.records import RunRecord
from mascompare.runner import execute
from mascompare.settings import validate
from fault_proxy import Fault, FaultProxy

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not llama_server.server_installed(),
                       reason="llama-cpp-python[server] is not installed (pip install -e '.[server]')"),
]
SECRET = "sk-test-key-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def server():
    with llama_server.start(threads=1) as running:
        yield running


@pytest.fixture
def proxy(server):
    front = FaultProxy(server.base_url.removesuffix("/v1"))
    yield front
    front.close()


def overrides(proxy, root, *extra) -> list[str]:
    return ["model=smollm2-135m-server", f"backend.base_url={proxy.base_url}", "task=arith",
            "generation.max_new_tokens=16", "run.progress=false", "backend.backoff_s=0.05",
            "backend.max_backoff_s=0.2", f"run.output_root={root}", *extra]


def run(proxy, tmp_path, *extra) -> tuple[RunRecord, list[dict], Path]:
    """One run through the runner into tmp_path/run; returns its record, every samples.jsonl line, the dir."""
    out = tmp_path / "run"
    info = execute(compose_config(*overrides(proxy, tmp_path, *extra)), out)
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return info, lines, out


def test_baseline_end_to_end(proxy, tmp_path):
    info, rows, out = run(proxy, tmp_path, "method=baseline", "task.limit=6")
    assert sorted(r["id"] for r in rows) == sorted(s.id for s in _arith_samples(6))  # in the order they finished
    assert proxy.requests == 6 and proxy.max_in_flight > 1  # the samples went out concurrently
    for row in rows:
        (agent,) = row["agents"]
        assert agent["usage_source"] == "api" and agent["input_tokens"] > 20
        assert 1 <= agent["output_tokens"] <= 16 and agent["cost_usd"] is None  # no price for a local model
        assert row["final_text"] and row["error"] is None
    assert info.status == "finished" and info.summary.n == 6 and info.summary.cost_usd is None
    assert info.backend == "openai" and info.model == "smollm2-135m-server"
    assert json.loads((out / "run.json").read_text())["summary"]["n"] == 6


def test_text_mas_end_to_end(proxy, tmp_path):
    info, rows, _ = run(proxy, tmp_path, "method=text_mas", "task.limit=2")
    assert proxy.requests == 8
    for row in rows:
        assert [a["role"] for a in row["agents"]] == ["planner", "critic", "refiner", "judger"]
        inputs = [a["input_tokens"] for a in row["agents"]]
        assert inputs == sorted(inputs) and inputs[-1] > inputs[0]  # each agent reads the ones before
        assert row["usage"]["calls"] == 4 and all(t["text"] for t in row["transcript"])
    assert info.summary.n == 2


def test_a_slow_request_holds_up_only_its_own_sample(proxy, tmp_path):
    # the first request to arrive is answered only after the three others (or after five minutes)
    proxy.inject(Fault("hold", hold_for=3, delay_s=300))
    start = time.monotonic()
    _, rows, _ = run(proxy, tmp_path, "task.limit=4", "backend.max_concurrency=2")
    assert time.monotonic() - start < 300  # not released by the hold's timeout: the others did go out
    held = next(s.id for s in _arith_samples(4) if s.question in proxy.bodies[0]["messages"][-1]["content"])
    assert len(rows) == 4 and rows[-1]["id"] == held  # the other slot served the rest meanwhile
    assert proxy.max_in_flight == 2


def test_one_request_pool_bounds_every_sample_and_agent(proxy, tmp_path):
    # hierarchical text_mas asks its three experts at once: three samples would want nine requests
    _, rows, _ = run(proxy, tmp_path, "method=text_mas", "method.structure=hierarchical", "task.limit=3",
                     "backend.max_concurrency=3")
    assert proxy.requests == 12 and proxy.max_in_flight == 3 and all(r["error"] is None for r in rows)


def test_barrier_mode_sends_a_batch_then_waits_for_its_slowest(proxy, tmp_path):
    proxy.inject(Fault("delay", delay_s=2))
    _, rows, _ = run(proxy, tmp_path, "task.limit=4", "backend.stream=false", "run.batch_size=2")
    assert [r["id"] for r in rows] == [s.id for s in _arith_samples(4)]
    assert proxy.arrivals[2] - proxy.arrivals[0] >= 2  # the second batch waited for the delayed request


def test_cache_pays_for_no_call_twice(proxy, tmp_path):
    _, first, _ = run(proxy, tmp_path, "method=text_mas", "task.limit=2", "run.cache=true")
    assert proxy.requests == 8
    # starting afresh, with one more sample: only the new sample's four calls are sent
    info, again, _ = run(proxy, tmp_path, "method=text_mas", "task.limit=3", "run.cache=true", "run.resume=false")
    assert proxy.requests == 12 and info.summary.n == 3
    earlier = {r["id"]: r for r in first}
    for row in again:
        if row["id"] in earlier:
            assert row["final_text"] == earlier[row["id"]]["final_text"]
            assert {a["usage_source"] for a in row["agents"]} == {"cache"}
            tokens = [a["output_tokens"] for a in row["agents"]]
            assert tokens == [a["output_tokens"] for a in earlier[row["id"]]["agents"]]
        else:
            assert {a["usage_source"] for a in row["agents"]} == {"api"}
    assert (tmp_path / "response_cache.sqlite").is_file()


def test_resume_after_a_failed_agent_pays_only_for_what_failed(proxy, tmp_path):
    proxy.inject(Fault("pass"), times=2)
    proxy.inject(Fault("status", 400, message="context too long"))  # the third agent's request
    _, rows, _ = run(proxy, tmp_path, "method=text_mas", "task.limit=1", "run.cache=true")
    assert proxy.requests == 4 and "HTTP 400" in rows[0]["error"]
    _, rows, _ = run(proxy, tmp_path, "method=text_mas", "task.limit=1", "run.cache=true")
    # the first two agents come from the cache; the third is asked again, and the judger reads its new text
    assert proxy.requests == 6 and rows[-1]["error"] is None
    assert [a["usage_source"] for a in rows[-1]["agents"]] == ["cache", "cache", "api", "api"]


def test_completions_keep_input_order_under_concurrency(proxy):
    settings = validate(compose_config(*overrides(proxy, "/tmp")))
    backend = OpenAIBackend(settings.backend, settings.model)
    conversations = [[{"role": "user", "content": "Say yes. " + "word " * (40 * k)}] for k in range(8)]
    completions = backend.chat(conversations, decoding(max_new_tokens=4))
    assert [c.prompt_tokens for c in completions] == [backend.count_tokens(m) for m in conversations]
    assert proxy.max_in_flight > 1


def test_api_key_never_written_or_shown(proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    runner = CliRunner()
    args = ["run", *overrides(proxy, tmp_path, "method=baseline", "task.limit=2", f"backend.api_key={SECRET}")]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    # a server that echoes the key in its error (as OpenAI's 401 does) stops the run; the message hides it
    proxy.inject(Fault("status", 401, message=f"Incorrect API key provided: {SECRET}."))
    refused = runner.invoke(app, ["run", *overrides(proxy, tmp_path, "method=baseline", "task.limit=3",
                                                     f"backend.api_key={SECRET}")])
    assert refused.exit_code == 2 and "HTTP 401" in refused.output and "***" in refused.output
    assert SECRET not in refused.output
    swept = runner.invoke(app, ["run", "-m", *overrides(proxy, tmp_path, "method=baseline", "task.limit=1,2",
                                                         f"backend.api_key={SECRET}")], catch_exceptions=False)
    assert swept.exit_code == 0 and SECRET not in swept.output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "samples.jsonl" for p in written) and any(p.parent.name == ".hydra" for p in written)
    assert any(p.name == "multirun.yaml" for p in written)
    for path in written:
        assert SECRET not in path.read_text(errors="replace"), path


def test_server_killed_mid_run_then_resume_completes(tmp_path):
    first = llama_server.start(threads=1)
    proxy = FaultProxy(first.base_url.removesuffix("/v1"))
    proxy.kill_after = (2, first.stop)  # the server dies right after answering the second request
    try:
        info, rows, _ = run(proxy, tmp_path, "task.limit=5", "backend.max_concurrency=1", "backend.max_retries=2")
        assert info.status == "finished"
        assert [r["error"] is None for r in rows] == [True, True, False, False, False]
        assert all("failed after 3 attempts" in r["error"] and "Connection" in r["error"] for r in rows[2:])
        assert info.summary.n == 2 and info.summary.errors == 3

        with llama_server.start(threads=1) as second:  # back, on another port: the run resumes all the same
            proxy.upstream = second.base_url.removesuffix("/v1")
            before = proxy.requests
            info, rows, _ = run(proxy, tmp_path, "task.limit=5", "backend.max_concurrency=1")
            assert proxy.requests - before == 3  # only the failed samples were asked again
    finally:
        first.stop()
        proxy.close()
    assert len(rows) == 8 and [r["id"] for r in rows[:2]] == [s.id for s in _arith_samples(2)]
    assert info.summary.n == 5 and info.summary.errors == 0 and info.samples_resumed == 2


def test_two_replicas_behind_one_port_answer_runs_and_streams_then_stop_cleanly(tmp_path):
    with llama_server.start(replicas=2, threads=1) as served:
        info = execute(compose_config("model=smollm2-135m-server", f"backend.base_url={served.base_url}", "task=arith",
                                      "task.limit=4", "generation.max_new_tokens=8", "run.progress=false",
                                      f"run.output_root={tmp_path}"), tmp_path / "run")
        assert info.summary.n == 4 and info.summary.errors == 0
        client = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
        request = dict(model=llama_server.ALIAS, messages=[{"role": "user", "content": "Say hello."}],
                       max_tokens=8, temperature=0)
        chunks = list(client.chat.completions.create(**request, stream=True))
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert len(chunks) > 3 and streamed == client.chat.completions.create(**request).choices[0].message.content
        for process in served.processes:
            process.kill()
            process.wait()
        with pytest.raises(openai.InternalServerError, match="Every llama.cpp replica behind this port has stopped"):
            client.chat.completions.create(**request)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=5)


def test_429_waits_as_long_as_retry_after_says(proxy, tmp_path):
    proxy.inject(Fault("status", 429, headers={"Retry-After": "1"}, message="rate limited"))
    info, rows, _ = run(proxy, tmp_path, "task.limit=1", "backend.backoff_s=30", "backend.max_backoff_s=60")
    assert info.summary.n == 1 and rows[0]["error"] is None
    assert proxy.requests == 2 and 0.9 <= proxy.arrivals[1] - proxy.arrivals[0] < 10


@pytest.mark.parametrize("fault", [Fault("status", 503, message="overloaded"), Fault("malformed"),
                                   Fault("status", 429, message="slow down")], ids=["503", "malformed-json", "429"])
def test_transient_faults_are_retried(proxy, tmp_path, fault):
    proxy.inject(fault)
    info, rows, _ = run(proxy, tmp_path, "task.limit=2", "backend.max_concurrency=1")
    assert proxy.requests == 3 and [r["error"] for r in rows] == [None, None]


def test_fault_that_outlasts_the_retries_fails_its_sample_and_the_run_goes_on(proxy, tmp_path):
    proxy.inject(Fault("malformed"), times=3)
    info, rows, _ = run(proxy, tmp_path, "task.limit=3", "backend.max_concurrency=1", "backend.max_retries=2")
    assert "failed after 3 attempts" in rows[0]["error"] and "malformed response" in rows[0]["error"]
    assert [r["error"] for r in rows[1:]] == [None, None]
    assert (info.summary.n, info.summary.errors) == (2, 1)


def test_slow_responses_hit_the_timeout_and_resume_retries_only_them(proxy, tmp_path):
    # a timeout well above a normal answer's time on a busy machine, and delays well above it
    proxy.inject(Fault("delay", delay_s=12), times=2)
    start = time.monotonic()
    info, rows, _ = run(proxy, tmp_path, "task.limit=3", "backend.max_concurrency=1", "backend.timeout_s=6",
                        "backend.max_retries=1")
    assert time.monotonic() - start < 60
    assert "Timeout" in rows[0]["error"] and [r["error"] for r in rows[1:]] == [None, None]
    before = proxy.requests
    info, rows, _ = run(proxy, tmp_path, "task.limit=3", "backend.max_concurrency=1", "backend.timeout_s=30")
    assert proxy.requests - before == 1 and info.summary.n == 3 and len(rows) == 4


def test_client_error_is_not_retried_and_names_the_servers_message(proxy, tmp_path):
    proxy.inject(Fault("status", 400, message="prompt is longer than the context"))
    info, rows, _ = run(proxy, tmp_path, "task.limit=2", "backend.max_concurrency=1")
    assert proxy.requests == 2
    assert rows[0]["error"] == "HTTP 400 from the server (not retried): prompt is longer than the context"
    assert rows[1]["error"] is None


def test_refused_request_stops_the_run_and_keeps_what_finished(proxy, tmp_path):
    proxy.inject(Fault("pass"), times=2)
    proxy.inject(Fault("status", 404, message="model 'nope' not found"))
    with pytest.raises(UserError, match="HTTP 404: model 'nope' not found"):
        run(proxy, tmp_path, "task.limit=4", "backend.max_concurrency=1")
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["error"] for line in lines] == [None, None]


def test_missing_usage_is_estimated_with_the_models_tokenizer(proxy, tmp_path):
    _, reported, _ = run(proxy, tmp_path / "a", "task.limit=1")
    proxy.inject(Fault("no_usage"))
    _, estimated, _ = run(proxy, tmp_path / "b", "task.limit=1")
    (api,), (local,) = reported[0]["agents"], estimated[0]["agents"]
    assert (api["usage_source"], local["usage_source"]) == ("api", "estimate")
    assert local["input_tokens"] == api["input_tokens"]  # same tokenizer and chat template as the server


@pytest.mark.parametrize("slots", [1, 3])
def test_budget_stops_cleanly_and_a_higher_cap_resumes(proxy, tmp_path, slots):
    # with several samples in flight, each new one starts only if it and those in flight fit the cap
    price = "model.price={input: 100000, output: 100000}"  # $0.10 a token: a few dollars a sample
    slots = f"backend.max_concurrency={slots}"
    info, rows, _ = run(proxy, tmp_path, price, "run.max_cost_usd=12", "task.limit=4", slots)
    assert info.status == "stopped" and "raise run.max_cost_usd" in info.stop_reason
    assert 1 <= len(rows) < 4 and info.summary.cost_usd_spent <= 12
    assert all(r["usage"]["cost_usd"] > 0 for r in rows)
    stopped_at = len(rows)
    info, rows, _ = run(proxy, tmp_path, price, "run.max_cost_usd=1000", "task.limit=4", slots)
    assert info.status == "finished" and info.summary.n == 4 and len(rows) == 4
    assert info.samples_resumed == stopped_at and info.summary.cost_usd == pytest.approx(
        sum(r["usage"]["cost_usd"] for r in rows))


def test_budget_below_the_first_batch_runs_nothing(proxy, tmp_path):
    out = tmp_path / "run"
    info = execute(compose_config(*overrides(proxy, tmp_path, "model.price={input: 100000, output: 100000}",
                                             "run.max_cost_usd=1", "task.limit=2")), out)
    assert info.status == "stopped" and info.summary.n == 0 and proxy.requests == 0


def test_latent_mas_fails_before_any_request(proxy, tmp_path):
    with pytest.raises(UserError, match="^Method 'latent_mas' thinks in latent space and needs a model running in "
                                        "this process, which backend 'openai' is not; use backend=hf.$"):
        execute(compose_config(*overrides(proxy, tmp_path, "method=latent_mas", "task.limit=2")), tmp_path / "run")
    assert proxy.requests == 0


def test_dry_run_counts_requests_and_sends_none(proxy, tmp_path):
    result = CliRunner().invoke(app, ["run", "--dry-run", *overrides(proxy, tmp_path, "method=text_mas",
                                                                      "task.limit=5", "model.price={input: 1, output: 2}")])
    assert result.exit_code == 0, result.output
    assert "evaluation requests" in result.output and "20" in result.output and "at most $" in result.output
    assert proxy.requests == 0 and not any(p.is_file() for p in tmp_path.rglob("*"))


def _arith_samples(n):
    from mascompare.tasks import build_task, task_settings

    return build_task(task_settings(compose_config("task=arith", f"task.limit={n}").task)).samples()


def test_api_runs_never_import_torch(proxy, tmp_path):
    import subprocess
    import sys

    script = ("import sys\nfrom mascompare.app import compose_config\nfrom mascompare.runner import execute\n"
              f"execute(compose_config(*{overrides(proxy, tmp_path, 'method=text_mas', 'task.limit=1')!r}), "
              f"{str(tmp_path / 'run')!r})\n"
              "print('imported:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported: []" in done.stdout and proxy.requests == 4
