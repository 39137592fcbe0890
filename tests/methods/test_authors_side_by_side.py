"""pruned_mas set beside the AgentPrune authors' code, without their code: a prompt pack of placeholder text in
their team's structure (tests/methods/packs/authors_structure.yaml) drives pruned_mas against a scripted fake
model on a forced graph, and every message of every agent in both rounds is checked word for word: the role's
own system message and examples before the question, the first role's numeric hint (also without neighbours),
the third role's executed code (run in the real sandbox) appended before anyone reads it, this round's
messages before the previous round's, and the decider's own layout. Then the authors' per-round graph draws,
counted in log-probability terms."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import decoding, make_task

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends.base import Completion
from mascompare.methods import method_settings
from mascompare.methods.agent_graph import EdgePolicy, Graph, initial_masks
from mascompare.methods.pruned_mas import PrunedMAS

PACK = Path(__file__).parent / "packs" / "authors_structure.yaml"
QUESTION = "What is 7 plus 5?"  # arith level 1, seed 0, sample 0 (checked below)

# Each role's replies in rounds 0 and 1 (the decider answers once).
REPLIES = {
    "SYS0": ["The answer is 10", "The answer is 11"],
    "SYS1": ["The answer is 20", "The answer is 21"],
    "SYS2": ["```python\nprint(6 * 5)\n```", "```python\nprint(undefined_name)\n```"],
    "SYS3": ["The answer is 40", "The answer is 41"],
    "SYSD": ["The answer is 99"],
}
FAILED = "\nFAILED NameError: name 'undefined_name' is not defined"


class Scripted:
    """A fake model: answers each role (known by its system message) from REPLIES, one reply after another
    (the last one repeats), and keeps every call's conversations."""

    name, model_name, capabilities = "scripted", "scripted", frozenset({"chat"})

    def __init__(self):
        self.calls, self.turns = [], Counter()

    def chat(self, conversations, gen, seeds=None):
        self.calls.append(conversations)
        replies = []
        for conversation in conversations:
            system = conversation[0]["content"]
            replies.append(REPLIES[system][min(self.turns[system], len(REPLIES[system]) - 1)])
            self.turns[system] += 1
        return [Completion(text, prompt_tokens=len(text), completion_tokens=len(text.split())) for text in replies]


def edges(pairs, n=4):
    adj = np.zeros((n, n), dtype=int)
    for i, j in pairs:
        adj[i, j] = 1
    return adj


def messages(system, user):
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def pack_method(*overrides, backend=None, accountant=None):
    settings = method_settings(compose_config("method=pruned_mas", f"method.prompt_pack={PACK}", *overrides).method)
    task = make_task("arith", "task.limit=1", "task.levels=[1]")
    return PrunedMAS(settings, backend or Scripted(), task, decoding(max_new_tokens=8), accountant or Accountant()), task


def test_every_message_of_every_agent_in_both_rounds_of_a_forced_graph():
    backend, accountant = Scripted(), Accountant()
    method, task = pack_method("method.prune_rate=0", "method.rounds=2", backend=backend, accountant=accountant)
    samples = task.samples()
    assert samples[0].question == QUESTION
    method.prepare(None, samples, resume=True)
    # round 0: 0 -> 1 -> 2 -> 3 and 0 -> 3; round 1: 2 -> 0 and 3 -> 1, and previous-round messages 0 -> 0 (its
    # own), 1 -> 2, 3 -> 1 and 3 -> 3 (its own)
    round0 = Graph(edges([(0, 1), (1, 2), (2, 3), (0, 3)]), edges([]))
    round1 = Graph(edges([(2, 0), (3, 1)]), edges([(0, 0), (1, 2), (3, 1), (3, 3)]))
    (output,) = method.execute(samples, [(round0, round1)], [samples[0].id], "eval")

    q = QUESTION
    code0, code1 = REPLIES["SYS2"]
    expected_calls = [
        # round 0, one agent per layer; a0 has no neighbour and still gets its hint line
        [messages("SYS0", f"Q:EQ0\nA:EA0\n\nQ:{q}(HINT).")],
        [messages("SYS1", f"Q:EQ1a\nA:EA1a\n\nQ:EQ1b\nA:EA1b\n\nQ:{q}\n\nSPATIAL\n<R0: The answer is 10>")],
        [messages("SYS2", f"Q:{q}\n\nSPATIAL\n<R1: The answer is 20>")],
        [messages("SYS3", f"Q:{q}\n\nSPATIAL\n<R0: The answer is 10>\n\n<R2: {code0}\nRESULT 30>")],
        # round 1: a2 and a3 have no spatial predecessor (one call), then a0 and a1
        [messages("SYS2", f"Q:{q}\n\nTEMPORAL\n<R1: The answer is 20>"),
         messages("SYS3", f"Q:{q}\n\nTEMPORAL\n<you, R3: The answer is 40>")],
        # a0: the answers only, this round's first: a2's failed program has none, its own last answer says 10
        [messages("SYS0", f"Q:EQ0\nA:EA0\n\nQ:{q}(HINT 10)."),
         messages("SYS1", f"Q:EQ1a\nA:EA1a\n\nQ:EQ1b\nA:EA1b\n\nQ:{q}\n\nSPATIAL\n<R3: The answer is 41>\n\n"
                          "TEMPORAL\n<R3: The answer is 40>")],
        # the decider: every agent's last answer, in its own layout
        [messages("SYSD", f"Q:DQ\nA:DA\n\nTASK {q}\n\nOUTPUTS\n<R0: The answer is 11>\n\n<R1: The answer is 21>\n\n"
                          f"<R2: {code1}{FAILED}>\n\n<R3: The answer is 41>")],
    ]
    assert len(backend.calls) == len(expected_calls)
    for k, (got, want) in enumerate(zip(backend.calls, expected_calls)):
        assert got == want, f"call {k}"

    assert [(t.agent, t.round, t.text) for t in output.transcript] == [
        ("a0", 0, "The answer is 10"), ("a1", 0, "The answer is 20"), ("a2", 0, f"{code0}\nRESULT 30"),
        ("a3", 0, "The answer is 40"), ("a2", 1, f"{code1}{FAILED}"), ("a3", 1, "The answer is 41"),
        ("a0", 1, "The answer is 11"), ("a1", 1, "The answer is 21"), ("d", 2, "The answer is 99")]
    assert output.final_text == "The answer is 99"

    records = accountant.take(samples[0].id)
    assert [(r.agent, r.round) for r in records] == [(t.agent, t.round) for t in output.transcript]
    hints = {(r.agent, r.round): r.hint for r in records if r.hint is not None}
    assert hints == {("a0", 0): [], ("a0", 1): ["10"]}
    executions = {(r.agent, r.round): r.execution for r in records if r.execution is not None}
    assert set(executions) == {("a2", 0), ("a2", 1)}
    assert executions["a2", 0]["ending"] == "passed" and executions["a2", 0]["appended"] == "\nRESULT 30"
    assert executions["a2", 1]["ending"] == "failed" and executions["a2", 1]["appended"] == FAILED


