"""Decoding settings and per-call seeds: a sampled answer does not depend on the rest of its batch."""

import pytest

from conftest import decoding, make_method, make_task
from mascompare.generation import call_seed

SAMPLED = decoding(max_new_tokens=6, temperature=1.0, top_p=0.95, top_k=50, seed=7)
METHODS = {  # the methods' own presets, made small
    "baseline": (),
    "text_mas": (),
    "pruned_mas": ("method.prune_rate=0", "method.rounds=1", "method.decision=vote"),
    "latent_mas": ("method.latent_steps=2",),
    "pruned_latent_mas": ("method.prune_rate=0", "method.latent_steps=2"),
}


def test_a_call_seed_depends_on_every_part_of_its_key():
    base = call_seed(42, "q1", "planner", 0, 0)
    others = [call_seed(43, "q1", "planner", 0, 0), call_seed(42, "q2", "planner", 0, 0),
              call_seed(42, "q1", "critic", 0, 0), call_seed(42, "q1", "planner", 1, 0),
              call_seed(42, "q1", "planner", 0, 1)]
    assert base == call_seed(42, "q1", "planner", 0, 0) and base not in others and len(set(others)) == 5
    assert 0 <= base < 2**31
    assert decoding().call_seeds([("q1", "planner", 0)]) is None  # greedy draws nothing


@pytest.mark.parametrize("name", list(METHODS))
def test_sampled_answers_are_the_same_at_batch_1_and_batch_8(name, tiny_backend):
    task = make_task("arith", "task.seed=5", "task.size_per_level=2", "task.limit=8")
    samples = task.samples()

    def answers(gen, batch_size):
        method = make_method(name, tiny_backend, task, *METHODS[name], gen=gen)
        method.prepare(None, samples, resume=True)
        texts = []
        for start in range(0, len(samples), batch_size):
            texts += [o.final_text for o in method.run(samples[start:start + batch_size])]
        return texts

    together = answers(SAMPLED, 8)
    assert answers(SAMPLED, 1) == together
    assert answers(SAMPLED.for_repeat(1), 8) != together, "another repeat draws other tokens"
    assert answers(SAMPLED.model_copy(update={"temperature": 0.0}), 8) != together, "the answers were sampled"


def test_a_repeat_is_set_by_the_runner_and_changes_only_the_seeds():
    repeated = SAMPLED.for_repeat(2)
    assert repeated.repeat == 2 and SAMPLED.repeat == 0  # settings are frozen: a copy per repeat
    assert repeated.model_copy(update={"repeat": 0}) == SAMPLED
    calls = [("q1", "planner", 0)]
    assert repeated.call_seeds(calls) == [call_seed(7, "q1", "planner", 0, 2)] != SAMPLED.call_seeds(calls)
