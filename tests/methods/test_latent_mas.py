"""LatentMAS mechanism on tiny random-weight models (tied and untied embeddings)."""

import copy
import json

import pytest
import torch
from recording_backend import ThoughtRecorder
from typer.testing import CliRunner

from conftest import make_method as build_method
from conftest import make_task
from mascompare import runner as run_module
from mascompare.accounting import Accountant, prompt_hash
from mascompare.app import compose_config
from mascompare.backends.hf import HFBackend
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.methods.latent import RIDGE_LAMBDA, latent_thought, realignment


def compose_cfg(*overrides):
    return compose_config("method=latent_mas", "task=arith", *overrides)


@pytest.fixture(scope="module")
def task():
    return make_task("arith", "task.seed=3", "task.size_per_level=4", "task.limit=8")


@pytest.fixture(scope="module")
def samples(task):
    return task.samples()


@pytest.fixture(params=["untied", "tied"])
def backend(request, tiny_backend, tiny_tied_backend):
    return tiny_backend if request.param == "untied" else tiny_tied_backend


def make_method(backend, task, *overrides, max_new_tokens=10, accountant=None):
    return build_method("latent_mas", backend, task, *overrides, max_new_tokens=max_new_tokens, accountant=accountant)


def to_input_space(method, hidden):
    return latent_thought(hidden, method.thinker.w_a, method.thinker.target_norm)


def test_m0_final_logits_equal_one_forward_over_the_concatenated_prompts(backend, task, samples):
    method = make_method(backend, task, "method.latent_steps=0")
    sample = samples[:1]
    state, segments, *_ = method.think_together(sample)
    logits, *_ = method.prefill_final(state, segments, sample)
    ids = sum((method.prompts(agent, sample)[0] for agent in method.agents), [])
    with torch.inference_mode():
        reference = backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    assert torch.allclose(logits[0], reference, atol=1e-4)
    assert not torch.allclose(logits[0], backend.model(input_ids=torch.tensor(
        [method.prompts(method.agents[-1], sample)[0]])).logits[0, -1].float(), atol=1e-3), \
        "with m=0 the judger must still see the other agents (the cache is handed on)"


def last_state(model, embeds, positions, mask=None) -> torch.Tensor:
    """The last layer's (final-norm) state at the last position, from one forward pass without a cache."""
    with torch.inference_mode():
        out = model.model(inputs_embeds=embeds[None], position_ids=positions[None], attention_mask=mask,
                          use_cache=False)
    return out.last_hidden_state[0, -1]


def hand_built_final_logits(model, prompts, steps, hierarchical) -> torch.Tensor:
    """The final agent's first-token logits from one forward pass over input embeddings built here:
    each agent's prompt embeddings, then its m thoughts, each thought from its own forward pass from
    scratch; positions count every earlier token; hierarchical experts see only their own segment
    (a 4-D mask built here), the final agent sees everything."""
    embed = model.get_input_embeddings()
    with torch.inference_mode():
        w_in = embed(torch.arange(embed.weight.shape[0])).float()
    w_out = model.get_output_embeddings().weight.detach().float()
    w_a = torch.linalg.solve(w_out.T @ w_out + RIDGE_LAMBDA * torch.eye(w_out.shape[1]), w_out.T @ w_in)
    target_norm = w_in.norm(dim=1).mean()
    segments = []  # per agent: its embeddings, in order
    for prompt in prompts[:-1]:
        start = sum(len(s) for s in segments)
        own = [embed(torch.tensor(prompt)).detach().float()]
        for _ in range(steps):
            seen = torch.cat(own if hierarchical else [*segments, *own])
            first = start if hierarchical else 0
            h = last_state(model, seen, torch.arange(first, first + len(seen)))
            aligned = h @ w_a
            own.append((aligned * target_norm / aligned.norm())[None])
        segments.append(torch.cat(own))
    segments.append(embed(torch.tensor(prompts[-1])).detach().float())
    everything = torch.cat(segments)
    mask = None
    if hierarchical:
        owner = torch.cat([torch.full((len(s),), k) for k, s in enumerate(segments)])
        final = len(segments) - 1
        allowed = torch.tril(torch.ones(len(owner), len(owner), dtype=torch.bool))
        allowed &= (owner[:, None] == owner[None, :]) | (owner[:, None] == final)
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    with torch.inference_mode():
        return model(inputs_embeds=everything[None], position_ids=torch.arange(len(everything))[None],
                     attention_mask=mask, use_cache=False).logits[0, -1].float()


