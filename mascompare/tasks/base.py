"""What every task provides: samples, the answer-format instruction, extraction and scoring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mascompare.errors import UserError, is_int_at_least


@dataclass(frozen=True)
class Sample:
    id: str  # stable across runs: resume and paired comparisons key on it
    question: str
    target: str  # the gold answer, already normalised for the task's scorer
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Extraction:
    strict: str | None  # only an explicitly marked answer (\boxed{}, "The answer is", "#### N")
    flexible: str | None  # falls back to the last number in the text


class Task(Protocol):
    name: str
    extractor_version: str  # bump when extraction changes, so reports can flag mixed versions

    def load(self) -> list[Sample]:
        """The samples of the configured split, after the configured limit."""

    def answer_instruction(self) -> str:
        """One sentence telling the final agent how to state its answer."""

    def extract(self, text: str) -> Extraction: ...

    def score(self, answer: str | None, target: str) -> bool: ...


def check_limit(limit) -> int | None:
    """The validated `task.limit`: None keeps every sample, N keeps the first N."""
    if limit is None or is_int_at_least(limit, 0):
        return limit
    raise UserError(f"task.limit must be a non-negative integer or null, got {limit!r}.")
