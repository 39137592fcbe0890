"""The hf backend's fast path (static KV cache, compiled one-token steps) against the eager path, on tiny models."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import transformers.integrations.sdpa_attention as transformers_sdpa
from conftest import decoding, make_method, make_task, make_tiny_model
from transformers import StaticCache

from mascompare.backends.hf import HFBackend
from mascompare.backends.hf.attention import STEP_ATTENTION, sdpa_grouped_steps
from mascompare.backends.hf.cache import static_columns
from mascompare.backends.hf.loading import pick_compile

GREEDY = decoding(max_new_tokens=8)


def test_compile_setting():
    assert pick_compile("auto", torch.device("cuda")) is True
    assert pick_compile("auto", torch.device("cpu")) is False
    assert pick_compile(True, torch.device("cpu")) is True and pick_compile(False, torch.device("cuda")) is False
    assert [static_columns(n) for n in (1, 64, 65, 257, 1000)] == [64, 64, 128, 512, 1024]


def test_compiled_one_token_steps_read_shared_key_value_heads_in_place(monkeypatch):
    """transformers copies each key/value head per query head sharing it (repeat_kv) in compiled steps; the
    fast path's attention reads them in place, with the same result."""
    generator = torch.Generator().manual_seed(0)
    query, keys, values = (torch.randn(shape, generator=generator) for shape in ((3, 4, 1, 8), (3, 2, 10, 8),
                                                                                  (3, 2, 10, 8)))
    mask = torch.rand((3, 1, 1, 10), generator=generator) > 0.3
    mask[:, :, :, -1] = True
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, transformers_sdpa.repeat_kv(keys, 2), transformers_sdpa.repeat_kv(values, 2), attn_mask=mask)

    def no_copies(*args):
        raise AssertionError("the key/value heads were copied")
    monkeypatch.setattr(transformers_sdpa, "repeat_kv", no_copies)
    step = torch.compile(sdpa_grouped_steps, backend="eager", fullgraph=True)
    output, _ = step(SimpleNamespace(num_key_value_groups=2), query, keys, values, mask)
    assert torch.allclose(output, expected.transpose(1, 2), atol=1e-6)


def test_importing_the_backend_registers_nothing():
    code = ("import mascompare.backends.hf\n"
            "from transformers.modeling_utils import AttentionInterface\n"
            "from mascompare.backends.hf.attention import STEP_ATTENTION\n"
            "assert STEP_ATTENTION not in AttentionInterface().valid_keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_what_the_backend_changes_on_its_model(smollm2_tokenizer):
    """One hook on the output head, however many backends; on the fast path the attention function, which
    outside compiled steps is sdpa itself: the model's eager outputs do not change."""
    model = make_tiny_model(smollm2_tokenizer, tie=False)  # its own model: this test watches it change
    ids, mask = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
    hooks = len(model.get_output_embeddings()._forward_pre_hooks)
    for _ in range(2):
        HFBackend.from_loaded(model, smollm2_tokenizer, "tiny", device="cpu")
    assert model.config._attn_implementation == "sdpa"
    assert len(model.get_output_embeddings()._forward_pre_hooks) == hooks + 1
    HFBackend.from_loaded(model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)
    assert model.config._attn_implementation == STEP_ATTENTION
    assert len(model.get_output_embeddings()._forward_pre_hooks) == hooks + 1
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)


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
    long_text = "word " * 300  # past the first static cache's columns: it is copied into a larger one
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
        method = make_method(name.split("/")[0], backend, task, *overrides, gen=GREEDY)
        method.prepare(None, samples, resume=True)
        texts[name] = [output.final_text for output in method.run(samples)]
    return texts


@pytest.fixture(scope="module")
def arith_samples():
    task = make_task("arith", "task.seed=1", "task.size_per_level=2", "task.limit=4")
    return task, task.samples()


def test_traced_fast_path_gives_the_eager_outputs_of_every_method(tiny_tied_model, smollm2_tokenizer, arith_samples):
    """Every method through static caches and graphs traced by torch.compile (its `eager` backend: no code
    generation, so that this stays cheap; the test below runs the real compiler once)."""
    task, samples = arith_samples
    eager = HFBackend.from_loaded(tiny_tied_model, smollm2_tokenizer, "tiny", device="cpu")
    fast = HFBackend.from_loaded(tiny_tied_model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)
    fast.steps.compile_config.backend = "eager"
    expected = method_outputs(eager, task, samples)
    assert method_outputs(fast, task, samples) == expected
    assert all(len(set(texts)) > 1 for texts in expected.values())  # the rows really differ


def test_compiled_fast_path_gives_the_eager_outputs(tiny_model, smollm2_tokenizer, arith_samples):
    task, samples = arith_samples
    eager = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu")
    fast = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu", compiled=True)
    for name, overrides in (("baseline", []), ("latent_mas", ["method.latent_steps=3"])):
        texts = [[o.final_text for o in make_method(name, backend, task, *overrides, gen=GREEDY).run(samples)]
                 for backend in (eager, fast)]
        assert texts[0] == texts[1] and len(set(texts[0])) > 1


def test_sliding_window_models_take_the_fast_path_with_the_eager_outputs(tiny_sliding_gemma3, smollm2_tokenizer,
                                                                          arith_samples):
    """Every layer of the static cache holds every column and the model's mask applies the window: chat (rows
    refilled, rows running past the window) and latent_mas give the eager outputs (traced, as above)."""
    task, samples = arith_samples
    eager = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu", decode_rows=2)
    fast = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu", compiled=True,
                                 decode_rows=2)
    fast.steps.compile_config.backend = "eager"
    assert isinstance(fast.new_cache(1).cache, StaticCache)
    conversations = [[{"role": "user", "content": "word " * words}] for words in (5, 60, 100, 20, 140)]
    expected = eager.chat(conversations, decoding(max_new_tokens=40))
    assert max(c.prompt_tokens + c.completion_tokens for c in expected) > eager.layout.sliding_window
    assert [c.text for c in fast.chat(conversations, decoding(max_new_tokens=40))] == [c.text for c in expected]
    for structure in ("sequential", "hierarchical"):
        overrides = (f"method.structure={structure}", "method.latent_steps=3")
        texts = [[o.final_text for o in make_method("latent_mas", backend, task, *overrides, gen=GREEDY).run(samples)]
                 for backend in (eager, fast)]
        assert texts[0] == texts[1] and len(set(texts[0])) > 1
