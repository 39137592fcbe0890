"""Run directories (mascompare/store.py): append, resume, partial lines, shared prompt texts, run.json and where
results may be written."""

import json
import os

import pytest

from helpers import sample_record as record
from mascompare.errors import UserError
from mascompare.records import RunRecord, Summary, UsageRecord
from mascompare.store import (
    PROMPTS_FILE,
    RUN_FILE,
    SAMPLES_FILE,
    RunStore,
    check_output_root,
    compact_messages,
    expand_messages,
    latest_records,
    read_run,
    read_texts,
    write_json,
)


def ids(path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_partial_last_line_is_dropped_on_reopen(tmp_path):
    store = RunStore(tmp_path)
    store.append(record("a"))
    with open(store.samples_path, "a") as f:
        f.write('{"id": "b", "corr')  # a kill in the middle of a write
    reopened = RunStore(tmp_path)
    assert set(reopened.latest()) == {("a", 0)}
    reopened.append(record("b"))
    assert ids(reopened.samples_path) == ["a", "b"]


def test_failed_samples_are_not_completed_and_last_line_wins(tmp_path):
    store = RunStore(tmp_path)
    store.append(record("a", error="timeout"))
    assert store.completed_keys() == set()
    store.append(record("a"))
    assert store.completed_keys() == {("a", 0)} and store.latest()[("a", 0)].error is None
    assert [r.failed for r in store.all_records()] == [True, False]  # every attempt stays on file


def test_repeats_of_a_sample_are_keyed_apart(tmp_path):
    store = RunStore(tmp_path)
    for repeat in (0, 1):
        store.append(record("a", repeat=repeat))
    store.append(record("a", repeat=2, error="boom"))
    assert store.completed_keys() == {("a", 0), ("a", 1)}
    assert sorted(store.latest()) == [("a", 0), ("a", 1), ("a", 2)]


def test_a_line_is_the_records_json(tmp_path):
    store = RunStore(tmp_path)
    written = record("a", batch=2)
    store.append(written)
    (line,) = [json.loads(x) for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert line == written.to_json() and list(line)[:4] == ["schema", "id", "repeat", "batch"]
    assert store.all_records() == [written]


def test_reset_keeps_old_samples_aside(tmp_path):
    store = RunStore(tmp_path)
    store.append(record("a"))
    store.reset()
    assert store.completed_keys() == set()
    assert len(list(tmp_path.glob("samples.*.jsonl.bak"))) == 1


def test_read_only_reading_skips_a_cut_last_line_and_the_latest_line_per_id_wins(tmp_path):
    path = tmp_path / SAMPLES_FILE
    path.write_text('{"id": "a", "error": "x"}\n{"id": "a", "error": null}\n{"id": "b", "err')
    latest = latest_records(tmp_path)
    assert list(latest) == [("a", 0)] and latest[("a", 0)].error is None
    assert RunStore.completed_keys_in(tmp_path) == {("a", 0)}
    assert path.read_text().endswith('"err')  # nothing repaired
    assert latest_records(tmp_path / "nowhere") == {} and not (tmp_path / "nowhere").exists()


def test_messages_are_stored_with_shared_paragraphs_once_and_expand_exactly(tmp_path):
    system = "You are one member of a careful team of problem solvers."
    question = "Problem:\nTom has 3 apples and buys 4 more. How many apples does he have now?"
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": f"Plan.\n\n{question}\n\n\nAnswer it."}]

    def answered(sid):
        line = record(sid)
        line.agents = [UsageRecord(sid, agent, agent, messages=[dict(m) for m in messages])
                       for agent in ("planner", "judger")]
        return line

    store = RunStore(tmp_path)
    first = answered("a")
    store.append(first)
    store.append(answered("b"))
    texts = read_texts(tmp_path)
    assert sorted(texts.values()) == sorted([system, question])  # each long paragraph once, for both lines
    assert len((tmp_path / PROMPTS_FILE).read_text().splitlines()) == 2
    for line in store.all_records():
        for call in line.agents:
            assert {"ref": next(h for h, t in texts.items() if t == question)} in call.messages[1]["content"]
            assert expand_messages(call.messages, texts) == messages
    assert first.agents[0].messages == messages  # the caller's record is left as it was
    assert RunStore(tmp_path).stored_texts == set(texts)  # a reopened store writes no text twice


def test_short_paragraphs_stay_inline():
    texts = {}
    compact = compact_messages([{"role": "user", "content": "Hi.\n\nWhat is 2 + 2?"}], texts)
    assert compact == [{"role": "user", "content": ["Hi.", "What is 2 + 2?"]}] and texts == {}
    assert expand_messages(compact, texts) == [{"role": "user", "content": "Hi.\n\nWhat is 2 + 2?"}]


def test_run_json_is_written_whole_and_read_back(tmp_path):
    store = RunStore(tmp_path)
    assert store.read_run() is None and read_run(tmp_path) is None
    run = RunRecord(status="finished", run_dir=str(tmp_path), task="arith", method="baseline", model="tiny",
                    backend="hf", config={"task": {"name": "arith"}}, config_hash="abc",
                    summary=Summary(n=2, accuracy_flexible=0.5))
    store.write_run(run)
    assert read_run(tmp_path) == run == store.read_run()
    assert json.loads((tmp_path / RUN_FILE).read_text()) == run.to_json()
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE]  # nothing left aside


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / RUN_FILE
    write_json(path, {"status": "running"})

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "replace", full)
    with pytest.raises(OSError):
        write_json(path, {"status": "finished"})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE]


def test_output_root_that_is_a_file_or_under_a_file(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(UserError, match=r"run.output_root=.*/f is a file; set run.output_root to a directory."):
        check_output_root(afile)
    with pytest.raises(UserError, match="lies under .*/f, which is a file"):
        check_output_root(afile / "results")
    assert check_output_root(tmp_path / "new" / "deeper") == tmp_path  # not there yet: created later
    assert not (tmp_path / "new").exists()


def test_output_root_not_writable_or_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="is not writable"):
        check_output_root(tmp_path)
    monkeypatch.undo()

    class Full:
        f_flag, f_bavail, f_frsize = 0, 10, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full)
    with pytest.raises(UserError, match="is on a full disk"):
        check_output_root(tmp_path)
