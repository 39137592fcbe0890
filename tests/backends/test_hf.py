"""HFBackend on tiny random-weight models: batching, token counts, decoding settings, devices, prompts."""

import copy
import inspect

import pytest
import torch
from transformers import AutoTokenizer
from transformers import GenerationConfig as HFGenerationConfig

from conftest import decoding
from mascompare.backends.base import plain_prompt
from mascompare.backends.base import LatentBackend
from mascompare.backends.hf import ContextWindowExceeded, HFBackend
from mascompare.backends.hf.decode import StopRule
from mascompare.backends.hf.loading import pick_device, pick_dtype
from mascompare.errors import UserError

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "What is 12 + 30? Answer with one number."}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three, then four, five and six: what comes next in this list?"}],
    [{"role": "user", "content": "word " * 40}],
    [{"role": "user", "content": "Tell me a story."}],
]
GREEDY = decoding(max_new_tokens=12)
SAMPLED = decoding(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=0, seed=7)


def texts(completions):
    return [c.text for c in completions]


def reference_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding the slow, obvious way: the full sequence through the model at every step, no cache."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("fixture", ["tiny_backend", "tiny_tied_backend"])
def test_greedy_batch_of_five_equals_each_alone(fixture, request):
    backend = request.getfixturevalue(fixture)
    assert len({len(p) for p in backend.encode_chat(CONVERSATIONS)}) == len(CONVERSATIONS)
    batch = backend.chat(CONVERSATIONS, GREEDY)
    alone = [backend.chat([conversation], GREEDY)[0] for conversation in CONVERSATIONS]
    assert batch == alone
    assert len(set(texts(batch))) == len(CONVERSATIONS)  # the rows really differ


def test_sliding_window_batch_equals_each_alone(tiny_sliding_gemma3, smollm2_tokenizer):
    """One left-padded prompt keeps its padding before all of a row's tokens: a window never counts it."""
    backend = HFBackend.from_loaded(tiny_sliding_gemma3, smollm2_tokenizer, "sliding", "cpu")
    lengths = [len(p) for p in backend.encode_chat(CONVERSATIONS)]
    gen = GREEDY.model_copy(update=dict(max_new_tokens=40))
    assert min(lengths) < backend.layout.sliding_window < max(lengths) + gen.max_new_tokens
    assert not backend.padding_could_pass_window([lengths], gen.max_new_tokens)
    assert texts(backend.chat(CONVERSATIONS, gen)) == [backend.chat([c], gen)[0].text for c in CONVERSATIONS]
    assert backend.padding_could_pass_window([lengths, lengths], 0)  # padding between two segments
    assert not backend.padding_could_pass_window([lengths, [9] * 5], 0)


def test_greedy_equals_reference_decoding(tiny_backend):
    prompts = tiny_backend.encode_chat(CONVERSATIONS)
    for prompt, completion in zip(prompts, tiny_backend.chat(CONVERSATIONS, GREEDY)):
        expected = reference_greedy(tiny_backend.model, prompt, GREEDY.max_new_tokens)
        assert completion.text == tiny_backend.tokenizer.decode(expected, skip_special_tokens=True)


def test_token_counts_stop_at_first_eos_and_exclude_padding(tiny_model, smollm2_tokenizer):
    prompts = [smollm2_tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=False)
               for c in CONVERSATIONS[:2]]
    first = reference_greedy(tiny_model, prompts[0], GREEDY.max_new_tokens)
    # make a token the first row produces at step 5 the EOS: that row stops there, the other row runs on
    model = copy.deepcopy(tiny_model)
    model.generation_config.eos_token_id = first[4]
    backend = HFBackend.from_loaded(model, smollm2_tokenizer, "tiny")
    completions = backend.chat(CONVERSATIONS[:2], GREEDY)
    for prompt, completion in zip(prompts, completions):
        expected = reference_greedy(model, prompt, GREEDY.max_new_tokens)
        end = expected.index(first[4]) + 1 if first[4] in expected else len(expected)
        assert completion.prompt_tokens == len(prompt)
        assert completion.completion_tokens == end
        assert completion.text == smollm2_tokenizer.decode(expected[:end], skip_special_tokens=True)
        assert completion.finish_reason == ("eos" if first[4] in expected else "length")
    assert completions[0].completion_tokens <= 5 < completions[1].completion_tokens
    assert completions[0].finish_reason == "eos"