def test_the_executed_result_reaches_the_hint_and_the_vote():
    """A program that prints a number: its result is what a numeric_hint reader and the vote read."""
    backend = Scripted()
    method, task = pack_method("method.prune_rate=0", "method.rounds=1", "method.decision=vote", backend=backend)
    samples = task.samples()
    method.prepare(None, samples, resume=True)
    graph = Graph(edges([(2, 0)]), edges([]))  # only the programmer's message reaches the first role
    (output,) = method.execute(samples, [(graph,)], [samples[0].id], "eval")
    first_role = [c for call in backend.calls for c in call if c[0]["content"] == "SYS0"]
    assert first_role == [messages("SYS0", f"Q:EQ0\nA:EA0\n\nQ:{QUESTION}(HINT 30).")]
    assert output.diagnostics["votes"] == {"10": 1, "20": 1, "30": 1, "40": 1}


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_per_round_draws_count_a_spatial_term_per_edge_every_round_and_a_temporal_term_after_the_first(rounds):
    """The authors' code draws the spatial graph anew in every round and the temporal edges in every round
    but the first, summing their log-probabilities; the paper's formula (our default) draws each once."""
    spatial, temporal = initial_masks("full", 4)  # 12 spatial and 16 temporal edges
    policy = EdgePolicy(spatial, temporal, rounds > 1, lr=0.1, lowrank_weight=0, anchor_weight=0, delta=0,
                        baseline_momentum=None, seed=3)
    learned_temporal = 16 if rounds > 1 else 0
    once = policy.sample(rounds, per_round=False)
    assert once.terms == 12 + learned_temporal and len(once.graphs) == rounds
    assert all(g is once.graphs[0] for g in once.graphs)  # one graph serves every round
    each = policy.sample(rounds, per_round=True)
    assert each.terms == rounds * 12 + (rounds - 1) * learned_temporal
    for draw in (once, each):  # at probability 1/2 every Bernoulli term is log(1/2)
        assert float(draw.logp.detach()) == pytest.approx(draw.terms * np.log(0.5))
    assert each.graphs[0].temporal.sum() == 0  # the first round reads no previous round and draws nothing
    if rounds == 3:
        assert any(not np.array_equal(a.spatial, b.spatial) for a, b in zip(each.graphs, each.graphs[1:]))


def test_calibration_with_per_round_draws_runs_each_round_on_its_own_graph(monkeypatch):
    method, task = pack_method("method.rounds=2", "method.graph_draw=per_round", "method.decision=vote",
                               "method.calibration.size=2", "method.calibration.iterations=1",
                               "method.calibration.batch_size=2", "method.calibration.split=seed")
    seen, execute = [], method.execute

    def spy(samples, graphs, ids, phase):
        seen.extend(graphs)
        return execute(samples, graphs, ids, phase)

    monkeypatch.setattr(method, "execute", spy)
    method.prepare(None, task.samples(), resume=True)
    assert len(seen) == 2 and all(len(rounds) == 2 for rounds in seen)
    assert all(r0.temporal.sum() == 0 for r0, _ in seen)  # round 0's draw has no temporal edges
    assert any(not np.array_equal(r0.spatial, r1.spatial) for r0, r1 in seen)  # drawn anew in round 1
