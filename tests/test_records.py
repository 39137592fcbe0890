"""The records a run writes (mascompare/records.py): sums over calls, and reading lines and run.json of every
schema version through the one upgrade path."""

import json

import pytest

from helpers import sample_record
from mascompare.errors import UserError
from mascompare.records import (
    SCHEMA_VERSION,
    DamagedRecord,
    NewerRecord,
    RunRecord,
    SampleRecord,
    Summary,
    Turn,
    Usage,
    UsageRecord,
)
from mascompare.store import latest_records

# a samples.jsonl line as runs wrote it before the schema version existed: no schema, repeat or batch, and a
# usage block without context_tokens or decoding_calls
VERSION_1_LINE = {
    "id": "arith-L1-0000", "target": "7", "error": None, "final_text": "The answer is 7.",
    "question_hash": "q", "extracted_strict": "7", "extracted_flexible": "7", "correct_strict": True,
    "correct_flexible": True, "extractor_version": "numeric-2", "wall_time_s": 0.4,
    "usage": {"input_tokens": 30, "output_tokens": 6, "latent_steps": 4, "kv_positions_received": 12, "calls": 2,
              "forward_passes": 9, "wall_time_s": 0.4, "cost_usd": None, "calls_at_max_new_tokens": 1},
    "agents": [{"sample_id": "arith-L1-0000", "agent": "planner", "role": "planner", "latent_steps": 4,
                "input_tokens": 20, "forward_passes": 5},
               {"sample_id": "arith-L1-0000", "agent": "judger", "role": "judger", "input_tokens": 10,
                "output_tokens": 6, "kv_positions_received": 12, "forward_passes": 4, "finish_reason": "length"}],
    "transcript": [{"agent": "planner", "role": "planner", "round": 0, "text": None},
                   {"agent": "judger", "role": "judger", "round": 0, "text": "The answer is 7."}],
}
VERSION_1_RUN = {"status": "finished", "run_dir": "results/x", "task": "arith", "method": "latent_mas",
                 "model": "tiny", "backend": "hf", "config": {"task": {"name": "arith"}}, "config_hash": "abc",
                 "summary": {"n": 1, "accuracy_flexible": 1.0, "accuracy_flexible_ci95": [0.2, 1.0]}}


# ---------------------------------------------------------------- sums over a sample's calls


def test_usage_sums_the_calls_and_counts_what_the_outputs_could_attend_to():
    calls = [UsageRecord("s", "planner", "planner", input_tokens=20, latent_steps=4, forward_passes=5,
                         wall_time_s=0.1, cost_usd=0.5),
             UsageRecord("s", "judger", "judger", input_tokens=10, output_tokens=6, kv_positions_received=12,
                         forward_passes=4, wall_time_s=0.2, cost_usd=0.25, finish_reason="length"),
             UsageRecord("s", "critic", "critic", input_tokens=3, output_tokens=2, finish_reason="eos", cost_usd=0.0)]
    usage = Usage.of(calls)
    assert (usage.input_tokens, usage.output_tokens, usage.latent_steps, usage.forward_passes) == (33, 8, 4, 9)
    assert usage.context_tokens == 33 + 12  # input tokens plus the KV positions received
    # latent thinking decodes nothing: two of the three calls decode
    assert (usage.calls, usage.decoding_calls, usage.calls_at_max_new_tokens) == (3, 2, 1)
    assert usage.wall_time_s == pytest.approx(0.3) and usage.cost_usd == 0.75
    calls[0].cost_usd = None
    assert Usage.of(calls).cost_usd is None  # one unknown price: the sum is unknown, never a guess
    assert Usage.of([]) == Usage() and Usage.of([]).cost_usd is None


# ---------------------------------------------------------------- samples.jsonl lines


def test_a_line_reads_back_as_it_was_written():
    record = sample_record("a", batch=3, repeat=1)
    record.agents = [UsageRecord("a", "solver", "answerer", output_tokens=5, finish_reason="eos", seed=7,
                                 kv_received_from={"planner": 12})]
    record.transcript = [Turn("solver", "answerer", 0, "4")]
    line = json.loads(json.dumps(record.to_json()))
    assert line["schema"] == SCHEMA_VERSION and SampleRecord.from_json(line) == record
    assert record.key == ("a", 1) and not record.failed and record.correct("strict") and record.correct("flexible")
    failed = sample_record("b", error="RuntimeError: boom")
    assert failed.failed and not failed.correct("flexible") and failed.correct_strict is None


def test_a_version_1_line_reads_with_the_defaults_of_its_time():
    record = SampleRecord.from_json(VERSION_1_LINE)
    assert record.schema == SCHEMA_VERSION and record.key == ("arith-L1-0000", 0)  # before run.repeats: repeat 0
    assert record.batch is None  # before batches were numbered
    usage = record.usage
    assert usage.context_tokens == 30 + 12  # input tokens plus the KV positions received
    assert usage.decoding_calls == 2  # every call decoded then
    assert (usage.calls_at_max_new_tokens, usage.latent_steps) == (1, 4)
    assert [call.agent for call in record.agents] == ["planner", "judger"]
    assert record.agents[1].finish_reason == "length" and record.agents[0].kv_received_from is None
    assert record.transcript[0] == Turn("planner", "planner", 0, None)
    assert record.correct("strict") and record.to_json()["schema"] == SCHEMA_VERSION  # written back as this version