@pytest.mark.parametrize("family", ["llama-untied", "llama-tied", "gemma3"])
@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_final_logits_equal_one_forward_over_hand_built_embeddings(family, structure, tiny_model, tiny_tied_model,
                                                                   tiny_gemma3, smollm2_tokenizer, task, samples):
    model = {"llama-untied": tiny_model, "llama-tied": tiny_tied_model, "gemma3": tiny_gemma3}[family]
    backend = HFBackend.from_loaded(model, smollm2_tokenizer, family, "cpu")
    method = make_method(backend, task, f"method.structure={structure}", "method.latent_steps=3")
    sample = samples[:1]
    state, segments, *_ = method.think_together(sample)
    logits, *_ = method.prefill_final(state, segments, sample)
    prompts = [method.prompts(agent, sample)[0] for agent in method.agents]
    reference = hand_built_final_logits(backend.model, prompts, 3, structure == "hierarchical")
    torch.testing.assert_close(logits[0], reference, atol=2e-4, rtol=1e-4)
    other = hand_built_final_logits(backend.model, prompts, 3, structure != "hierarchical")
    assert not torch.allclose(logits[0], other, atol=1e-2)  # the structure shows in the logits


def test_the_hierarchical_summarizer_sees_every_expert(backend, task, samples):
    def summarizer_logits(*overrides):
        method = make_method(backend, task, "method.structure=hierarchical", "method.latent_steps=2", *overrides)
        state, segments, *_ = method.think_together(samples[:1])
        return method.prefill_final(state, segments, samples[:1])[0][0]

    unchanged = summarizer_logits()
    for expert in range(3):
        changed = summarizer_logits(f"method.roles.hierarchical.{expert}.instruction='Answer in French, briefly.'")
        assert not torch.allclose(unchanged, changed, atol=1e-2), f"the summarizer does not see expert {expert}"


@pytest.mark.parametrize("steps", [0, 3])
def test_cache_grows_by_each_prompt_plus_m_latent_steps(backend, task, samples, steps):
    accountant = Accountant()
    method = make_method(backend, task, f"method.latent_steps={steps}", max_new_tokens=4, accountant=accountant)
    method.run(samples[:3])
    for sample in samples[:3]:
        records = accountant.take(sample.id)
        assert [r.role for r in records] == ["planner", "critic", "refiner", "judger"]
        expected, earlier = 0, {}
        for record in records:
            assert record.kv_positions_received == expected  # everything before this agent, no padding
            assert record.kv_received_from == earlier  # and from whom: each earlier agent's prompt and thoughts
            expected += record.input_tokens + record.latent_steps
            earlier = {**earlier, record.agent: record.input_tokens + record.latent_steps}
        assert [r.latent_steps for r in records] == [steps] * 3 + [0]
        assert [r.forward_passes for r in records[:3]] == [1 + steps] * 3
    state, *_ = method.think_together(samples[:1])
    prompt_lengths = [len(method.prompts(a, samples[:1])[0]) for a in method.agents[:-1]]
    assert state.length == sum(prompt_lengths) + steps * len(prompt_lengths)


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_recorded_forward_passes_and_output_tokens_are_what_happened(tiny_backend, task, samples, structure):
    """Counted independently: the model's forward calls (a hook), and a decode that cannot stop early."""
    tiny_backend.eos_token_ids = []  # no EOS: the final agent writes exactly max_new_tokens tokens
    accountant = Accountant()
    method = make_method(tiny_backend, task, f"method.structure={structure}", "method.latent_steps=2",
                         max_new_tokens=5, accountant=accountant)
    calls = []
    handle = tiny_backend.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        method.run(samples[:1])
    finally:
        handle.remove()
    records = accountant.take(samples[0].id)
    assert records[-1].output_tokens == 5
    assert records[-1].forward_passes == 5  # the prompt's prefill, then one pass per token fed back
    experts = 1 if structure == "hierarchical" else 3  # hierarchical experts share their passes side by side
    assert len(calls) == experts * (1 + 2) + 5


