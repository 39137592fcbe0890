import json
import re
from pathlib import Path

import pytest

from helpers import task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import build_task, task_settings
from mascompare.tasks.custom import CustomJSONL

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "tasks" / "example_custom.jsonl"
LINE_FORMAT = "each line must be a JSON object with 'question' and 'answer'."


def make(path, **keys) -> CustomJSONL:
    return task_with("custom", path=str(path), **keys)


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loads_the_shipped_example():
    samples = make(EXAMPLE).samples()
    assert len(samples) == 5
    assert samples[0].id == "bakery-muffins"
    assert samples[0].metadata == {"topic": "multiplication"}
    assert samples[-1].target == "1055"  # "1,055" in the file, normalised for numeric scoring
    assert len({s.id for s in samples}) == 5


def test_relative_path_resolves_against_the_working_directory(monkeypatch):
    monkeypatch.chdir(ROOT)
    task = make("tasks/example_custom.jsonl")
    assert task.path == EXAMPLE
    assert len(task.samples()) == 5


def test_config_file_with_the_example_path_builds_the_task(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert compose_config("task=custom").task.path is None
    cfg = compose_config("task=custom", "task.path=tasks/example_custom.jsonl").task
    assert cfg.name == "custom" and cfg.limit is None
    assert len(build_task(task_settings(cfg)).samples()) == 5


def test_ids_default_to_stem_and_index_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, '{"question": "1+1?", "answer": 2}', "", '{"question": "2+2?", "answer": "4", "id": 9}')
    samples = make(path).samples()
    assert [(s.id, s.target) for s in samples] == [("mine-0000", "2"), ("9", "4")]


def test_limit(tmp_path):
    path = write(tmp_path, *(json.dumps({"question": f"{i}+0?", "answer": i}) for i in range(6)))
    assert [s.target for s in make(path, limit=3).samples()] == ["0", "1", "2"]
    assert make(path, limit=None).samples() == make(path).samples()
    with pytest.raises(UserError, match=r"got -3\.$"):
        make(path, limit=-3)


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ('{"question": "1+1?", "answer": ', "invalid JSON"),
        ('["1+1?", "2"]', "a JSON list, not an object"),
        ('{"answer": "2"}', "'question' is missing or empty"),
        ('{"question": "  ", "answer": "2"}', "'question' is missing or empty"),
        ('{"question": "1+1?"}', "'answer' is missing or empty"),
        ('{"question": "1+1?", "answer": ""}', "'answer' is missing or empty"),
        ('{"question": "1+1?", "answer": null}', "'answer' is missing or empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = write(tmp_path, '{"question": "1+1?", "answer": "2"}', "", bad_line)
    with pytest.raises(UserError) as error:
        make(path).samples()
    message = str(error.value)
    assert message.startswith(f"{path}:3: ")
    assert problem in message
    assert message.endswith(LINE_FORMAT)


def test_duplicate_id_is_reported(tmp_path):
    path = write(
        tmp_path, '{"id": "a", "question": "1+1?", "answer": 2}', '{"id": "a", "question": "2+2?", "answer": 4}'
    )
    with pytest.raises(UserError, match=r"mine.jsonl:2: id 'a' is already used on line 1"):
        make(path).samples()


def test_numeric_scoring_rejects_text_answers_and_exact_accepts_them(tmp_path):
    path = write(tmp_path, '{"question": "Capital of France?", "answer": "Paris"}')
    with pytest.raises(UserError, match=r"mine.jsonl:1: answer 'Paris' is not a single number; use task.scoring=exact"):
        make(path).samples()
    [sample] = make(path, scoring="exact").samples()
    assert sample.target == "Paris"


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    expected = f"Cannot read the task file '{missing}' (No such file or directory)."
    with pytest.raises(UserError, match=re.escape(expected)):
        make(missing).samples()
    with pytest.raises(UserError, match=re.escape(expected)):  # checked before the run loads anything
        make(missing).check_available()


def test_empty_file_and_missing_path_are_user_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no samples"):
        make(empty).samples()
    with pytest.raises(UserError, match="task=custom needs task.path"):
        task_with("custom", path=None)
    with pytest.raises(UserError, match="task.scoring"):
        make(EXAMPLE, scoring="fuzzy")


def test_numeric_scoring():
    task = make(EXAMPLE)
    assert task.extractor_version == "numeric-3"
    assert "\\boxed{}" in task.answer_instruction()
    assert task.score(task.extract("So there are \\boxed{1,055} books.").strict, "1055")
    assert not task.score(task.extract("So there are 1,056 books.").flexible, "1055")


def test_exact_scoring_ignores_case_and_spacing_and_falls_back_to_the_last_line(tmp_path):
    task = make(EXAMPLE, scoring="exact")
    assert task.extractor_version == "exact-2"
    assert task.score(task.extract("It is \\boxed{\\text{ mount  everest }}").strict, "Mount Everest")
    fallback = task.extract("Let me think.\nThe tallest is\nMount Everest.")
    assert fallback.strict is None and task.score(fallback.flexible, "Mount Everest")
    assert not task.score(task.extract("\\boxed{K2}").strict, "Mount Everest")
