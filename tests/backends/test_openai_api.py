"""The OpenAI-compatible backend's own logic, without a server: settings, requests, usage, retries' timing.

The behaviour against a real server (and its faults) is in tests/integration/test_openai_server.py.
"""

import time
from types import SimpleNamespace
from email.utils import formatdate

import openai
import pytest
from omegaconf import OmegaConf

from conftest import decoding
from helpers import section
from mascompare.backends.base import Completion
from mascompare.backends.openai_api import OPENAI_URL, OpenAIBackend, retry_after
from mascompare.backends.tokens import TokenCounter
from mascompare.errors import UserError
from mascompare.settings import ModelSettings, OpenAISettings

SECRET = "sk-test-0123456789abcdef"
USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def settings(**keys) -> OpenAISettings:
    """backend=openai's preset with `keys` set."""
    return OpenAISettings.of(section("backend", "openai", **keys), "backend")


def model(**keys) -> ModelSettings:
    return ModelSettings.of({"name": "m", **keys}, "model")


def backend(monkeypatch, key=SECRET, base_url="http://127.0.0.1:9/v1", **keys):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    return OpenAIBackend(settings(base_url=base_url, api_key=None, **keys), model(api_model="served-model"))


def chat_completion(usage: dict | None, text="The answer is 4."):
    data = {"id": "c", "object": "chat.completion", "created": 0, "model": "served-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        data["usage"] = usage
    return openai.types.chat.ChatCompletion.model_validate(data)


def test_openai_itself_needs_a_key(monkeypatch):
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        backend(monkeypatch, key=None, base_url=None)


def test_key_comes_from_config_then_key_file_then_environment(tmp_path, monkeypatch):
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-file\nignored\n")
    assert backend(monkeypatch, api_key_file=str(key_file))._key == "sk-from-file"
    assert backend(monkeypatch)._key == SECRET
    assert OpenAIBackend(settings(api_key="sk-config", api_key_file=str(key_file)), model())._key == "sk-config"


@pytest.mark.parametrize("content, expected", [(None, "backend.api_key_file cannot be read"), ("\n", "is empty")])
def test_a_bad_key_file_is_one_sentence(tmp_path, monkeypatch, content, expected):
    key_file = tmp_path / "openai.key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(UserError, match=expected):
        backend(monkeypatch, api_key_file=str(key_file))


def test_base_url_comes_from_config_then_preset_then_environment(monkeypatch):
    assert backend(monkeypatch).base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    cfg = settings(base_url=None)
    assert OpenAIBackend(cfg, model(endpoint="http://preset:2/v1")).base_url == "http://preset:2/v1"
    assert OpenAIBackend(cfg, model()).base_url == "http://env:1/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert OpenAIBackend(cfg, model()).base_url == OPENAI_URL


@pytest.mark.parametrize("key, value, expected", [
    ("max_concurrency", 0, "backend.max_concurrency must be an integer of at least 1, got 0."),
    ("max_retries", -1, "backend.max_retries must be an integer of at least 0, got -1."),
    ("timeout_s", 0, "backend.timeout_s must be a positive number of seconds, got 0."),
    ("token_limit_param", "max_length",
     "backend.token_limit_param must be one of max_tokens, max_completion_tokens, got 'max_length'."),
])
def test_bad_settings_are_one_sentence(monkeypatch, key, value, expected):
    with pytest.raises(UserError) as error:
        backend(monkeypatch, **{key: value})
    assert str(error.value) == expected


def test_request_carries_the_runs_decoding_settings(monkeypatch):
    b = backend(monkeypatch, token_limit_param="max_completion_tokens")
    messages = [{"role": "user", "content": "hi"}]
    greedy = b.request_params(messages, decoding(max_new_tokens=7, seed=3))
    assert greedy == {"model": "served-model", "messages": messages, "max_completion_tokens": 7,
                      "temperature": 0.0, "seed": 3}
    sampled = b.request_params(messages, decoding(temperature=0.7, top_p=0.9, top_k=20))
    assert sampled["top_p"] == 0.9 and sampled["extra_body"] == {"top_k": 20}


def test_chat_template_kwargs_go_to_the_server_with_every_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    b = OpenAIBackend(settings(base_url="http://127.0.0.1:9/v1"),
                      model(api_model="served-model", chat_template_kwargs={"enable_thinking": False}))
    params = b.request_params([{"role": "user", "content": "hi"}], decoding(temperature=0.7, top_k=20))
    assert params["extra_body"] == {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}
    assert b.counter.template_kwargs == {"enable_thinking": False}


def test_each_request_carries_its_own_calls_seed(monkeypatch):
    b = backend(monkeypatch)
    sent = []
    monkeypatch.setattr(b._client.chat.completions, "create",
                        lambda **params: sent.append(params) or chat_completion(USAGE))
    gen = decoding(temperature=0.7, seed=5)
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    seeds = gen.call_seeds([(f"s{i}", "answerer", 0) for i in range(3)])
    b.chat(conversations, gen, seeds)
    assert sorted((p["messages"][0]["content"], p["seed"]) for p in sent) == \
        [(f"q{i}", seed) for i, seed in enumerate(seeds)]
    assert len(set(seeds)) == 3


@pytest.mark.parametrize("reason, expected", [("stop", "eos"), ("length", "length"), ("content_filter", "stop")])
def test_the_apis_finish_reason_in_our_terms(monkeypatch, reason, expected):
    response = chat_completion(USAGE)
    response.choices[0].finish_reason = reason
    assert backend(monkeypatch).completion(response, []).finish_reason == expected


def test_reasoning_model_preset_sends_only_parameters_the_model_accepts(monkeypatch):
    from mascompare.app import compose_config

    cfg = compose_config("model=gpt-5-mini", "generation.temperature=0.7", "generation.top_p=0.9")
    preset = OmegaConf.to_container(cfg.backend)
    b = backend(monkeypatch, **{k: preset[k] for k in ("token_limit_param", "omit_params")})
    params = b.request_params([{"role": "user", "content": "hi"}], decoding(temperature=0.7, top_p=0.9))
    assert "temperature" not in params and "top_p" not in params and "max_tokens" not in params
    assert params["max_completion_tokens"] == 256


def test_usage_from_the_response_with_cached_and_reasoning_details(monkeypatch):
    usage = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
             "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 12}}
    completion = backend(monkeypatch).completion(chat_completion(usage), [{"role": "user", "content": "q"}])
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("The answer is 4.", 120, 30)
    assert (completion.cached_prompt_tokens, completion.reasoning_tokens, completion.usage_source) == (64, 12, "api")


def test_missing_usage_is_counted_locally_and_marked_estimate(monkeypatch):
    b = backend(monkeypatch)
    messages = [{"role": "user", "content": "x" * 400}]
    completion = b.completion(chat_completion(None, text="y" * 40), messages)
    assert completion.usage_source == "estimate"
    assert completion.completion_tokens == 10 and completion.prompt_tokens == b.counter.count(messages) > 100


def test_a_body_that_is_not_json_is_a_malformed_response(monkeypatch):
    with pytest.raises(ValueError, match="not JSON"):
        backend(monkeypatch).completion("<html>502 Bad Gateway</html>", [])


def test_key_is_masked_in_messages(monkeypatch):
    assert backend(monkeypatch).redact(f"Incorrect API key provided: {SECRET}.") == \
        "Incorrect API key provided: ***."


def test_retry_after_in_seconds_dates_and_milliseconds():
    def response(**headers):
        return SimpleNamespace(headers=headers)

    assert retry_after(response(**{"retry-after": "3"})) == 3.0
    assert retry_after(response(**{"retry-after-ms": "1500"})) == 1.5
    assert 8 <= retry_after(response(**{"retry-after": formatdate(time.time() + 10, usegmt=True)})) <= 10
    assert retry_after(response(**{"retry-after": "soon"})) is None
    assert retry_after(response()) is None


def test_backoff_doubles_with_jitter_up_to_its_ceiling(monkeypatch):
    b = backend(monkeypatch, backoff_s=1.0, max_backoff_s=6.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 6.0), (8, 6.0)]:
        waits = [b.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_character_counter_without_a_tokenizer():
    counter = TokenCounter(None)
    assert counter.count_text("abcdefgh") == 2 and counter.count_text("abcdefghi") == 3
    assert counter.truncate("abcdefghij", 2) == "abcdefgh"
    assert counter.count_text(counter.filler(50)) == 50


def test_tokenizer_counter_matches_the_tokenizer(tiny_model_dir, smollm2_tokenizer):
    counter = TokenCounter(str(tiny_model_dir))
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    expected = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"]
    assert counter.count(messages) == len(expected)
    assert counter.count_text(counter.filler(40)) == 40


def test_api_model_presets_select_the_openai_backend():
    from mascompare.app import compose_config

    cfg = compose_config("model=gpt-4o-mini")
    assert cfg.backend.name == "openai" and cfg.model.api_model == "gpt-4o-mini"
    assert compose_config("model=gpt-5-mini").backend.token_limit_param == "max_completion_tokens"
    assert compose_config().backend.name == "hf"


def test_list_describes_api_presets_by_their_comment():
    from typer.testing import CliRunner

    from mascompare.cli import app

    listed = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert "OpenAI gpt-4o-mini through the OpenAI API" in listed.output and "@package" not in listed.output


def test_a_key_in_the_config_is_masked_in_run_json():
    from mascompare.app import compose_config
    from mascompare.identity import run_identity
    from mascompare.runner import recorded_config

    cfg = compose_config("model=gpt-4o-mini", f"backend.api_key={SECRET}")
    assert recorded_config(cfg)["backend"]["api_key"] == "***"
    assert SECRET not in str(run_identity(cfg))  # nor does it decide where results go


def test_tokenizer_counter_without_a_chat_template_counts_the_hf_backends_plain_prompt(tmp_path, smollm2_tokenizer):
    from copy import deepcopy

    from mascompare.backends.base import plain_prompt

    base = deepcopy(smollm2_tokenizer)
    base.chat_template = None
    base.save_pretrained(tmp_path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert TokenCounter(str(tmp_path)).count(messages) == len(base(plain_prompt(messages))["input_ids"])


def test_stream_gives_the_runner_one_sample_task_per_request_slot(monkeypatch):
    assert backend(monkeypatch, max_concurrency=5).sample_workers == 5
    assert backend(monkeypatch, max_concurrency=5, stream=False).sample_workers is None
    with pytest.raises(UserError, match="backend.stream must be true or false, got 'yes'"):
        backend(monkeypatch, stream="yes")


def test_a_cached_request_is_answered_without_a_call(monkeypatch, tmp_path):
    b = backend(monkeypatch, max_retries=0)  # nothing listens on its port: any call would fail
    b.use_cache(tmp_path / "cache.sqlite")
    assert (tmp_path / "cache.sqlite").is_file()
    messages = [{"role": "user", "content": "2+2?"}]
    greedy, sampled = decoding(max_new_tokens=8), decoding(temperature=0.9, seed=5)
    b.cache.put(b.request_params(messages, greedy), Completion("4", 12, 1, usage_source="api"))
    b.cache.put(b.request_params(messages, sampled, seed=11), Completion("5", 12, 1, usage_source="api"))
    hit = b.complete(messages, greedy)
    assert (hit.text, hit.prompt_tokens, hit.usage_source, hit.error) == ("4", 12, "cache", None)
    seeded = b.complete(messages, sampled, seed=11)  # a sampled call is seeded: its seed decides its answer
    assert (seeded.text, seeded.usage_source) == ("5", "cache")
    other_seed = b.complete(messages, sampled, seed=12)  # another draw: it goes out, and fails here
    assert other_seed.error and "Connection" in other_seed.error
    missed = b.complete(messages, decoding(max_new_tokens=9))
    assert missed.error and b.cache.get(b.request_params(messages, decoding(max_new_tokens=9))) is None
    b.use_cache(None)
    assert b.cache is None
    b.close()
