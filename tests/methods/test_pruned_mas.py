"""pruned_mas (AgentPrune): execution on the graph, calibration, pruning, saved masks, accounting, the CLI.

`Scripted` is a test double for the optimiser tests: it answers each arithmetic question by role
(parsed from the prompt), so the utility of a graph is known exactly. Everything else runs on the
tiny random-weight models or the embedded model.
"""

import json
import re
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import decoding, make_task
from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends.base import Completion
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.methods import method_settings
from mascompare.methods.agent_graph import calibration_samples, keep_count
from mascompare.methods.masks import MASKS_FILE, MASKS_PICTURE
from mascompare.methods.pruned_mas import PrunedMAS, panel_titles

GEN = decoding(max_new_tokens=8)
NAMES = ["algebraist", "calculator", "programmer", "inspector"]


def method_cfg(*overrides):
    return method_settings(compose_config("method=pruned_mas", *overrides).method)


def arith(limit, levels=(1,), seed=0):
    return make_task("arith", f"task.limit={'null' if limit is None else limit}",
                     f"task.levels=[{','.join(map(str, levels))}]", f"task.seed={seed}")


class Scripted:
    """Answers arithmetic questions by role. The liar always states a wrong answer; an honest agent
    answers right unless a message from the liar reaches it (then it repeats the liar's answer).
    The decider takes the majority of the answers it reads. Texts name the agent and its round."""

    name, model_name, capabilities = "scripted", "scripted", frozenset({"chat"})

    def __init__(self, cfg, liar=None):
        self.by_instruction = {a.instruction: a for a in [*cfg.agents, cfg.decider]}
        self.liar = next((a for a in cfg.agents if a.name == liar), None)
        self.calls, self.rounds = [], Counter()

    def chat(self, conversations, gen, seeds=None):
        self.calls.append(conversations)
        return [self.answer(c) for c in conversations]

    def answer(self, conversation):
        user = conversation[-1]["content"]
        agent = next(a for instruction, a in self.by_instruction.items() if user.startswith(instruction))
        question = user.split("Problem:\n", 1)[1].split("\n\n", 1)[0]
        right = sum(int(x) for x in re.findall(r"\d+", question))  # arith level 1: "What is 3 + 4?"
        round = self.rounds[(question, agent.name)]
        self.rounds[(question, agent.name)] += 1
        if agent.name == "decider":
            said = [int(x) for x in re.findall(r"answer is (\d+)", user.split("Problem:\n", 1)[1])]
            value = Counter(said).most_common(1)[0][0]
        elif self.liar is not None and (agent.name == self.liar.name or f"[{self.liar.role}]" in user):
            value = right + 1
        else:
            value = right
        text = f"{agent.name} in round {round}: The answer is {value}."
        words = sum(len(m["content"].split()) for m in conversation)
        return Completion(text, prompt_tokens=words + 10, completion_tokens=len(text.split()))

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def truncate_tokens(self, text, max_tokens):
        return " ".join(text.split()[:max_tokens])


def build(cfg, backend, task, accountant=None):
    return PrunedMAS(cfg, backend, task, GEN, accountant or Accountant())


def ready(cfg, backend, task, accountant=None):
    """A method whose graph is decided (the runner calls prepare before any sample runs)."""
    method = build(cfg, backend, task, accountant)
    method.prepare(None, task.samples(), resume=True)
    return method


def prompts_of(backend):
    return [c[-1]["content"] for call in backend.calls for c in call]


# --- execution on the graph ----------------------------------------------------------------------


def test_agents_in_a_layer_share_one_batched_call_and_run_in_topological_order():
    cfg = method_cfg("method.prune_rate=0", "method.rounds=1")
    backend, task = Scripted(cfg), arith(3)
    method = ready(cfg, backend, task)
    outputs = method.run(task.samples())
    # the complete graph, unpruned, is realised as the complete DAG in agent order: 4 layers + decider
    assert method.graph.layers == [[0], [1], [2], [3]]
    assert [len(call) for call in backend.calls] == [3, 3, 3, 3, 3]
    for k, call in enumerate(backend.calls[:4]):
        for conversation in call:
            user = conversation[-1]["content"]
            assert user.startswith(cfg.agents[k].instruction)
            assert [a.role for a in cfg.agents[:k] if f"[{a.role}]" in user] == [a.role for a in cfg.agents[:k]]
            assert not any(f"[{a.role}]" in user for a in cfg.agents[k:])
    for output in outputs:
        assert [(t.agent, t.round) for t in output.transcript] == [(n, 0) for n in NAMES] + [("decider", 1)]


