"""Custom tasks: any JSONL file whose lines are objects with 'question' and 'answer'.

Optional 'id' (string or integer, unique) names a sample; without it the id is
`<file stem>-<index>`. Every other field goes to the sample's metadata. Blank lines are skipped.
Scoring is numeric by default (the same extractor as GSM8K); `task.scoring=exact` compares
text ignoring case and spacing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import field_validator

from mascompare.errors import UserError
from mascompare.settings import choice, wanted
from mascompare.tasks.base import Extraction, Sample, Task, TaskSettings
from mascompare.tasks.extract import (
    EXTRACTOR_VERSION,
    NUMERIC_INSTRUCTION,
    TEXT_EXTRACTOR_VERSION,
    TEXT_INSTRUCTION,
    extract_numeric,
    extract_text,
    normalize_number,
    numbers_equal,
    texts_equal,
)

SCORINGS = ("numeric", "exact")
LINE_FORMAT = "each line must be a JSON object with 'question' and 'answer'."


class CustomSettings(TaskSettings):
    path: Annotated[str | None, wanted("a JSONL file path")]
    scoring: Annotated[Literal[SCORINGS], choice(SCORINGS)]

    @field_validator("path")
    @classmethod
    def given(cls, path: str | None) -> str:
        if not path:
            raise ValueError("task=custom needs task.path, a JSONL file with 'question' and 'answer' on each line "
                             "(for example task.path=tasks/example_custom.jsonl).")
        return path


class CustomJSONL(Task):
    name = "custom"
    Settings = CustomSettings

    def __init__(self, settings: CustomSettings):
        super().__init__(settings)
        # Hydra does not change directory, so a relative path means relative to where the user ran the command.
        self.path = Path.cwd() / Path(settings.path).expanduser()
        self.numeric = settings.scoring == "numeric"
        self.extractor_version = EXTRACTOR_VERSION if self.numeric else TEXT_EXTRACTOR_VERSION

    def check_available(self) -> None:
        """A missing or unreadable file fails before the run imports torch and transformers."""
        try:
            self.path.open("rb").close()
        except OSError as error:
            raise self.unreadable(error) from error

    def unreadable(self, error: OSError) -> UserError:
        return UserError(f"Cannot read the task file '{self.path}' ({error.strerror or error}).")

    def load(self, limit: int | None) -> list[Sample]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise self.unreadable(error) from error
        except UnicodeDecodeError as error:
            raise UserError(f"Cannot read the task file '{self.path}': it is not UTF-8 text.") from error

        samples: list[Sample] = []
        line_of_id: dict[str, int] = {}
        # Split on "\n" only: str.splitlines would also break at U+2028 inside JSON strings.
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                sample = self._parse(line, f"{self.path}:{number}", index=len(samples))
                if sample.id in line_of_id:
                    raise UserError(
                        f"{self.path}:{number}: id {sample.id!r} is already used on line {line_of_id[sample.id]}; "
                        "ids must be unique because results are keyed on them."
                    )
                line_of_id[sample.id] = number
                samples.append(sample)
        if not samples:
            raise UserError(f"The task file '{self.path}' holds no samples; {LINE_FORMAT}")
        return samples[:limit]

    def _parse(self, line: str, where: str, index: int) -> Sample:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: invalid JSON ({error.msg} at column {error.colno}); {LINE_FORMAT}") from error
        if not isinstance(record, dict):
            raise UserError(f"{where}: a JSON {type(record).__name__}, not an object; {LINE_FORMAT}")
        question, answer, sample_id = record.pop("question", None), record.pop("answer", None), record.pop("id", None)
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{where}: 'question' is missing or empty; {LINE_FORMAT}")
        valid_answer = isinstance(answer, (str, int, float)) and not isinstance(answer, bool)
        if not valid_answer or not str(answer).strip():
            raise UserError(f"{where}: 'answer' is missing or empty; {LINE_FORMAT}")
        if sample_id is not None and (not isinstance(sample_id, (str, int)) or isinstance(sample_id, bool)):
            raise UserError(f"{where}: 'id' must be a string or an integer, got {sample_id!r}.")

        target = str(answer).strip()
        if self.numeric:
            target = normalize_number(target)
            if target is None:
                raise UserError(
                    f"{where}: answer {answer!r} is not a single number; use task.scoring=exact for text answers."
                )
        return Sample(
            id=str(sample_id) if sample_id is not None else f"{self.path.stem}-{index:04d}",
            question=question,
            target=target,
            metadata=record,
        )

    def answer_instruction(self) -> str:
        return NUMERIC_INSTRUCTION if self.numeric else TEXT_INSTRUCTION

    def extract(self, text: str) -> Extraction:
        return extract_numeric(text) if self.numeric else extract_text(text)

    def score(self, answer: str | None, target: str) -> bool:
        return numbers_equal(answer, target) if self.numeric else texts_equal(answer, target)