def test_realignment_is_identity_for_tied_and_solves_ridge_for_untied(tiny_tied_backend, tiny_backend):
    tiny_tied_model, tiny_model = tiny_tied_backend.model, tiny_backend.model
    w_a, target_norm = realignment(tiny_tied_backend)
    assert torch.allclose(w_a, torch.eye(w_a.shape[0]), atol=1e-4)
    w_in = tiny_tied_model.get_input_embeddings().weight.detach().float()
    assert target_norm == pytest.approx(float(w_in.norm(dim=1).mean()))

    w_a, _ = realignment(tiny_backend)
    w_in = tiny_model.get_input_embeddings().weight.detach().float()
    w_out = tiny_model.get_output_embeddings().weight.detach().float()
    lhs = (w_out.T @ w_out + RIDGE_LAMBDA * torch.eye(w_out.shape[1])) @ w_a
    assert torch.allclose(lhs, w_out.T @ w_in, atol=1e-3 * float((w_out.T @ w_in).abs().max()))
    assert not torch.allclose(w_a, torch.eye(w_a.shape[0]), atol=1e-2)
    assert realignment(tiny_backend)[0] is w_a  # computed once per backend


class Reached(Exception):
    pass


def first_layer_input(model, **inputs) -> torch.Tensor:
    """What the first decoder layer receives for these inputs (the model stops there)."""
    caught = []

    def catch(module, args, kwargs):
        caught.append(args[0] if args else kwargs["hidden_states"])
        raise Reached

    handle = model.model.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.inference_mode():
            model.model(**inputs)
    except Reached:
        pass
    finally:
        handle.remove()
    return caught[0].float()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_thoughts_enter_at_the_scale_the_first_layer_receives(family, tiny_tied_model, tiny_gemma3, smollm2_tokenizer,
                                                              task, samples):
    """Gemma 3 scales its embeddings by sqrt(d) inside the embedding module: the target norm and W_a
    must live in that scaled space, where an input embedding replaces the module's output."""
    model = tiny_tied_model if family == "llama" else tiny_gemma3
    vocabulary = first_layer_input(model, input_ids=torch.arange(len(smollm2_tokenizer))[:, None])[:, 0]
    backend = HFBackend.from_loaded(model, smollm2_tokenizer, family, "cpu")
    w_a, target_norm = realignment(backend)
    assert float(target_norm) == pytest.approx(float(vocabulary.norm(dim=-1).mean()), rel=1e-5)
    scale = model.config.hidden_size ** 0.5 if family == "gemma3" else 1.0
    assert torch.allclose(w_a, scale * torch.eye(w_a.shape[0]), atol=1e-3 * scale)  # tied: the scale itself
    method = make_method(backend, task, "method.latent_steps=1")
    hidden, _ = backend.prefill(backend.new_cache(1), method.prompts(method.agents[0], samples[:1]))
    thought = to_input_space(method, hidden)
    received = first_layer_input(model, inputs_embeds=thought[:, None, :])[0, 0]
    assert float(received.norm()) == pytest.approx(float(vocabulary.norm(dim=-1).mean()), rel=1e-4)