def test_debate_runs_each_round_as_one_call_and_temporal_messages_come_from_the_previous_round_only():
    cfg = method_cfg("method.prune_rate=0", "method.rounds=3", "method.topology=debate", "method.decision=vote")
    backend, task = Scripted(cfg), arith(2)
    outputs = ready(cfg, backend, task).run(task.samples())
    assert [len(call) for call in backend.calls] == [8, 8, 8]  # 4 agents x 2 samples, one call per round
    for round, call in enumerate(backend.calls):
        for conversation in call:
            user = conversation[-1]["content"]
            said = re.findall(r"(\w+) in round (\d+):", user)
            if round == 0:
                assert said == [] and "previous round" not in user
            else:
                assert sorted(said) == sorted((n, str(round - 1)) for n in NAMES)
                assert "Answers from this round" not in user
    assert all(o.diagnostics["votes"] and o.transcript[-1].round == 2 for o in outputs)


def test_temporal_and_spatial_messages_follow_the_masks_of_a_chain():
    cfg = method_cfg("method.prune_rate=0", "method.rounds=2", "method.topology=chain")
    backend, task = Scripted(cfg), arith(1)
    ready(cfg, backend, task).run(task.samples())
    agent_prompts = prompts_of(backend)[:-1]  # 2 rounds x 4 agents, one agent per call; then the decider
    assert len(agent_prompts) == 8
    for k, user in enumerate(agent_prompts):
        round, agent = divmod(k, 4)
        said = re.findall(r"(\w+) in round (\d+):", user)
        expected = []
        if round == 1 and agent == 0:
            expected.append(("inspector", "0"))  # the chain's one temporal edge: last -> first
        if agent > 0:
            expected.append((NAMES[agent - 1], str(round)))  # i -> i+1 in the same round
        assert said == expected, (k, user)


def test_vote_majority_with_ties_to_the_first_agent():
    cfg = method_cfg("method.decision=vote")
    method = build(cfg, Scripted(cfg), arith(1))
    text, info = method.vote(["The answer is 3.", "The answer is 5.", "The answer is 5.", "The answer is 3."])
    assert text == "The answer is 3." and info == {"votes": {"3": 2, "5": 2}, "chosen": "algebraist"}
    text, info = method.vote(["no idea", "The answer is 7.", "The answer is 5.", "The answer is 5."])
    assert text == "The answer is 5." and info["chosen"] == "programmer"


# --- calibration and pruning ---------------------------------------------------------------------


@pytest.mark.parametrize("rounds, seed", [(1, 0), (1, 1), (1, 2), (2, 1), (2, 3)])
def test_calibration_learns_to_cut_the_liars_outgoing_edges(rounds, seed, tmp_path):
    """The paper's adversarial-agent experiment in miniature: one agent always lies and misleads
    whoever reads it; calibration drives its outgoing edges down and pruning removes them (with two
    rounds: its temporal edges to the others too)."""
    cfg = method_cfg(f"method.rounds={rounds}", "method.decision=vote", f"method.seed={seed}",
                     "method.calibration.iterations=25", "method.calibration.batch_size=8",
                     "method.calibration.size=40")
    backend, task = Scripted(cfg, liar="calculator"), arith(10)
    accountant = Accountant()
    method = build(cfg, backend, task, accountant)
    method.prepare(tmp_path, task.samples(), resume=True)
    liar = NAMES.index("calculator")
    prob = 1 / (1 + np.exp(-method.edge_policy.scores("spatial")))
    outgoing = [prob[liar, j] for j in range(4) if j != liar]
    others = [prob[i, j] for i in range(4) for j in range(4) if i != j and i != liar]
    assert max(outgoing) < 0.45 < np.mean(others) and np.mean(outgoing) < np.mean(others) - 0.15
    assert method.graph.spatial[liar].sum() == 0  # pruned: nobody reads the liar any more
    if rounds == 2:
        assert method.graph.temporal[liar, [j for j in range(4) if j != liar]].sum() == 0
    pruned = np.array(json.loads((tmp_path / MASKS_FILE).read_text())["pruned"]["spatial"])
    assert pruned.sum() == keep_count(12, 0.5) and pruned[liar].sum() == 0
    history = method.info["calibration"]["history"]
    assert np.mean([h["utility"] for h in history[-5:]]) > np.mean([h["utility"] for h in history[:5]])
    assert all(o.final_text.endswith(f"{sum(int(x) for x in re.findall(r'[0-9]+', s.question))}.")
               for s, o in zip(task.samples(), method.run(task.samples())))  # the pruned graph answers right