def test_sampling_is_reproducible_and_leaves_the_global_rng_alone(tiny_backend):
    state = torch.get_rng_state()
    first = tiny_backend.chat(CONVERSATIONS, SAMPLED)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == tiny_backend.chat(CONVERSATIONS, SAMPLED)
    assert texts(first) != texts(tiny_backend.chat(CONVERSATIONS, SAMPLED.model_copy(update=dict(seed=8))))
    assert texts(first) != texts(tiny_backend.chat(CONVERSATIONS, GREEDY))


def test_sampling_settings_are_applied(tiny_backend):
    top_1 = SAMPLED.model_copy(update=dict(temperature=5.0, top_k=1))
    assert texts(tiny_backend.chat(CONVERSATIONS, top_1)) == texts(tiny_backend.chat(CONVERSATIONS, GREEDY))
    tiny_top_p = SAMPLED.model_copy(update=dict(temperature=5.0, top_p=1e-6))
    assert texts(tiny_backend.chat(CONVERSATIONS, tiny_top_p)) == texts(tiny_backend.chat(CONVERSATIONS, GREEDY))


def test_model_generation_defaults_do_not_leak(tiny_backend, tiny_model, smollm2_tokenizer):
    model = copy.deepcopy(tiny_model)
    model.generation_config = HFGenerationConfig(
        do_sample=True, temperature=0.3, top_k=3, top_p=0.5, repetition_penalty=3.0, no_repeat_ngram_size=1,
        max_length=8, eos_token_id=smollm2_tokenizer.eos_token_id, pad_token_id=smollm2_tokenizer.pad_token_id)
    polluted = HFBackend.from_loaded(model, smollm2_tokenizer, "tiny")
    for gen in (GREEDY, SAMPLED):
        clean = tiny_backend.chat(CONVERSATIONS, gen)
        assert polluted.chat(CONVERSATIONS, gen) == clean
        assert all(c.completion_tokens == gen.max_new_tokens for c in clean)


def test_chat_template_with_generation_prompt(tiny_backend, smollm2_tokenizer):
    conversation = CONVERSATIONS[1]
    (ids,) = tiny_backend.encode_chat([conversation])
    assert ids == smollm2_tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=False)
    assert smollm2_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert tiny_backend.count_tokens(conversation) == len(ids)


@pytest.fixture
def base_backend(tiny_model, tiny_model_dir) -> HFBackend:
    """The tiny model with a tokenizer that has no chat template, like a base model's."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    return HFBackend.from_loaded(tiny_model, tokenizer, "base")


def test_model_without_chat_template_gets_plain_text_prompts(base_backend):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert plain_prompt(conversation) == "System: Be brief.\n\nUser: 2+2?\n\nAssistant:"
    assert base_backend.encode_chat([conversation]) == [base_backend.tokenizer(plain_prompt(conversation))["input_ids"]]
    (completion,) = base_backend.chat([conversation], GREEDY.model_copy(update=dict(max_new_tokens=3)))
    assert completion.prompt_tokens == base_backend.count_tokens(conversation)
    assert completion.completion_tokens == 3


def test_plain_text_completion_ends_at_the_next_turn_marker(base_backend):
    tokenizer = base_backend.tokenizer
    prompts = base_backend.encode_chat(CONVERSATIONS)
    expected = reference_greedy(base_backend.model, prompts[0], GREEDY.max_new_tokens)
    # pretend that what the model writes at steps 5 and 6 is the start of a new user turn
    base_backend.prompts.turn_end = marker = tokenizer.decode(expected[4:6], skip_special_tokens=True)
    assert marker.strip()
    end = next(k for k in range(1, len(expected) + 1) if marker in tokenizer.decode(expected[:k]))
    batch = base_backend.chat(CONVERSATIONS, GREEDY)
    assert batch[0].completion_tokens == end <= 6
    assert batch[0].text == tokenizer.decode(expected[:end]).split(marker)[0]
    assert batch[0].finish_reason == "stop"
    assert batch == [base_backend.chat([conversation], GREEDY)[0] for conversation in CONVERSATIONS]


def test_empty_batch(tiny_backend):
    assert tiny_backend.chat([], GREEDY) == []


def test_device_and_dtype_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda"
        assert pick_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    else:
        with pytest.raises(UserError, match="CUDA"):
            pick_device("cuda:0")


def hf_backend(*overrides) -> HFBackend:
    """An hf backend built as a run builds it, from conf/backend/hf.yaml and a model preset with `overrides`."""
    from mascompare.app import compose_config
    from mascompare.settings import HFSettings, ModelSettings

    cfg = compose_config("backend=hf", *overrides)
    return HFBackend(HFSettings.of(cfg.backend, "backend"), ModelSettings.of(cfg.model, "model"))


def test_backend_from_config_loads_a_model_directory(tiny_model_dir):
    model = (f"model.path={tiny_model_dir}", "model.name=tiny")
    backend = hf_backend(*model, "backend.device=cpu", "backend.dtype=bfloat16")
    assert (backend.name, backend.model_name, backend.device) == ("hf", "tiny", torch.device("cpu"))
    assert backend.dtype == backend.model.dtype == torch.bfloat16
    assert isinstance(backend, LatentBackend)
    assert backend.load_seconds > 0
    completions = backend.chat(CONVERSATIONS[:2], GREEDY.model_copy(update=dict(max_new_tokens=4)))
    assert [c.completion_tokens for c in completions] == [4, 4]

    default = hf_backend(*model)
    expected = torch.float32 if default.device.type != "cuda" else torch.bfloat16
    assert default.dtype == expected


def test_unloadable_model_directory_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(UserError, match="Could not load model 'broken'"):
        hf_backend(f"model.path={tmp_path}", "model.name=broken", "backend.device=cpu")


NO_THINKING = "<think>\n\n</think>\n\n"  # what Qwen3's template adds with enable_thinking=false


@pytest.fixture
def switch_tokenizer(smollm2_tokenizer):
    """The SmolLM2 tokenizer with a chat template that has Qwen3's thinking switch."""
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template += ("{% if add_generation_prompt and enable_thinking is defined and not enable_thinking %}"
                                + NO_THINKING + "{% endif %}")
    return tokenizer


