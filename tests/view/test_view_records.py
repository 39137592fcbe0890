"""The viewer's reading of run folders: every call's exact messages and reply, the question, the graph, and
records with fields added or missing."""

import json
import shutil
from pathlib import Path

from mascompare.identity import short_hash
from mascompare.records import SampleRecord
from mascompare.store import RunStore, expand_messages, read_texts
from mascompare.store import read_run as read_run_json
from mascompare.view.records import read_graph, read_run

GOLDEN = Path(__file__).parent.parent / "golden" / "results_v0"


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("run.json"))


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def info_of(run_dir: Path):
    return read_run_json(run_dir)


def check_against_records(run_dir: Path) -> None:
    """Each sample's calls carry exactly the messages expand_messages restores and the transcript's texts."""
    texts = read_texts(run_dir)
    records = read_run(run_dir, info_of(run_dir))
    rows = rows_of(run_dir)
    assert [(s.id, s.repeat) for s in records.samples] == [(r["id"], r.get("repeat", 0)) for r in rows]
    for sample, row in zip(records.samples, rows):
        assert len(sample.agent_calls) == len(row["agents"]) > 0
        for call, record in zip(sample.agent_calls, row["agents"]):
            sent = expand_messages(record["messages"], texts)
            assert [(m["role"], "\n\n".join(m["content"])) for m in call["messages"]] == \
                [(m["role"], m["content"]) for m in sent]
            assert (call["agent"], call["round"]) == (record["agent"], record["round"])
        replies = [(c["agent"], c["round"], c["reply"]) for c in sample.agent_calls]
        assert replies == [(t["agent"], t["round"], t["text"]) for t in row["transcript"]]
        assert sample.question is not None and short_hash(sample.question) == row["question_hash"]
        assert sample.final_text == row["final_text"] and sample.target == row["target"]
        assert sample.correct_flexible == row["correct_flexible"]
        assert sample.calls_cut_off == row["usage"]["calls_at_max_new_tokens"]


def test_every_call_of_every_method_comes_back_as_sent(tiny_sweep):
    methods = []
    for run_dir in run_dirs(tiny_sweep):
        check_against_records(run_dir)
        methods.append(info_of(run_dir).method)
    assert methods == ["baseline", "text_mas", "latent_mas", "pruned_mas", "pruned_latent_mas"]


def test_records_written_before_the_redesign_read_as_well():
    for run_dir in run_dirs(GOLDEN):
        check_against_records(run_dir)


def test_the_pruned_methods_graph_is_the_evaluated_mask():
    (pruned,) = [d for d in run_dirs(GOLDEN) if info_of(d).method == "pruned_mas"]
    masks = json.loads((pruned / "masks.json").read_text())
    graph = read_graph(pruned, info_of(pruned))
    agents = masks["agents"]
    spatial = masks["evaluated"]["spatial"]
    assert graph["agents"] == agents and graph["final"] == "decider" and graph["final_reads"] == "all"
    assert graph["edges"] == [[agents[i], agents[j]] for i in range(4) for j in range(4) if spatial[i][j]]
    assert len(graph["edges"]) == info_of(pruned).method_info["graph"]["edges_evaluated"]["spatial"]
    temporal = masks["evaluated"]["temporal"]  # two rounds: each agent reads some of the round before
    assert graph["temporal"] == [[agents[i], agents[j]] for i in range(4) for j in range(4) if temporal[i][j]]
    assert "spatial edges: 5 of 12" in graph["summary"]

    (latent,) = [d for d in run_dirs(GOLDEN) if info_of(d).method == "pruned_latent_mas"]
    info = info_of(latent)
    graph = read_graph(latent, info)
    kept = info.method_info["graph"]["kept"]
    assert graph["final"] == info.method_info["graph"]["final_agent"]
    assert graph["edges"] == kept and graph["final"] not in graph["agents"]
    baseline = next(d for d in run_dirs(GOLDEN) if info_of(d).method == "baseline")
    assert read_graph(baseline, info_of(baseline)) is None


def test_fields_the_records_add_are_read_and_missing_ones_tolerated(tmp_path):
    """kv_received_from on latent calls and the sandbox's stdout and stderr, written through the real store."""
    source = next(d for d in run_dirs(GOLDEN) if info_of(d).method == "latent_mas")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(source / "run.json", run_dir / "run.json")
    texts = read_texts(source)
    store = RunStore(run_dir)
    row = rows_of(source)[0]
    calls = [{**call, "messages": expand_messages(call["messages"], texts)} for call in row["agents"]]
    calls[1]["kv_received_from"] = {"planner": 80}
    calls[3]["kv_received_from"] = {"planner": 80, "critic": 90, "refiner": 78}
    sandbox = {"strict": None, "flexible": {"ending": "failed", "status": "AssertionError", "seconds": 0.2,
                                            "stdout": "printed\n", "stderr": "Traceback ...\nAssertionError"}}
    store.append(SampleRecord.from_json({**row, "agents": calls, "score_details": {"sandbox": sandbox}}))
    store.append(SampleRecord.from_json({"id": "bare", "correct_flexible": True, "usage": {"output_tokens": 3}}))
    sample, bare = read_run(run_dir, info_of(run_dir)).samples
    assert [c["kv_received_from"] for c in sample.agent_calls] == \
        [None, {"planner": 80}, None, {"planner": 80, "critic": 90, "refiner": 78}]
    assert sample.sandbox == {"flexible": sandbox["flexible"]}
    assert bare.question is None and bare.agent_calls == [] and bare.correct_flexible and bare.output_tokens == 3


def test_a_question_found_in_one_run_serves_the_runs_read_after_it(tmp_path):
    source = next(d for d in run_dirs(GOLDEN) if info_of(d).method == "latent_mas")
    texts = read_texts(source)
    row = rows_of(source)[0]
    with_calls, without = tmp_path / "with_calls", tmp_path / "without"
    for run_dir, agents in ((with_calls, [{**call, "messages": expand_messages(call["messages"], texts)}
                                          for call in row["agents"]]), (without, [])):
        run_dir.mkdir()
        shutil.copy(source / "run.json", run_dir / "run.json")
        RunStore(run_dir).append(SampleRecord.from_json({**row, "agents": agents}))
    assert read_run(without, info_of(without)).samples[0].question is None  # alone: its lines hold no question
    questions: dict = {}
    found = read_run(with_calls, info_of(with_calls), questions=questions).samples[0].question
    assert found is not None and short_hash(found) == row["question_hash"] and questions == {row["question_hash"]: found}
    assert read_run(without, info_of(without), questions=questions).samples[0].question == found