def test_calibration_is_accounted_separately_and_never_touches_evaluated_questions(tmp_path):
    cfg = method_cfg("method.rounds=2", "method.calibration.iterations=2", "method.calibration.batch_size=3",
                     "method.calibration.size=4")
    backend, task = Scripted(cfg), arith(10)
    accountant = Accountant()
    method = build(cfg, backend, task, accountant)
    method.prepare(tmp_path, task.samples(), resume=True)
    cal = method.run_info()["calibration"]
    assert cal["usage"]["calls"] == 2 * 3 * (4 * 2 + 1) and cal["usage"]["input_tokens"] > 0
    assert cal["usage"]["wall_time_s"] >= 0 and "seed 1" in cal["source"] and len(cal["question_ids"]) == 4
    assert not accountant._records  # calibration records were taken, none left behind
    asked = {c[-1]["content"].split("Problem:\n")[1].split("\n\n")[0] for call in backend.calls for c in call}
    assert asked and not asked & {s.question for s in task.samples()}
    samples = task.samples()[:2]
    method.run(samples)
    records = [r for s in samples for r in accountant.take(s.id)]
    assert len(records) == 2 * 9 and {r.phase for r in records} == {"eval"}
    assert not accountant._records
    graph = method.run_info()["graph"]
    assert graph["edges_pruned"] == {"spatial": 6, "temporal": 8} and graph["temporal_edges_used"]


def test_saved_masks_reload_to_the_same_pruned_graph_without_calibrating(tmp_path):
    cfg = method_cfg("method.rounds=2", "method.calibration.iterations=3", "method.calibration.batch_size=4",
                     "method.calibration.size=8", "method.prune_rate=0.4")
    task = arith(5)
    first = build(cfg, Scripted(cfg, liar="programmer"), task)
    first.prepare(tmp_path / "a", task.samples(), resume=True)
    saved = tmp_path / "a" / MASKS_FILE
    assert (tmp_path / "a" / MASKS_PICTURE).stat().st_size > 10_000
    backend = Scripted(cfg)
    again = build(method_cfg("method.rounds=2", "method.prune_rate=0.4", f"method.masks={saved}"), backend, task)
    again.prepare(tmp_path / "b", task.samples(), resume=True)
    assert backend.calls == []  # no calibration
    np.testing.assert_array_equal(again.graph.spatial, first.graph.spatial)
    np.testing.assert_array_equal(again.graph.temporal, first.graph.temporal)
    a, b = json.loads(saved.read_text()), json.loads((tmp_path / "b" / MASKS_FILE).read_text())
    assert a["pruned"] == b["pruned"] and a["logits"] == b["logits"] and a["evaluated"] == b["evaluated"]
    assert b["calibration"]["reused_from"] == str(saved)
    # the same logits at another rate: pruned again, still without calibrating
    other = build(method_cfg("method.rounds=2", "method.prune_rate=0.75", f"method.masks={saved}"), backend, task)
    other.prepare(None, task.samples(), resume=True)
    assert other.info["graph"]["edges_pruned"] == {"spatial": 3, "temporal": 4} and backend.calls == []


def test_masks_for_other_agents_are_refused(tmp_path):
    cfg = method_cfg("method.prune_rate=0")
    build(cfg, Scripted(cfg), arith(1)).prepare(tmp_path, [], resume=True)
    bad = method_cfg(f"method.masks={tmp_path / MASKS_FILE}", "method.agents.0.name=someone")
    with pytest.raises(UserError, match="are for agents"):
        build(bad, Scripted(bad), arith(1)).prepare(None, [], resume=True)


