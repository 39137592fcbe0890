"""Decoding settings and per-call seeds: a sampled answer does not depend on the rest of its batch."""

from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from conftest import decoding
from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.generation import GenerationConfig, call_seed
from mascompare.methods import build_method
from mascompare.tasks.arith import Arith

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
    task = Arith(OmegaConf.create({"name": "arith", "seed": 5, "size_per_level": 2, "limit": 8}))
    samples = task.load()
    cfg = compose_config(f"method={name}", "task=arith", *METHODS[name]).method

    def answers(gen, batch_size):
        method = build_method(cfg, tiny_backend, task, gen, Accountant())
        if hasattr(method, "prepare"):
            method.prepare(None, samples)
        texts = []
        for start in range(0, len(samples), batch_size):
            texts += [o.final_text for o in method.run(samples[start:start + batch_size])]
        return texts

    together = answers(SAMPLED, 8)
    assert answers(SAMPLED, 1) == together
    assert answers(replace(SAMPLED, repeat=1), 8) != together, "another repeat draws other tokens"
    assert answers(replace(SAMPLED, temperature=0.0), 8) != together, "the answers were sampled"