def test_chat_template_kwargs_reach_every_prompt(tiny_model, switch_tokenizer):
    switched = HFBackend.from_loaded(tiny_model, switch_tokenizer, "tiny", "cpu", {"enable_thinking": False})
    default = HFBackend.from_loaded(tiny_model, switch_tokenizer, "tiny", "cpu")
    (ids,) = switched.encode_chat(CONVERSATIONS[1:2])
    (plain,) = default.encode_chat(CONVERSATIONS[1:2])
    assert switch_tokenizer.decode(ids).endswith("<|im_start|>assistant\n" + NO_THINKING)
    assert ids[:len(plain)] == plain and len(ids) > len(plain)
    (completion,) = switched.chat(CONVERSATIONS[1:2], GREEDY.model_copy(update=dict(max_new_tokens=2)))
    assert completion.prompt_tokens == len(ids) == switched.count_tokens(CONVERSATIONS[1])


def test_chat_template_kwargs_must_be_a_mapping(tiny_model_dir):
    with pytest.raises(UserError, match="model.chat_template_kwargs must be a mapping"):
        hf_backend(f"model.path={tiny_model_dir}", "model.chat_template_kwargs='enable_thinking: false'")


@pytest.mark.parametrize("method, dry_run", [
    ("baseline", False), ("text_mas", False), ("latent_mas", False), ("pruned_mas", False),
    ("baseline", True), ("text_mas", True), ("pruned_mas", True),
])
def test_chat_template_kwargs_apply_to_every_method_and_the_dry_run(method, dry_run, tiny_model_dir, tmp_path,
                                                                    monkeypatch):
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from mascompare.app import compose_config
    from mascompare.runner import execute

    seen = []
    original = PreTrainedTokenizerBase.apply_chat_template

    def recording(self, conversation, *args, **kwargs):
        seen.append(kwargs.get("enable_thinking"))
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", recording)
    pruned = ["method.rounds=1", "method.calibration.size=2", "method.calibration.iterations=1",
              "method.calibration.batch_size=1"] if method == "pruned_mas" else []  # calibration prompts too
    cfg = compose_config(f"method={method}", "task=arith", "task.limit=2", f"model.path={tiny_model_dir}",
                         "model.name=tiny", "model.chat_template_kwargs={enable_thinking: false}",
                         "generation.max_new_tokens=2", "run.progress=false", f"run.output_root={tmp_path}",
                         f"run.dry_run={str(dry_run).lower()}", *pruned)
    execute(cfg, tmp_path / "run")
    assert len(seen) >= 2 and set(seen) == {False}


