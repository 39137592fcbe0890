"""Continuous batching in the hf backend's chat (backend.decode_rows): with more conversations than rows, a row
that finishes takes the next waiting conversation, and every conversation's completion is its batch-1 one."""


import pytest
from transformers import AutoTokenizer

from conftest import decoding
from mascompare.backends.hf import HFBackend

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me a story."}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "What is 12 + 30? Answer with one number."}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three, then four, five and six: what comes next in this list?"}],
    [{"role": "user", "content": "Why?"}],
    # the longest last: it arrives in a cache shorter than itself, which then grows columns before every row
    [{"role": "user", "content": "word " * 40}],
]
GREEDY = decoding(max_new_tokens=12)
SAMPLED = decoding(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
SEEDS = [11, 12, 13, 14, 15, 16, 17]


def alone(backend, gen, seeds=None):
    """Each conversation's completion at batch 1."""
    return [backend.chat([c], gen, None if seeds is None else [s])[0] for c, s in zip(CONVERSATIONS, seeds or SEEDS)]


def generated_tokens(backend, gen, seeds=None, conversations=CONVERSATIONS) -> list[list[int]]:
    """Each conversation's generated token ids at batch 1, through the latent primitives."""
    tokens = []
    for prompt, seed in zip(backend.encode_chat(conversations), seeds or SEEDS):
        state = backend.new_cache(1)
        _, logits = backend.prefill(state, [prompt])
        tokens += [decoded.tokens for decoded in backend.decode(state, logits, gen,
                                                                seeds=None if seeds is None else [seed])]
    return tokens


def end_some_rows_early(backend, gen, seeds=None):
    """Make EOS tokens of what three conversations write from steps 2, 5 and 8 on (tokens the last conversation
    never writes): rows then finish at different steps, the last at max_new_tokens. Returns the completions at
    batch 1 under those EOS ids."""
    outputs = generated_tokens(backend, gen, seeds)
    backend.eos_token_ids = [next(t for t in outputs[row][step:] if t not in outputs[-1])
                             for row, step in ((0, 1), (2, 4), (4, 7))]
    expected = alone(backend, gen, seeds)
    assert {c.finish_reason for c in expected} == {"eos", "length"}
    assert len({c.completion_tokens for c in expected}) > 2
    return expected


@pytest.mark.parametrize("rows", [1, 3])
def test_greedy_rows_refilled_give_each_conversation_its_batch_1_completion(tiny_model, smollm2_tokenizer, rows):
    backend = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu", decode_rows=rows)
    expected = end_some_rows_early(backend, GREEDY)
    assert backend.chat(CONVERSATIONS, GREEDY) == expected
    backend.decode_rows = None  # every conversation at once
    assert backend.chat(CONVERSATIONS, GREEDY) == expected


def test_sampled_samples_keep_their_own_generator_when_they_move_rows(tiny_model, smollm2_tokenizer):
    backend = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu", decode_rows=3)
    expected = end_some_rows_early(backend, SAMPLED, SEEDS)
    assert backend.chat(CONVERSATIONS, SAMPLED, SEEDS) == expected
    assert backend.chat(CONVERSATIONS, SAMPLED, SEEDS[::-1]) != expected


def test_plain_text_rows_end_at_the_turn_marker_and_are_refilled(tiny_model, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    backend = HFBackend.from_loaded(tiny_model, tokenizer, "base", "cpu", decode_rows=2)
    first = alone(backend, GREEDY)[0]
    tokens = tokenizer(first.text, add_special_tokens=False)["input_ids"]
    backend.prompts.turn_end = tokenizer.decode(tokens[3:5])  # what the first conversation writes at steps 4 and 5
    expected = alone(backend, GREEDY)
    assert expected[0].finish_reason == "stop" and expected[0].completion_tokens <= 5
    assert backend.chat(CONVERSATIONS, GREEDY) == expected


def test_sliding_window_rows_refilled_see_what_they_see_alone(tiny_sliding_gemma3, smollm2_tokenizer):
    """Refilled rows hold their tokens contiguous at the cache's end, so a window of 90 columns covers the same
    tokens as at batch 1, also once rows run past it."""
    backend = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu", decode_rows=2)
    gen = GREEDY.model_copy(update=dict(max_new_tokens=40))
    expected = end_some_rows_early(backend, gen)
    assert max(p.prompt_tokens + p.completion_tokens for p in expected) > backend.layout.sliding_window
    assert backend.chat(CONVERSATIONS, gen) == expected


def test_a_prompt_too_long_for_the_window_fails_alone(tiny_model, smollm2_tokenizer):
    backend = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu", decode_rows=1)
    long = [{"role": "user", "content": "word " * 4000}]
    gen = decoding(max_new_tokens=100)
    completions = backend.chat([CONVERSATIONS[0], long, CONVERSATIONS[1]], gen)
    assert completions[1].error.startswith("ContextWindowExceeded: the prompt has 4,031 tokens")
    assert completions[::2] == [backend.chat([c], gen)[0] for c in CONVERSATIONS[:2]]


def test_compiled_static_cache_keeps_its_shape_and_outputs(tiny_model, smollm2_tokenizer, monkeypatch):
    """The fast path (compiled steps on a static cache of 256 columns) with a row refilled in place. The second
    conversation ends at its 4th token; the third takes its row and runs on after the 244-token first one has
    ended, until the cache is full: then the first one's columns, which no live row attends to any more, are
    dropped in place rather than the cache growing (a new shape to compile)."""
    conversations = [[{"role": "user", "content": "word " * 213}], *CONVERSATIONS[:2]]
    eager = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu")
    outputs = generated_tokens(eager, GREEDY, conversations=conversations)
    eager.eos_token_ids = [outputs[1][3]]
    expected = [eager.chat([c], GREEDY)[0] for c in conversations]
    assert expected[0].prompt_tokens + GREEDY.max_new_tokens == 256
    assert [c.completion_tokens for c in expected] == [12, 4, 12]
    fast = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu", compiled=True, decode_rows=2)
    fast.eos_token_ids = eager.eos_token_ids
    seen = []
    relayout = fast.layout.relayout
    monkeypatch.setattr(fast.layout, "relayout", lambda state, *args, **kwargs: seen.append(
        (state.cache.get_max_length(), state.length, "arrivals" if len(args) > 2 else "full")) or relayout(
        state, *args, **kwargs))
    assert fast.chat(conversations, GREEDY) == expected
    assert [(capacity, kind) for capacity, _, kind in seen] == [(256, "arrivals"), (256, "full")]
    assert seen[1][1] == 256