def test_a_version_1_line_without_scoring_fields_reads():
    record = SampleRecord.from_json({"id": "a", "error": "RuntimeError: boom"})
    assert record.failed and record.key == ("a", 0) and record.usage == Usage() and record.agents == []
    assert (record.target, record.final_text, record.correct_flexible) == (None, None, None)


def test_a_line_of_a_newer_schema_is_refused_in_one_sentence(tmp_path):
    newer = {**VERSION_1_LINE, "schema": SCHEMA_VERSION + 1}
    with pytest.raises(NewerRecord) as error:
        SampleRecord.from_json(newer, "results/x/samples.jsonl")
    message = str(error.value)
    assert isinstance(error.value, UserError) and "\n" not in message
    assert message == (f"results/x/samples.jsonl has record schema {SCHEMA_VERSION + 1}, newer than this "
                       f"mascompare reads ({SCHEMA_VERSION}); upgrade mascompare to read it.")
    (tmp_path / "samples.jsonl").write_text(json.dumps(newer) + "\n")
    with pytest.raises(NewerRecord, match=f"^{tmp_path / 'samples.jsonl'} has record schema"):
        latest_records(tmp_path)  # the same sentence wherever a line is read
    for odd in ("2", True, 2.5, 0):  # not a version at all: a damaged line, not a newer one
        with pytest.raises(DamagedRecord, match=f"^schema must be a positive integer, got {odd!r}$"):
            SampleRecord.from_json({**VERSION_1_LINE, "schema": odd})


def test_unknown_fields_are_ignored_at_every_level():
    line = {**VERSION_1_LINE, "schema": SCHEMA_VERSION, "added_later": {"x": 1},
            "usage": {**VERSION_1_LINE["usage"], "new_figure": 3},
            "agents": [{**call, "new_field": True} for call in VERSION_1_LINE["agents"]],
            "transcript": [{**turn, "tone": "calm"} for turn in VERSION_1_LINE["transcript"]]}
    record = SampleRecord.from_json(line)
    assert record == SampleRecord.from_json(VERSION_1_LINE)
    assert "added_later" not in record.to_json() and "new_figure" not in record.to_json()["usage"]


@pytest.mark.parametrize("line, problem", [
    (["a"], "it is not a JSON object but a list"),
    ("a", "it is not a JSON object but a string"),
    ({"repeat": 0}, "it lacks id"),
    ({"id": 3}, "id must be a string, got 3"),
    ({"id": "a", "repeat": "x"}, "repeat must be a non-negative integer, got 'x'"),
    ({"id": "a", "repeat": True}, "repeat must be a non-negative integer, got True"),
    ({"id": "a", "batch": -1}, "batch must be a non-negative integer or null, got -1"),
    ({"id": "a", "correct_strict": "yes"}, "correct_strict must be true or false or null, got 'yes'"),
    ({"id": "a", "usage": [1]}, "usage must be a JSON object or null, got [1]"),
    ({"id": "a", "usage": {"input_tokens": "30"}}, "usage.input_tokens must be a non-negative integer, got '30'"),
    ({"id": "a", "usage": {"output_tokens": -5}}, "usage.output_tokens must be a non-negative integer, got -5"),
    ({"id": "a", "agents": [{"sample_id": "a", "agent": "x", "role": "y", "cost_usd": "1"}]},
     "agents[0].cost_usd must be a number or null, got '1'"),
    ({"id": "a", "agents": [{"agent": "x", "role": "y"}]}, "it lacks agents[0].sample_id"),
    ({"id": "a", "agents": [{"sample_id": "a", "agent": "x", "role": "y", "kv_received_from": {"p": "2"}}]},
     "agents[0].kv_received_from must be a JSON object of non-negative integers or null, got {'p': '2'}"),
    ({"id": "a", "transcript": [{"agent": "x", "role": "y", "round": 0}]}, "it lacks transcript[0].text"),
    ({"id": "a", "wall_time_s": "fast"}, "wall_time_s must be a number or null, got 'fast'"),
])
def test_what_is_not_a_line_is_named_field_by_field(line, problem):
    with pytest.raises(DamagedRecord) as error:
        SampleRecord.from_json(line)
    assert str(error.value) == problem


def test_a_run_json_of_the_wrong_types_is_named():
    with pytest.raises(DamagedRecord, match=r"^summary.n must be a non-negative integer, got 'four'$"):
        RunRecord.from_json({**VERSION_1_RUN, "summary": {"n": "four"}})
    with pytest.raises(DamagedRecord, match=r"^config must be a JSON object, got \[\]$"):
        RunRecord.from_json({**VERSION_1_RUN, "config": []})
    with pytest.raises(DamagedRecord, match=r"^summary must be a JSON object or null, got 3$"):
        RunRecord.from_json({**VERSION_1_RUN, "summary": 3})