def test_realign_false_keeps_the_norm_rescale(tiny_backend, task):
    method = make_method(tiny_backend, task, "method.realign=false")
    hidden = torch.randn(3, tiny_backend.model.config.hidden_size) * 5
    thought = to_input_space(method, hidden)
    assert torch.allclose(thought.norm(dim=-1), method.thinker.target_norm.expand(3), rtol=1e-5)
    assert torch.allclose(torch.nn.functional.cosine_similarity(thought, hidden), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_batch_of_8_gives_the_same_texts_as_one_at_a_time(backend, task, samples, structure):
    method = make_method(backend, task, f"method.structure={structure}", "method.latent_steps=3")
    batched = [o.final_text for o in method.run(samples)]
    single = [method.run([s])[0].final_text for s in samples]
    assert batched == single
    assert len(set(batched)) > 1  # the rows really differ, so the comparison means something


def test_plain_format_decoding_ends_at_the_turn_marker_as_chat_does(tiny_model, smollm2_tokenizer, task, samples):
    """A model without a chat template gets the plain "User: ... Assistant:" format; its rows end where
    the text first contains the turn marker, in the latent decode loop as in chat()."""
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = None
    backend = HFBackend.from_loaded(tiny_model, tokenizer, "base", "cpu")
    backend.prompts.turn_end = "\u0000 never written"
    method = make_method(backend, task, "method.latent_steps=2", max_new_tokens=12)
    state, segments, *_ = method.think_together(samples[:1])
    logits, *_ = method.prefill_final(state, segments, samples[:1])
    (decoded,) = backend.decode(state, logits, method.gen)
    expected = decoded.tokens
    assert len(expected) == 12 and decoded.finish_reason == "length"
    # pretend that what the final agent writes at steps 5 and 6 starts a new user turn
    backend.prompts.turn_end = marker = tokenizer.decode(expected[4:6], skip_special_tokens=True)
    end = next(k for k in range(1, 13) if marker in tokenizer.decode(expected[:k]))
    accountant = Accountant()
    (output,) = make_method(backend, task, "method.latent_steps=2", max_new_tokens=12,
                            accountant=accountant).run(samples[:1])
    final = accountant.take(samples[0].id)[-1]
    assert end <= 6 and final.output_tokens == end and final.finish_reason == "stop"
    assert output.final_text == tokenizer.decode(expected[:end]).split(marker)[0]


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_sliding_window_batches_give_the_same_texts_as_one_at_a_time(tiny_sliding_gemma3, smollm2_tokenizer, task,
                                                                     samples, structure):
    backend = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu")
    method = make_method(backend, task, f"method.structure={structure}", "method.latent_steps=3")
    assert backend.layout.sliding_window < max(len(p) for p in method.prompts(method.agents[-1], samples))
    batched = [o.final_text for o in method.run(samples)]
    assert batched == [method.run([s])[0].final_text for s in samples]
    assert len(set(batched)) > 1


def expert_thoughts(backend, task, samples, structure, first_instruction):
    recorder = ThoughtRecorder(backend)
    method = make_method(recorder, task, f"method.structure={structure}", "method.latent_steps=3",
                         f"method.roles.{structure}.0.instruction='{first_instruction}'")
    method.think_together(samples[:2])
    if len(recorder.thoughts) == 3:  # experts side by side: rows are expert-major, two samples per expert
        return torch.stack([thought[2:4] for thought in recorder.thoughts])
    return torch.stack(recorder.thoughts[3:6])  # one agent after another: the second agent's three latent inputs


def test_hierarchical_experts_do_not_see_each_other(backend, task, samples):
    a = expert_thoughts(backend, task, samples, "hierarchical", "Solve it with algebra.")
    b = expert_thoughts(backend, task, samples, "hierarchical", "Work it out with a long and careful table of numbers.")
    assert torch.allclose(a, b, atol=1e-4)
    # the same change does reach the second agent when agents build on each other
    a = expert_thoughts(backend, task, samples, "sequential", "Solve it with algebra.")
    b = expert_thoughts(backend, task, samples, "sequential", "Work it out with a long and careful table of numbers.")
    assert not torch.allclose(a, b, atol=1e-2)


def test_diagnostics_record_norms_and_cosines(tiny_backend, task, samples):
    method = make_method(tiny_backend, task, "method.latent_steps=4", "method.diagnostics=true")
    notes = method.run(samples[:2])[0].diagnostics
    assert set(notes) == {"planner", "critic", "refiner"}
    assert len(notes["planner"]["latent_norms"]) == 4 and len(notes["planner"]["latent_cosines"]) == 3
    assert all(-1 <= c <= 1 for c in notes["critic"]["latent_cosines"])
    assert make_method(tiny_backend, task).run(samples[:1])[0].diagnostics is None


def test_negative_latent_steps_is_a_user_error(tiny_backend, task):
    with pytest.raises(UserError, match="method.latent_steps must be a non-negative integer"):
        make_method(tiny_backend, task, "method.latent_steps=-1")


def test_a_backend_without_a_model_in_this_process_fails_before_any_work(tmp_path):
    cfg = compose_cfg("backend=openai", "backend.base_url=http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match="Method 'latent_mas' thinks in latent space and needs a model running in this "
                                        "process, which backend 'openai' is not; use backend=hf."):
        run_module.execute(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_cli_run_records_latent_usage(tiny_model_dir, tmp_path, structure):
    result = CliRunner().invoke(app, [
        "run", "method=latent_mas", f"method.structure={structure}", "method.latent_steps=2", "task=arith",
        "task.limit=2", f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=4",
        "run.progress=false", f"run.output_root={tmp_path}",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (samples_file,) = tmp_path.glob("arith/latent_mas/tiny/*/samples.jsonl")
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["usage"]["latent_steps"] == 6 and row["usage"]["calls"] == 4
        assert [t["text"] is None for t in row["transcript"]] == [True, True, True, False]


@pytest.mark.embedded
@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_smoke_on_the_embedded_model(tmp_path, structure):
    result = CliRunner().invoke(app, [
        "run", "method=latent_mas", f"method.structure={structure}", "task=arith", "task.limit=2",
        "generation.max_new_tokens=24", "run.progress=false", f"run.output_root={tmp_path}",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_json,) = tmp_path.glob("arith/latent_mas/smollm2-135m/*/run.json")
    summary = json.loads(run_json.read_text())["summary"]
    assert summary["n"] == 2 and summary["mean_latent_steps"] == 30 and summary["mean_output_tokens"] > 0


def test_records_keep_each_agents_messages_and_the_final_agents_finish_reason(tiny_backend, task, samples):
    accountant = Accountant()
    method = make_method(tiny_backend, task, "method.latent_steps=1", max_new_tokens=3, accountant=accountant)
    state, segments, *_ = method.think_together(samples[:4])
    for sample, answer in zip(samples[:4], method.answer(state, segments, samples[:4])):
        row = answer.tokens
        records = accountant.take(sample.id)
        for agent, record in zip(method.agents, records):
            (messages,) = method.messages(agent, [sample])
            assert record.messages == messages and record.prompt_hash == prompt_hash(messages)
            assert record.input_tokens == tiny_backend.count_tokens(messages)
        assert [r.finish_reason for r in records[:-1]] == [None] * 3  # latent thoughts decode nothing
        ended = "eos" if row[-1] in tiny_backend.eos_token_ids else "length"
        assert records[-1].finish_reason == ended and (ended == "eos" or len(row) == 3)


def test_a_sample_whose_shared_cache_outgrows_the_window_fails_alone(tiny_backend, task, samples):
    """Four agents each re-read the question: ~1,000 tokens of it fit one prompt but not the shared cache."""
    from dataclasses import replace

    accountant = Accountant()
    method = make_method(tiny_backend, task, "method.latent_steps=3", accountant=accountant)
    long = replace(samples[1], question="word " * 1000)
    huge = replace(samples[2], question="x" * (tiny_backend.prompts.max_chars + 1))
    outputs = method.run([samples[0], long, huge, samples[3]])
    assert outputs[1].error.startswith("ContextWindowExceeded: the agents' shared cache needs")
    assert "context window of 4,096" in outputs[1].error
    assert "characters" in outputs[2].error
    assert outputs[0].error is None and outputs[3].error is None
    # the samples that fit ran as they would without the others, and only they were recorded
    assert [outputs[0].final_text, outputs[3].final_text] == [o.final_text for o in method.run([samples[0], samples[3]])]
    assert accountant.take(long.id) == [] and accountant.take(huge.id) == []


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_a_prompt_pack_with_worked_examples_drives_the_latent_agents(tiny_backend, task, samples, structure,
                                                                     tmp_path):
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "system: Team line.\n"
        "formats: {example: 'E: {question} -> {answer}'}\n"
        "agents:\n"
        "  - {name: one, role: One, instruction: 'First view.', answers: false,\n"
        "     examples: [{question: 'What is 2 + 2?', answer: '4'}, {question: 'What is 3 + 3?', answer: '6'}]}\n"
        "  - {name: two, role: Two, instruction: 'Second view.', answers: false}\n"
        "decider: {name: last, role: Last, instruction: 'Answer.', answers: true}\n", encoding="utf-8")
    accountant = Accountant()
    method = make_method(tiny_backend, task, f"method.prompt_pack={pack}", f"method.structure={structure}",
                         "method.fewshot=1", "method.latent_steps=1", max_new_tokens=3, accountant=accountant)
    method.prepare(None, samples[:1], resume=True)
    (output,) = method.run(samples[:1])
    records = accountant.take(samples[0].id)
    assert [r.agent for r in records] == ["one", "two", "last"] and output.final_text is not None
    assert records[0].messages == [{"role": "system", "content": "Team line."},
                                   {"role": "user", "content": f"First view.\n\nE: What is 2 + 2? -> 4\n\n"
                                                               f"Problem:\n{samples[0].question}"}]
    assert records[2].messages[-1]["content"].endswith(task.answer_instruction())
