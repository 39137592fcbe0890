"""HFBackend's latent primitives (prefill, step_embeds, join_rows) on tiny random-weight models."""

import torch

from mascompare.backends.hf import HFBackend


def test_prefill_returns_the_last_layers_state_without_asking_for_every_layer(tiny_model, smollm2_tokenizer):
    backend = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu")
    asked = []
    hook = tiny_model.register_forward_pre_hook(
        lambda _, args, kwargs: asked.append(kwargs.get("output_hidden_states")), with_kwargs=True)
    try:
        prompts = backend.encode_chat([[{"role": "user", "content": "What is 2 + 3?"}]])
        state = backend.new_cache(1)
        hidden, logits = backend.prefill(state, prompts)
        stepped, _ = backend.step_embeds(state, hidden)
    finally:
        hook.remove()
    assert asked == [None, None]
    with torch.inference_mode():
        full = tiny_model(input_ids=torch.tensor(prompts), output_hidden_states=True)
    assert torch.equal(hidden[0], full.hidden_states[-1][0, -1])
    assert torch.allclose(logits[0], full.logits[0, -1], atol=1e-4)
    assert not torch.equal(stepped, hidden)


def test_join_rows_equals_the_blocks_run_one_after_another(tiny_backend):
    conversations = [[{"role": "user", "content": text}] for text in ("Hi", "What is 12 + 30?", "Two", "Four and six")]
    first, second = tiny_backend.encode_chat(conversations[:2]), tiny_backend.encode_chat(conversations[2:])
    final = tiny_backend.encode_chat([[{"role": "user", "content": "So?"}], [{"role": "user", "content": "And then?"}]])
    # one after another: the second block hidden from the first through the mask, positions counting on
    in_turn = tiny_backend.new_cache(2)
    tiny_backend.prefill(in_turn, first)
    tiny_backend.prefill(in_turn, second, visible=torch.zeros_like(in_turn.mask))
    positions = in_turn.real_positions()
    expected_hidden, expected_logits = tiny_backend.prefill(in_turn, final)
    # side by side: four rows in one pass, the second block's positions starting where the first block's end
    rows = tiny_backend.new_cache(4, [0, 0, len(first[0]), len(first[1])])
    tiny_backend.prefill(rows, first + second)
    joined = tiny_backend.join_rows(rows, 2)
    assert joined.real_positions() == positions and joined.length == 2 * rows.length
    assert joined.next_position.tolist() == [len(first[0]) + len(second[0]), len(first[1]) + len(second[1])]
    hidden, logits = tiny_backend.prefill(joined, final)
    assert torch.allclose(hidden, expected_hidden, atol=1e-5) and torch.allclose(logits, expected_logits, atol=1e-4)
    assert torch.equal(logits.argmax(dim=-1), expected_logits.argmax(dim=-1))
