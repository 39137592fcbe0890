"""The fast path's check against the eager path (backend.fast_path_check), on CPU with backend.compile forced on:
a healthy fast path passes; a compiled step that raises or returns a perturbed logit is caught, and the run falls
back to eager with one warning (fallback), stops with one sentence (fail), or runs unchecked (skip)."""

import json
import logging

import pytest
import torch
from transformers import PreTrainedModel
from typer.testing import CliRunner

from conftest import decoding
from mascompare.backends.hf import HFBackend
from mascompare.backends.hf.fast_path_check import DECODE_STEPS, LATENT_STEPS, TOLERANCES, Comparison
from mascompare.cli import app
from mascompare.errors import UserError

CONVERSATIONS = [[{"role": "user", "content": text}] for text in ("Hi", "What is 12 + 30?", "Name a colour.")]
GREEDY = decoding(max_new_tokens=6)
PERTURBED_TOKEN, PERTURBATION = 42, 5.0


def raising_step(**_):
    raise RuntimeError("CUDA graph capture failed")


def perturbing(step):
    """The compiled step, with one logit of every row moved by PERTURBATION."""
    def perturbed(**inputs):
        out = step(**inputs)
        out.logits[:, -1, PERTURBED_TOKEN] += PERTURBATION
        return out
    return perturbed


FAULTS = {"raises": lambda model, config: raising_step,
          "perturbed logit": lambda model, config: perturbing(model.__call__)}


def fast_backend(model, tokenizer, monkeypatch, fault=None, check="fallback") -> HFBackend:
    """The fast path, its steps traced by torch.compile's `eager` backend (cheap: no code generation), or with a
    fault in place of the compiled step."""
    if fault:
        monkeypatch.setattr(model, "get_compiled_call", lambda config: FAULTS[fault](model, config), raising=False)
    backend = HFBackend.from_loaded(model, tokenizer, "tiny", "cpu", compiled=True, fast_path_check=check)
    backend.steps.compile_config.backend = "eager"
    return backend


def test_a_healthy_fast_path_passes_and_stays(tiny_model, smollm2_tokenizer, monkeypatch):
    eager = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu")
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch)
    assert fast.chat(CONVERSATIONS, GREEDY) == eager.chat(CONVERSATIONS, GREEDY)
    record = fast.run_info()["fast_path"]
    assert record["path"] == "fast" and record["passed"] is True and record["reason"] is None
    assert record["check"] == "fallback" and record["dtype"] == "float32" and record["tolerance"] == 1e-2
    assert record["rows"] == 3 and (record["latent_steps"], record["decode_steps"]) == (0, DECODE_STEPS)
    assert 0 <= record["max_abs_diff"] <= 1e-3 and record["decisive_top_token_differences"] == 0
    assert record["seconds"] > 0 and fast.compiled and fast.new_cache(1).static


def test_the_latent_path_checks_latent_steps_too(tiny_model, smollm2_tokenizer, monkeypatch):
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch)
    prompts = fast.encode_chat(CONVERSATIONS)
    state = fast.new_cache(len(prompts))
    fast.prefill(state, prompts)
    record = fast.run_info()["fast_path"]
    assert record["passed"] is True and record["latent_steps"] == LATENT_STEPS and record["rows"] == 3
    assert state.static  # the state made before the check runs on the fast path


@pytest.mark.parametrize("fault, reason", [
    ("raises", "the compiled path raised RuntimeError: CUDA graph capture failed"),
    ("perturbed logit", "the compiled path ran, but its logits differ from the eager path's by up to 5, over the "
                        "tolerance of 0.01"),
])
def test_a_faulty_fast_path_falls_back_to_eager_with_one_warning(fault, reason, tiny_model, smollm2_tokenizer,
                                                                 monkeypatch, caplog):
    expected = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu").chat(CONVERSATIONS, GREEDY)
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch, fault)
    with caplog.at_level(logging.WARNING):
        assert fast.chat(CONVERSATIONS, GREEDY) == expected  # the eager outputs, on the eager path
        assert fast.chat(CONVERSATIONS[:1], GREEDY) == expected[:1]  # checked once: no second warning
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.getMessage() == ("The fast path (backend.compile) failed its check against the eager path, so "
                                    f"this run is eager: {reason}.")
    record = fast.run_info()["fast_path"]
    assert (record["path"], record["passed"], record["reason"]) == ("eager", False, reason)
    assert not fast.compiled and not fast.new_cache(1).static
    if fault == "perturbed logit":
        assert record["max_abs_diff"] == pytest.approx(PERTURBATION, rel=1e-4)


def test_a_latent_state_made_before_a_failed_check_runs_eagerly(tiny_model, smollm2_tokenizer, monkeypatch):
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch, "raises")
    eager = HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", "cpu")
    results = []
    for backend in (fast, eager):
        prompts = backend.encode_chat(CONVERSATIONS)
        state = backend.new_cache(len(prompts))
        hidden, _ = backend.prefill(state, prompts)
        results.append((state.static, *backend.step_embeds(state, hidden)))
    assert results[0][0] is False and fast.run_info()["fast_path"]["latent_steps"] == LATENT_STEPS
    assert torch.equal(results[0][1], results[1][1]) and torch.equal(results[0][2], results[1][2])