class OldCacheName(torch.nn.Module):
    """A model whose forward still calls its cache `past_key_values`, as transformers before 5.24 does."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config, self.generation_config = model.config, model.generation_config

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                past_key_values=None, use_cache=None, logits_to_keep=0):
        return self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          position_ids=position_ids, cache=past_key_values, use_cache=use_cache,
                          logits_to_keep=logits_to_keep)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    @property
    def dtype(self):
        return self.inner.dtype


def test_the_cache_argument_follows_the_installed_transformers(tiny_model, smollm2_tokenizer):
    current = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu")
    older = HFBackend.from_loaded(OldCacheName(tiny_model), smollm2_tokenizer, "tiny", "cpu")
    renamed = "cache" in inspect.signature(tiny_model.forward).parameters  # transformers 5.24 and later
    assert (current.steps.cache_argument, older.steps.cache_argument) == ("cache" if renamed else "past_key_values",
                                                              "past_key_values")
    prompts = current.encode_chat(CONVERSATIONS[:3])
    results = []
    for backend in (current, older):
        state = backend.new_cache(3)
        backend.prefill(state, prompts)
        _, logits = backend.prefill(state, prompts)  # reads what the first segment left in the cache
        results.append((state.cache.get_seq_length(), logits))
    assert results[0][0] == results[1][0] == 2 * max(len(p) for p in prompts)
    torch.testing.assert_close(results[0][1], results[1][1])


def test_a_prompt_beyond_the_context_window_fails_its_own_row(tiny_model, smollm2_tokenizer):
    """The tiny model has 4096 positions: a 4,031-token prompt fits with 4 tokens to generate, not with 100."""
    backend = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu")
    assert backend.context_window == 4096
    gen = decoding(max_new_tokens=100)
    long = [{"role": "user", "content": "word " * 4000}]
    completions = backend.chat([CONVERSATIONS[1], long, CONVERSATIONS[0]], gen.model_copy(update=dict(max_new_tokens=4)))
    assert [c.error for c in completions] == [None, None, None]  # fits with 4 new tokens
    completions = backend.chat([CONVERSATIONS[1], long, CONVERSATIONS[0]], gen)
    assert completions[0].error is None and completions[2].error is None
    assert completions[1].error.startswith("ContextWindowExceeded: the prompt has 4,031 tokens")
    assert "context window of 4,096 positions" in completions[1].error
    # the rows that fit run as they would alone
    assert texts(completions[::2]) == texts(backend.chat([CONVERSATIONS[1], CONVERSATIONS[0]], gen))


def test_a_huge_text_is_refused_before_it_is_tokenized(tiny_backend, monkeypatch):
    huge = [{"role": "user", "content": "x" * (tiny_backend.prompts.max_chars + 1)}]
    calls = []
    monkeypatch.setattr(tiny_backend, "encode_chat", lambda cs: calls.append(cs) or [[1] * 5 for _ in cs])
    (completion,) = tiny_backend.chat([huge], GREEDY)
    assert "characters" in completion.error and "more than 4,096 tokens" in completion.error
    assert calls == [[]]  # nothing was tokenized
    monkeypatch.undo()
    with pytest.raises(ContextWindowExceeded):  # the latent path, which tokenizes through encode_chat
        tiny_backend.encode_chat([huge])


def test_latent_prefill_beyond_the_window_is_refused(tiny_backend):
    state = tiny_backend.new_cache(1)
    tiny_backend.prefill(state, [[5] * 3000])
    with pytest.raises(ContextWindowExceeded, match="4,097 positions"):
        tiny_backend.prefill(state, [[5] * 1097])


def test_the_stop_rule_names_why_a_sequence_ended():
    def ends_turn(tokens):  # a turn marker spelled by two tokens
        return tokens[-2:] == [7, 8]

    rule = StopRule(frozenset({2}), max_new_tokens=4, ends_turn=ends_turn)
    assert [rule.finish_reason(tokens) for tokens in ([5], [5, 2], [7, 8], [5, 6, 7, 9], [5, 6, 7, 2])] == \
        [None, "eos", "stop", "length", "eos"]
    assert StopRule(frozenset({2}), max_new_tokens=4).finish_reason([5, 7, 8]) is None  # a chat template: no marker


def test_environment_is_what_run_json_records_of_the_backend(tiny_model_dir):
    from mascompare.environment import describe

    backend = hf_backend(f"model.path={tiny_model_dir}", "model.name=tiny", "backend.device=cpu",
                         "backend.dtype=float32")
    recorded = backend.environment()
    assert recorded == {key: value for key, value in describe(backend, []).items() if key in recorded}
    assert (recorded["backend"], recorded["device"], recorded["dtype"]) == ("hf", "cpu", "float32")
    assert recorded["model"]["path"] == str(tiny_model_dir) and recorded["model"]["weights_index_sha256"]
    assert recorded["torch"]["version"] == torch.__version__