@pytest.mark.parametrize("damage, message", [
    (lambda m: m["logits"]["spatial"].pop(), r"^logits\.spatial in the masks file .* must be a 4 x 4 matrix of numbers"),
    (lambda m: m["logits"]["temporal"][0].__setitem__(1, "high"), r"^logits\.temporal .* must be a 4 x 4 matrix"),
    (lambda m: m["initial"]["spatial"][0].__setitem__(1, 2), r"^initial\.spatial .* must hold only 0 and 1"),
    (lambda m: m["logits"]["spatial"][0].__setitem__(1, float("nan")),
     r"^logits\.spatial .* must be a finite number for every potential edge, got nan at row 0, column 1;"),
    (lambda m: m["logits"]["spatial"][0].__setitem__(1, None), r"got nan at row 0, column 1; restore the file"),
])
def test_a_damaged_masks_file_is_refused_in_one_sentence(tmp_path, damage, message):
    cfg = method_cfg("method.rounds=2", "method.prune_rate=0")
    build(cfg, Scripted(cfg), arith(1)).prepare(tmp_path, [], resume=True)
    masks = json.loads((tmp_path / MASKS_FILE).read_text())
    damage(masks)
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(masks))  # NaN is written as the bare word NaN, which Python's json reads back
    reuse = method_cfg("method.rounds=2", f"method.masks={damaged}")
    backend = Scripted(reuse)
    with pytest.raises(UserError, match=message):
        build(reuse, backend, arith(1)).prepare(None, [], resume=True)
    assert backend.calls == []  # refused before anything ran


def test_gsm8k_calibrates_on_the_last_test_questions_and_refuses_an_overlap():
    cfg = method_cfg("method.calibration.size=5")
    task = make_task("gsm8k", "task.limit=20")
    try:
        pool = calibration_samples(cfg.calibration, task, task.samples())
    except UserError as exc:
        pytest.skip(f"GSM8K not available offline: {exc}")
    assert [s.id for s in pool.samples] == [f"gsm8k-test-{i:04d}" for i in range(1314, 1319)]
    assert "1314-1318" in pool.where
    everything = make_task("gsm8k")
    with pytest.raises(UserError, match="overlap the evaluated ones"):
        calibration_samples(cfg.calibration, everything, everything.samples())


def test_arith_calibration_skips_questions_that_are_evaluated():
    cfg = method_cfg("method.calibration.size=30")
    task = arith(200)  # level 1 has few distinct questions, so other seeds repeat some of them
    pool = calibration_samples(cfg.calibration, task, task.samples()).samples
    assert len(pool) == 30 and not {s.question for s in pool} & {s.question for s in task.samples()}


def calibrate_on_the_tail(tmp_path, limit=5, size=4):
    """Masks calibrated on the last `size` arith questions while the first `limit` are evaluated."""
    cfg = method_cfg("method.calibration.split=tail", f"method.calibration.size={size}",
                     "method.calibration.iterations=1", f"method.calibration.batch_size={size}")
    task = arith(limit, levels=(1, 2))
    method = build(cfg, Scripted(cfg), task)
    method.prepare(tmp_path, task.samples(), resume=True)
    return cfg, method.run_info()["calibration"]


def test_reused_masks_are_refused_when_the_run_would_evaluate_their_calibration_questions(tmp_path):
    _, calibration = calibrate_on_the_tail(tmp_path / "a")
    everything = arith(None, levels=(1, 2))
    assert set(calibration["question_ids"]) <= {s.id for s in everything.samples()}
    reuse = method_cfg(f"method.masks={tmp_path / 'a' / MASKS_FILE}")
    with pytest.raises(UserError, match=r"were calibrated on 4 of the questions this run evaluates"):
        build(reuse, Scripted(reuse), everything).prepare(tmp_path / "b", everything.samples(), resume=True)
    assert not (tmp_path / "b").exists()  # nothing written
    build(reuse, Scripted(reuse), arith(5, levels=(1, 2))).prepare(tmp_path / "c", arith(5, levels=(1, 2)).samples(), resume=True)


def test_a_resumed_run_whose_limit_grew_into_its_calibration_questions_is_refused(tmp_path):
    cfg, _ = calibrate_on_the_tail(tmp_path)
    before = (tmp_path / MASKS_FILE).read_text()
    everything = arith(None, levels=(1, 2))
    with pytest.raises(UserError, match=r"masks\.json were calibrated on 4 of the questions this run evaluates"):
        build(cfg, Scripted(cfg), everything).prepare(tmp_path, everything.samples(), resume=True)
    assert (tmp_path / MASKS_FILE).read_text() == before


