"""The hf backend's fast path (static KV cache, compiled one-token steps) against the eager path, on tiny models."""

import pytest
import torch
from omegaconf import OmegaConf

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends.hf import HFBackend, pick_compile, static_columns
from mascompare.errors import UserError
from mascompare.generation import GenerationConfig
from mascompare.methods import build_method
from mascompare.tasks.arith import Arith

GREEDY = GenerationConfig(max_new_tokens=8)


def test_compile_setting():
    assert pick_compile("auto", torch.device("cuda")) is True
    assert pick_compile("auto", torch.device("cpu")) is False
    assert pick_compile(True, torch.device("cpu")) is True and pick_compile(False, torch.device("cuda")) is False
    with pytest.raises(UserError, match="backend.compile must be auto, true or false, got 'yes'"):
        pick_compile("yes", torch.device("cpu"))
    assert [static_columns(n) for n in (1, 256, 257, 1000)] == [256, 256, 512, 1024]


@pytest.fixture
def static_backend(tiny_model, smollm2_tokenizer, monkeypatch):
    """The fast path's static caches with the model's eager forward in place of the compiled one (cheap)."""
    monkeypatch.setattr(tiny_model, "get_compiled_call", lambda config: tiny_model.__call__, raising=False)
    return HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)


def latent_run(backend, long_text):
    """Two row blocks, two latent steps, a join, a final segment outgrowing the first static cache, decoding."""
    encode = backend.encode_chat
    first = encode([[{"role": "user", "content": text}] for text in ("Hi", "What is 12 + 30?", "Two", "Four")])
    state = backend.new_cache(4, [0, 0, len(first[0]), len(first[1])])
    outputs = [backend.prefill(state, first)]
    for _ in range(2):
        outputs.append(backend.step_embeds(state, outputs[-1][0]))
    state = backend.join_rows(state, 2)
    outputs.append(backend.prefill(state, encode([[{"role": "user", "content": long_text}],
                                                  [{"role": "user", "content": "And then?"}]])))
    return outputs, backend.decode(state, outputs[-1][1], GREEDY), state


def test_static_cache_gives_the_dynamic_caches_results(tiny_backend, static_backend):
    long_text = "word " * 300  # past the first static cache's 256 columns: it is copied into a larger one
    eager, eager_tokens, _ = latent_run(tiny_backend, long_text)
    static, static_tokens, state = latent_run(static_backend, long_text)
    assert state.cache.get_max_length() == static_columns(state.length) == 512
    for (hidden, logits), (static_hidden, static_logits) in zip(eager, static):
        assert torch.allclose(hidden, static_hidden, atol=1e-4) and torch.allclose(logits, static_logits, atol=1e-4)
    assert static_tokens == eager_tokens


def method_outputs(backend, task, samples):
    """Final texts of every method (both structures where there are two) on the same questions."""
    runs = {"baseline": [], "pruned_mas": ["method.prune_rate=0", "method.rounds=1"]}
    for structure in ("sequential", "hierarchical"):
        runs[f"text_mas/{structure}"] = [f"method.structure={structure}"]
        runs[f"latent_mas/{structure}"] = [f"method.structure={structure}", "method.latent_steps=3"]
    texts = {}
    for name, overrides in runs.items():
        cfg = compose_config(f"method={name.split('/')[0]}", "task=arith", *overrides)
        method = build_method(cfg.method, backend, task, GREEDY, Accountant())
        texts[name] = [output.final_text for output in method.run(samples)]
    return texts


@pytest.fixture(scope="module")
def arith_samples():
    task = Arith(OmegaConf.create({"name": "arith", "seed": 1, "size_per_level": 2, "limit": 4}))
    return task, task.load()


def test_traced_fast_path_gives_the_eager_outputs_of_every_method(tiny_tied_model, smollm2_tokenizer, arith_samples):
    """Every method through static caches and graphs traced by torch.compile (its `eager` backend: no code
    generation, so that this stays cheap; the test below runs the real compiler once)."""
    task, samples = arith_samples
    eager = HFBackend.from_loaded(tiny_tied_model, smollm2_tokenizer, "tiny", device="cpu")
    fast = HFBackend.from_loaded(tiny_tied_model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)
    fast.compile_config.backend = "eager"
    expected = method_outputs(eager, task, samples)
    assert method_outputs(fast, task, samples) == expected
    assert all(len(set(texts)) > 1 for texts in expected.values())  # the rows really differ


def test_compiled_fast_path_gives_the_eager_outputs(tiny_model, smollm2_tokenizer, arith_samples):
    task, samples = arith_samples
    eager = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu")
    fast = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)
    for name, overrides in (("baseline", []), ("latent_mas", ["method.latent_steps=3"])):
        cfg = compose_config(f"method={name}", "task=arith", *overrides)
        texts = [[o.final_text for o in build_method(cfg.method, backend, task, GREEDY, Accountant()).run(samples)]
                 for backend in (eager, fast)]
        assert texts[0] == texts[1] and len(set(texts[0])) > 1
