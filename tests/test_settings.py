"""Every config value typed and checked once (mascompare/settings.py), before anything loads."""

import pytest

from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.settings import validate


@pytest.mark.parametrize("override, message", [
    ("generation.seed=abc", "generation.seed must be an integer from 0 to"),
    ("generation.seed=-1", "generation.seed must be an integer from 0 to"),
    ("generation.temperature=abc", "generation.temperature must be 0 (greedy) or a positive number, got 'abc'."),
    ("generation.top_p=0", "generation.top_p must be a number in (0, 1], got 0."),
    ("generation.top_k=1.5", "generation.top_k must be 0 (off) or a positive integer, got 1.5."),
    ("generation.max_new_tokens=true", "generation.max_new_tokens must be an integer of at least 1, got True."),
    ("run.resume=maybe", "run.resume must be true or false, got 'maybe'."),
    ("run.progress=1", "run.progress must be true or false, got 1."),
    ("run.on_busy=queue", "run.on_busy must be one of stop, wait, got 'queue'."),
    ("run.primary_metric=exact", "run.primary_metric must be one of strict, flexible"),
    ("run.max_cost_usd=-1", "run.max_cost_usd must be a non-negative number of US dollars or null, got -1."),
    ("run.output_root=''", "run.output_root must be a directory path"),
    ("+model.price={input: abc, output: 1}", "model.price.input must be a non-negative number"),
    ("+model.price={input: -0.5, output: 1}", "model.price.input must be a non-negative number, got -0.5."),
    ("+model.price={input: 1}", "model.price must be null or {input: X, output: Y} in USD per million tokens "
                                "(optionally cached_input), each a non-negative number, got {'input': 1}."),
    ("+model.price=3", "model.price must be null or {input: X, output: Y}"),
    ("+model.price={input: 1, output: 2, extra: 3}", "model.price must be null or {input: X, output: Y}"),
    ("backend.device=gpu", "backend.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'."),
    ("backend.dtype=int8", "backend.dtype must be one of auto, float32, bfloat16, float16, got 'int8'."),
    ("backend.decode_rows=0", "backend.decode_rows must be an integer of at least 1 or null, got 0."),
    ("backend.decode_rows=2.5", "backend.decode_rows must be an integer of at least 1 or null, got 2.5."),
    ("backend.decode_rows=true", "backend.decode_rows must be an integer of at least 1 or null, got True."),
])
def test_bad_values_are_refused_in_one_sentence(override, message):
    with pytest.raises(UserError) as caught:
        validate(compose_config("task=arith", override))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("override, message", [
    ("backend.max_concurrency=0", "backend.max_concurrency must be an integer of at least 1, got 0."),
    ("backend.timeout_s=abc", "backend.timeout_s must be a positive number of seconds, got 'abc'."),
    ("backend.token_limit_param=max", "backend.token_limit_param must be one of max_tokens, max_completion_tokens"),
    ("backend.omit_params=temperature", "backend.omit_params must be a list of request parameter names"),
])
def test_openai_backend_values(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config("model=gpt-4o-mini", override))


def test_the_shipped_presets_pass():
    from mascompare.config import group_options

    for overrides in [(), ("model=gpt-5-mini",), ("model=smollm2-135m-server",), ("+model.price={input: 0, output: 0}",),
                      ("generation.temperature=0.7", "generation.seed=0", "run.max_cost_usd=2"),
                      ("backend.decode_rows=4",), ("backend=scripted",)]:
        validate(compose_config(*overrides))
    for method in group_options("method"):
        validate(compose_config(f"method={method}"))
    for task in set(group_options("task")) - {"custom"}:  # custom needs a path
        validate(compose_config(f"task={task}"))
    for model in group_options("model"):
        validate(compose_config(f"model={model}"))


@pytest.mark.parametrize("override, message", [
    ("run.batch_size=0", "run.batch_size must be a positive integer or auto, got 0."),  # the key, not a union member
    ("run.batch_size=most", "run.batch_size must be a positive integer or auto, got 'most'."),
    ("run.repeats=0", "run.repeats must be an integer of at least 1, got 0."),
    ("task.offset=-1", "task.offset must be a non-negative integer, got -1."),
    ("task.levels=[0]", "task.levels must be a non-empty list of levels from 1 to 5, got [0]."),
    ("method.latent_steps=-1", "method.latent_steps must be a non-negative integer, got -1."),
    ("~run.resume", "run.resume is missing; conf/ sets a default for every key, so check that run's preset is "
                    "complete."),
])
def test_every_section_is_checked_by_its_own_schema(override, message):
    overrides = ("task=arith", "method=latent_mas", override)
    with pytest.raises(UserError) as caught:
        validate(compose_config(*overrides))
    assert str(caught.value) == message


def test_the_settings_are_typed_and_frozen():
    settings = validate(compose_config("task=arith", "method=text_mas", "model=gpt-4o-mini"))
    assert (settings.task.name, settings.method.name, settings.backend.name) == ("arith", "text_mas", "openai")
    assert settings.task.levels == [1, 2, 3, 4, 5] and settings.run.batch_size == 8
    assert settings.model.api_id == "gpt-4o-mini" and settings.generation.greedy
    with pytest.raises(Exception, match="frozen"):
        settings.run.batch_size = 4


def test_a_model_is_requested_and_priced_under_its_api_model_else_its_path_else_its_name():
    from mascompare.settings import ModelSettings

    assert ModelSettings.of({"name": "m", "path": "org/m", "api_model": "served"}, "model").api_id == "served"
    assert ModelSettings.of({"name": "m", "path": "org/m"}, "model").api_id == "org/m"
    assert ModelSettings.of({"name": "m"}, "model").api_id == "m"


def test_repeats_of_greedy_answers_are_refused_and_sampled_ones_pass():
    with pytest.raises(UserError, match=r"^run.repeats=3 repeats identical greedy answers; set "
                                        r"generation.temperature > 0 to sample, or run.repeats=1.$"):
        validate(compose_config("task=arith", "run.repeats=3"))
    assert validate(compose_config("task=arith", "run.repeats=3", "generation.temperature=0.5")).run.repeats == 3


def test_an_unknown_backend_is_one_sentence_with_the_choices():
    with pytest.raises(UserError, match=r"^Unknown backend 'vllm'. Valid choices: hf, openai, scripted.$"):
        validate(compose_config("task=arith", "backend.name=vllm"))