def test_reused_masks_are_compared_by_question_text_where_ids_do_not_name_questions(tmp_path):
    """Generated arith items reuse ids across seeds: masks calibrated on seed 1 may be evaluated on
    seed 0's questions, but not on seed 1's own."""
    cfg = method_cfg("method.calibration.size=3", "method.calibration.iterations=1", "method.calibration.batch_size=3")
    build(cfg, Scripted(cfg), arith(3)).prepare(tmp_path / "a", arith(3).samples(), resume=True)
    calibration = json.loads((tmp_path / "a" / MASKS_FILE).read_text())["calibration"]
    assert calibration["split"] == "seed" and len(calibration["question_hashes"]) == 3
    reuse = method_cfg(f"method.masks={tmp_path / 'a' / MASKS_FILE}")
    build(reuse, Scripted(reuse), arith(3)).prepare(None, arith(3).samples(), resume=True)  # same ids, other questions
    seed_one = arith(40, seed=1)
    with pytest.raises(UserError, match=r"were calibrated on \d+ of the questions this run evaluates"):
        build(reuse, Scripted(reuse), seed_one).prepare(None, seed_one.samples(), resume=True)


@pytest.mark.parametrize("task_name, evaluated, splits", [
    ("mmlu", "test", "its splits are test, validation, dev"),  # the Hub's train split is auxiliary_train
    ("gpqa_diamond", "test", "its only split is test"),
    ("humaneval", "test", "its only split is test"),
    ("aime2024", "train", "its only split is train"),  # the one split is the evaluated one
])
def test_train_calibration_needs_a_train_split_apart_from_the_evaluated_one(task_name, evaluated, splits):
    cfg = method_cfg("method.calibration.split=train")
    task = make_task(task_name)
    with pytest.raises(UserError, match=re.escape(f"task={task_name} evaluates {evaluated} and {splits}; ")):
        calibration_samples(cfg.calibration, task, [])


def test_calibration_summary_reports_the_questions_used_and_the_pool(tmp_path):
    cfg = method_cfg("method.calibration.size=6", "method.calibration.iterations=2", "method.calibration.batch_size=2")
    method = build(cfg, Scripted(cfg), arith(2))
    method.prepare(tmp_path, arith(2).samples(), resume=True)
    calibration = method.run_info()["calibration"]
    assert calibration["questions"] == 4 and calibration["question_pool"] == 6
    assert len(calibration["question_ids"]) == len(calibration["question_hashes"]) == 4


def test_the_masks_picture_says_temporal_edges_are_unused_with_one_round():
    assert panel_titles("temporal", False, 1, 16, 16)[1] == "temporal: unused with 1 round (16 edges, none carries a message)"
    assert panel_titles("temporal", True, 2, 8, 16)[1] == "temporal: kept after pruning (8 of 16 edges)"
    assert panel_titles("spatial", True, 1, 6, 12) == ("spatial: edge probability before pruning",
                                                        "spatial: kept after pruning (6 of 12 edges)")