# ---------------------------------------------------------------- run.json


def test_run_json_reads_back_as_it_was_written():
    run = RunRecord(status="stopped", run_dir="results/x", task="arith", method="baseline", model="tiny",
                    backend="hf", config={"run": {"repeats": 2}}, config_hash="abc", repeats=2,
                    stop_reason="budget", method_info={"graph": {"kept": 3}},
                    summary=Summary(n=4, accuracy_flexible=0.5, accuracy_flexible_ci95=[0.1, 0.9],
                                    accuracy_flexible_per_repeat=[0.5, 0.5]))
    raw = json.loads(json.dumps(run.to_json()))
    assert raw["schema"] == SCHEMA_VERSION and RunRecord.from_json(raw) == run
    assert raw["summary"]["accuracy_flexible_per_repeat"] == [0.5, 0.5]
    assert "cost_usd_spent" not in raw["summary"] and raw["summary"]["cost_usd"] is None  # optional keys: when set


def test_a_version_1_run_json_reads_and_unknown_fields_are_ignored():
    run = RunRecord.from_json({**VERSION_1_RUN, "gpu_hours": 3, "summary": {**VERSION_1_RUN["summary"], "new": 1}})
    assert run.schema == SCHEMA_VERSION and run.repeats == 1 and run.samples_resumed == 0
    assert run.summary.accuracy(metric="flexible") == 1.0 and run.summary.accuracy_flexible_ci95 == [0.2, 1.0]
    assert run.environment is None and run.method_info is None and run.backend_info is None
    assert RunRecord.from_json({**VERSION_1_RUN, "summary": None}).summary is None


def test_a_run_json_of_a_newer_schema_or_missing_fields_is_refused():
    with pytest.raises(NewerRecord, match=rf"^run.json has record schema {SCHEMA_VERSION + 1}, newer than this "
                                          r"mascompare reads"):
        RunRecord.from_json({**VERSION_1_RUN, "schema": SCHEMA_VERSION + 1})
    with pytest.raises(DamagedRecord, match="^it lacks run_dir, config_hash$"):
        RunRecord.from_json({k: v for k, v in VERSION_1_RUN.items() if k not in ("run_dir", "config_hash")})


# ---------------------------------------------------------------- the compiled test of a whole record

ODD_VALUES = (None, True, False, -1, 0, 3, 2.5, -0.5, float("nan"), "s", "", [], ["a"], [1], [-1], [None], {},
              {"a": 1}, {"a": "b"}, {"a": -1}, {"a": None})


@pytest.mark.parametrize("cls", [Turn, UsageRecord, Usage, Summary, SampleRecord, RunRecord])
def test_the_compiled_test_of_a_record_judges_every_field_as_its_own_check_does(cls):
    from dataclasses import fields

    from mascompare.records import _schema, _whole

    checks, required = _schema(cls)
    whole = _whole(cls, ())
    assert whole({}) == (not required)  # only a record without required fields is whole when empty
    base = {name: value for name in required for value in ODD_VALUES if checks[name](value)}
    assert set(base) == set(required) and whole(base)
    for f in fields(cls):
        for value in ODD_VALUES:
            assert whole({**base, f.name: value}) == checks[f.name](value), (f.name, value)
    for name in required:
        assert not whole({k: v for k, v in base.items() if k != name})
    assert whole({**base, "added_later": object()})  # a reader ignores additions


def test_a_record_built_at_once_equals_one_built_field_by_field(monkeypatch):
    import mascompare.records as records

    line = {**VERSION_1_LINE, "schema": SCHEMA_VERSION, "added_later": 1,
            "agents": [{**call, "new_field": [1]} for call in VERSION_1_LINE["agents"]]}
    full = sample_record("a", batch=3, repeat=1)
    full.agents = [UsageRecord("a", "solver", "answerer", output_tokens=5, finish_reason="eos", seed=7,
                               kv_received_from={"planner": 12}, messages=[{"role": "user", "content": ["x"]}])]
    full.transcript = [Turn("solver", "answerer", 0, "4")]
    lines = [VERSION_1_LINE, line, json.loads(json.dumps(full.to_json())), {"id": "a", "error": "boom"}]
    runs = [VERSION_1_RUN, {**VERSION_1_RUN, "schema": SCHEMA_VERSION, "repeats": 3, "summary": None}]
    at_once = [SampleRecord.from_json(x) for x in lines], [RunRecord.from_json(x) for x in runs]
    monkeypatch.setattr(records, "_whole", lambda cls, nested: lambda raw: False)
    one_by_one = [SampleRecord.from_json(x) for x in lines], [RunRecord.from_json(x) for x in runs]
    assert at_once == one_by_one
    assert [r.to_json() for r in at_once[0]] == [r.to_json() for r in one_by_one[0]]
    assert not hasattr(at_once[0][1], "added_later") and not hasattr(at_once[0][1].agents[0], "new_field")