def test_fail_stops_with_the_reason(tiny_model, smollm2_tokenizer, monkeypatch):
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch, "perturbed logit", check="fail")
    with pytest.raises(UserError, match=r"^The fast path \(backend.compile\) failed its check against the eager path: "
                                        r"the compiled path ran, but its logits differ .* set "
                                        r"backend.fast_path_check=fallback to run eagerly instead, or "
                                        r"backend.compile=false.$"):
        fast.chat(CONVERSATIONS, GREEDY)


def test_skip_runs_the_fast_path_unchecked(tiny_model, smollm2_tokenizer, monkeypatch):
    fast = fast_backend(tiny_model, smollm2_tokenizer, monkeypatch, "raises", check="skip")
    with pytest.raises(RuntimeError, match="CUDA graph capture failed"):  # the fault reaches the run itself
        fast.chat(CONVERSATIONS, GREEDY)
    assert fast.run_info() == {"fast_path": {"path": "fast", "check": "skip"}}


def test_the_eager_path_records_that_nothing_was_checked(tiny_backend):
    assert tiny_backend.run_info() == {"fast_path": {"path": "eager", "check": None}}


def test_a_different_top_token_counts_only_beyond_eager_margin():
    tolerance = TOLERANCES[torch.bfloat16]
    eager = torch.tensor([[10.0, 9.5, 0.0], [10.0, 8.5, 0.0]])  # margins 0.5 (within) and 1.5 (beyond)
    close_call = Comparison(tolerance)
    close_call.add(eager, torch.tensor([[9.6, 9.9, 0.0], [10.0, 8.5, 0.0]]))
    assert (close_call.top_token_differences, close_call.decisive_differences, close_call.failure()) == (1, 0, None)
    decisive = Comparison(tolerance)
    decisive.add(eager, torch.tensor([[10.0, 9.5, 0.0], [9.4, 9.45, 0.0]]))
    assert decisive.max_abs_diff <= tolerance and decisive.decisive_differences == 1
    assert decisive.failure() == ("its top token differs from the eager path's in 1 of 2 row-steps where eager's top "
                                  "two are more than 1 apart")
    broken = Comparison(tolerance)
    broken.add(eager, torch.full_like(eager, float("nan")))
    broken.add(eager, eager)
    assert broken.failure() == "its logits hold NaN"


# ---- through the command line: the warning in run.log, the record in run.json, the exit status ----------------

def cli_run(tiny_model_dir, tmp_path, *extra):
    args = ["run", "method=baseline", "task=arith", "task.limit=3", f"model.path={tiny_model_dir}", "model.name=tiny",
            "generation.max_new_tokens=4", "run.progress=false", f"run.output_root={tmp_path}", *extra]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def run_dir(root):
    (directory,) = (root / "arith" / "baseline" / "tiny").iterdir()
    return directory


def final_texts(directory) -> list[str]:
    return [json.loads(line)["final_text"] for line in (directory / "samples.jsonl").read_text().splitlines()]


def test_the_cli_falls_back_warns_once_and_records_the_check(tiny_model_dir, tmp_path, monkeypatch):
    assert cli_run(tiny_model_dir, tmp_path / "eager", "backend.compile=false").exit_code == 0
    eager_info = json.loads((run_dir(tmp_path / "eager") / "run.json").read_text())
    assert eager_info["backend_info"] == {"fast_path": {"path": "eager", "check": None}}
    monkeypatch.setattr(PreTrainedModel, "get_compiled_call", lambda self, config: perturbing(self.__call__))
    result = cli_run(tiny_model_dir, tmp_path / "fast", "backend.compile=true")
    assert result.exit_code == 0, result.output
    directory = run_dir(tmp_path / "fast")
    log = (directory / "run.log").read_text().splitlines()
    (warning,) = [line for line in log if "[WARNING]" in line and "fast path" in line]
    assert "failed its check against the eager path, so this run is eager: the compiled path ran, but" in warning
    record = json.loads((directory / "run.json").read_text())["backend_info"]["fast_path"]
    assert (record["path"], record["check"], record["passed"]) == ("eager", "fallback", False)
    assert record["max_abs_diff"] == pytest.approx(PERTURBATION, rel=1e-4) and "differ" in record["reason"]
    assert final_texts(directory) == final_texts(run_dir(tmp_path / "eager"))
    # the knob does not decide the results: the same command with another choice resumes the same run
    assert cli_run(tiny_model_dir, tmp_path / "fast", "backend.compile=true",
                   "backend.fast_path_check=skip").exit_code == 0
    assert run_dir(tmp_path / "fast") == directory


def test_the_cli_fails_with_one_sentence(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(PreTrainedModel, "get_compiled_call", lambda self, config: raising_step)
    result = cli_run(tiny_model_dir, tmp_path, "backend.compile=true", "backend.fast_path_check=fail")
    assert result.exit_code == 2
    assert "The fast path (backend.compile) failed its check against the eager path: the compiled path raised " \
           "RuntimeError: CUDA graph capture failed; set backend.fast_path_check=fallback" in result.output
    assert "Traceback" not in result.output


def test_the_knob_takes_three_choices(tiny_model_dir, tmp_path):
    result = cli_run(tiny_model_dir, tmp_path, "backend.compile=true", "backend.fast_path_check=maybe")
    assert result.exit_code == 2
    assert "backend.fast_path_check must be one of fallback, fail, skip, got 'maybe'." in result.output
