"""Type and range checks of the shared config sections, before anything loads."""

import os

import pytest

from mascompare.app import compose_config
from mascompare.config_check import check_config, check_output_root
from mascompare.errors import UserError


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
    ("+model.price={input: -0.5, output: 1}", "model.price.input must be a non-negative number (USD per million "
                                              "tokens), got -0.5."),
    ("+model.price={input: 1}", "model.price must be null or {input: X, output: Y}"),
    ("+model.price={input: 1, output: 2, extra: 3}", "model.price must be null or {input: X, output: Y}"),
    ("backend.device=gpu", "backend.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'."),
    ("backend.dtype=int8", "backend.dtype must be one of auto, float32, bfloat16, float16, got 'int8'."),
    ("backend.decode_rows=0", "backend.decode_rows must be an integer of at least 1 or null, got 0."),
    ("backend.decode_rows=2.5", "backend.decode_rows must be an integer of at least 1 or null, got 2.5."),
    ("backend.decode_rows=true", "backend.decode_rows must be an integer of at least 1 or null, got True."),
])
def test_bad_values_are_refused_in_one_sentence(override, message):
    with pytest.raises(UserError) as caught:
        check_config(compose_config("task=arith", override))
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
        check_config(compose_config("model=gpt-4o-mini", override))


def test_the_shipped_presets_pass():
    for overrides in [(), ("model=gpt-5-mini",), ("model=smollm2-135m-server",), ("+model.price={input: 0, output: 0}",),
                      ("generation.temperature=0.7", "generation.seed=0", "run.max_cost_usd=2"),
                      ("backend.decode_rows=4",)]:
        check_config(compose_config(*overrides))


def test_output_root_that_is_a_file_or_under_a_file(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(UserError, match=r"run.output_root=.*/f is a file; set run.output_root to a directory."):
        check_output_root(afile)
    with pytest.raises(UserError, match="lies under .*/f, which is a file"):
        check_output_root(afile / "results")
    check_output_root(tmp_path / "new" / "deeper")  # not there yet: created later
    assert not (tmp_path / "new").exists()


def test_output_root_not_writable_or_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="is not writable"):
        check_output_root(tmp_path)
    monkeypatch.undo()

    class Full:
        f_flag, f_bavail, f_frsize = 0, 10, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Full)
    with pytest.raises(UserError, match="is on a full disk"):
        check_output_root(tmp_path)