@pytest.mark.parametrize("override, message", [
    ("method.topology=ring", "method.topology"),
    ("method.decision=max", "method.decision"),
    ("method.rounds=0", "method.rounds"),
    ("method.prune_rate=1", "method.prune_rate"),
    ("method.calibration.lr=0", "method.calibration.lr"),
    ("method.calibration.split=dev", "method.calibration.split"),
    ("method.masks=/nonexistent/masks.json", "method.masks"),
    ("method.decider.name=algebraist", "method.decider.name"),
    ("method.prune_count=round", "method.prune_count must be one of keep_half_up, cut_half_even"),
    ("method.graph_draw=per_step", "method.graph_draw must be one of per_question, per_round"),
    ("method.test_graph=random", "method.test_graph must be one of fixed, sampled"),
    ("method.prune_every=0", "method.prune_every must be null (prune once, after calibration) or a positive"),
    ("method.prune_every=3", "method.prune_every=3 must divide method.calibration.iterations=10"),
    ("method.calibration.baseline_momentum=1",
     "method.calibration.baseline_momentum must be a number in [0, 1), or null for no baseline"),
    ("+method.agents.0.reads=texts", "method.agents.0.reads must be one of full, numeric_hint"),
    ("method.fewshot=-1", "method.fewshot must be null"),
])
def test_bad_config_is_refused_before_the_model_loads(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        method_cfg(override)


# --- through the runner and the CLI --------------------------------------------------------------


def cli_run(tmp_path, *args):
    result = CliRunner().invoke(app, ["run", "method=pruned_mas", "task=arith", "run.progress=false",
                                      f"run.output_root={tmp_path}", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "arith" / "pruned_mas").glob("*/*")
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return run_dir, rows, json.loads((run_dir / "run.json").read_text())


TINY_CALIBRATION = ["method.calibration.size=2", "method.calibration.iterations=1", "method.calibration.batch_size=2"]


def test_cli_run_reports_calibration_apart_and_a_resumed_run_reuses_its_masks(tiny_model_dir, tmp_path):
    args = [f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=3", "method.rounds=1",
            *TINY_CALIBRATION]
    run_dir, rows, info = cli_run(tmp_path, "task.limit=2", *args)
    cal = info["method_info"]["calibration"]
    assert cal["performed"] and cal["usage"]["calls"] == 2 * 5  # 2 graphs x (4 agents + decider)
    assert (run_dir / MASKS_FILE).is_file() and (run_dir / MASKS_PICTURE).is_file()
    assert info["method_info"]["masks_file"] == str(run_dir / MASKS_FILE)
    assert info["summary"]["mean_calls"] == 5
    shown = CliRunner().invoke(app, ["show", str(run_dir)])
    assert "calibration (separate)" in shown.output and "2 questions, 10 calls" in shown.output
    for row in rows:
        assert {a["phase"] for a in row["agents"]} == {"eval"} and row["usage"]["calls"] == 5
        assert [a["agent"] for a in row["agents"]][-1] == "decider"
    before = (run_dir / MASKS_FILE).read_text()
    run_dir, rows, info = cli_run(tmp_path, "task.limit=3", *args)  # resume: one more sample, same graph
    assert len(rows) == 3 and info["method_info"]["calibration"]["reused_from"] == str(run_dir / MASKS_FILE)
    assert json.loads((run_dir / MASKS_FILE).read_text())["evaluated"] == json.loads(before)["evaluated"]
    _, _, again = cli_run(tmp_path, "task.limit=3", *args)  # nothing left to do: the method is not even built
    assert again["method_info"] == info["method_info"]


@pytest.mark.embedded
def test_smoke_on_the_embedded_model(tmp_path):
    run_dir, rows, info = cli_run(tmp_path, "task.limit=2", "method.rounds=1", "generation.max_new_tokens=16",
                                  *TINY_CALIBRATION)
    assert len(rows) == 2 and all(r["error"] is None and r["final_text"].strip() for r in rows)
    assert all(1 <= a["output_tokens"] <= 16 for r in rows for a in r["agents"])
    assert info["method_info"]["calibration"]["usage"]["calls"] == 10 and (run_dir / MASKS_PICTURE).is_file()


# --- the authors' learning rules as options ------------------------------------------------------


def test_the_authors_iterative_schedule_prunes_during_calibration_and_draws_only_what_is_left(tmp_path):
    """Their code: p = 0.25 of the edges still alive is cut after every 5th of 10 steps, by round half to even:
    12 -> 9 -> 7 spatial edges (one-shot pruning at 0.25 would keep 9)."""
    cfg = method_cfg("method.rounds=1", "method.decision=vote", "method.prune_rate=0.25", "method.prune_every=5",
                     "method.prune_count=cut_half_even", "method.calibration.baseline_momentum=null",
                     "method.calibration.iterations=10", "method.calibration.batch_size=2",
                     "method.calibration.size=20")
    task = arith(2)
    method = build(cfg, Scripted(cfg, liar="calculator"), task)
    drawn, execute = [], method.execute
    method.execute = lambda samples, graphs, ids, phase: drawn.append(graphs) or execute(samples, graphs, ids, phase)
    method.prepare(tmp_path, task.samples(), resume=True)
    history = method.info["calibration"]["history"]
    assert [h.get("edges_left") for h in history] == [None] * 4 + [{"spatial": 9}] + [None] * 4 + [{"spatial": 7}]
    assert all(h["baseline"] == 0.0 for h in history)  # REINFORCE without a baseline
    assert method.info["graph"]["edges_pruned"]["spatial"] == 7
    assert method.info["learning_rules"] == {"prune_rate": 0.25, "prune_count": "cut_half_even", "prune_every": 5,
                                             "graph_draw": "per_question", "test_graph": "fixed", "baseline": "none"}
    saved = json.loads((tmp_path / MASKS_FILE).read_text())
    after_first = np.array(saved["pruned"]["spatial"])
    for graphs in drawn[5:]:  # the steps after the first pruning draw among its survivors only
        for (graph,) in graphs:
            assert not (graph.spatial > method.edge_policy.masks["spatial"]).any()
    kept_after_five = None
    for graphs in drawn[5:]:
        union = np.maximum.reduce([g.spatial for (g,) in graphs])
        kept_after_five = union if kept_after_five is None else np.maximum(kept_after_five, union)
    assert kept_after_five.sum() <= 9 and (after_first <= 1).all()
    # reusing the masks: the same rules give the file's pruned masks; other rules are refused
    same = build(method_cfg("method.rounds=1", "method.decision=vote", "method.prune_rate=0.25",
                            "method.prune_every=5", "method.prune_count=cut_half_even",
                            f"method.masks={tmp_path / MASKS_FILE}"), Scripted(cfg), task)
    same.prepare(None, task.samples(), resume=True)
    np.testing.assert_array_equal(same.graph.spatial, method.graph.spatial)
    other = build(method_cfg("method.rounds=1", "method.decision=vote", "method.prune_rate=0.5",
                             "method.prune_every=5", f"method.masks={tmp_path / MASKS_FILE}"), Scripted(cfg), task)
    with pytest.raises(UserError, match=r"an iterative schedule cannot be replayed from saved logits"):
        other.prepare(None, task.samples(), resume=True)


def test_sampled_test_graphs_are_seeded_per_question_recorded_and_followed():
    cfg = method_cfg("method.prune_rate=0", "method.rounds=2", "method.test_graph=sampled",
                     "method.graph_draw=per_round", "method.decision=vote")
    task = arith(4)
    samples = task.samples()
    method = ready(cfg, Scripted(cfg), task)
    together = method.run(samples)
    alone = [method.run([s])[0] for s in samples[::-1]][::-1]  # other batches, another order: the same graphs
    graphs = [o.diagnostics["graph"] for o in together]
    assert graphs == [o.diagnostics["graph"] for o in alone]
    assert len({json.dumps(g["rounds"]) for g in graphs}) > 1  # each question draws its own
    for sample, graph in zip(samples, graphs):
        assert len(graph["rounds"]) == 2 and graph["rounds"][0]["temporal"] == [] and isinstance(graph["seed"], int)
        method.backend = backend = Scripted(cfg)
        method.run([sample])
        prompts = [c[-1]["content"] for call in backend.calls for c in call]
        assert len(prompts) == 8  # 4 agents x 2 rounds, in round order
        for k, prompt in enumerate(prompts):  # every agent read exactly what the recorded graph says
            round = k // 4
            name = next(a.name for a in cfg.agents if prompt.startswith(a.instruction))
            edges = graph["rounds"][round]
            reads = {(a, str(round)) for a, b in edges["spatial"] if b == name} | {
                (a, str(round - 1)) for a, b in edges["temporal"] if b == name}
            assert set(re.findall(r"(\w+) in round (\d+):", prompt)) == reads
    fixed = ready(method_cfg("method.prune_rate=0", "method.rounds=2", "method.decision=vote"), Scripted(cfg), task)
    assert all("graph" not in o.diagnostics for o in fixed.run(samples))


def test_cli_run_with_a_prompt_pack_records_hints_executions_and_the_pack(tiny_model_dir, tmp_path):
    from pathlib import Path

    pack = Path(__file__).parent / "packs" / "authors_structure.yaml"
    run_dir, rows, info = cli_run(tmp_path, "task.limit=1", f"method.prompt_pack={pack}", "method.prune_rate=0",
                                  "method.rounds=1", f"model.path={tiny_model_dir}", "model.name=tiny",
                                  "generation.max_new_tokens=4")
    (row,) = rows
    calls = {a["agent"]: a for a in row["agents"]}
    assert list(calls) == ["a0", "a1", "a2", "a3", "d"] and row["error"] is None
    assert calls["a0"]["hint"] == [] and calls["a1"]["hint"] is None  # a0 reads nobody in the complete DAG
    assert calls["a2"]["execution"]["ending"] in ("passed", "failed", "timeout", "limit", "refused")
    assert row["transcript"][2]["text"].endswith(calls["a2"]["execution"]["appended"])
    assert info["method_info"]["prompt_pack"]["source"] == str(pack)
    assert (run_dir / "prompt_pack.yaml").read_text() == pack.read_text()
    shown = CliRunner().invoke(app, ["show", str(run_dir)])
    assert shown.exit_code == 0, shown.output
