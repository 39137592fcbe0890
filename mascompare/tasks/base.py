"""The task contract: samples, the answer-format instruction, extraction and scoring, and the hooks a task may
offer, each with the default the runner relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from mascompare.errors import UserError
from mascompare.identity import short_hash
from mascompare.settings import NonNegativeInt, Section, Text, wanted

# Where a pruned method's calibration questions come from (method.calibration.split); see `Task.calibration_pool`.
CALIBRATION_SPLITS = ("tail", "train", "seed")


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


class TaskSettings(Section):
    """What every task section has (conf/task/*.yaml, and `offset` from conf/config.yaml)."""

    name: Text
    # How many questions to run: null = all, N >= 0 = the first N (after offset)
    limit: Annotated[int | None, wanted("a non-negative integer or null", ge=0)]
    offset: NonNegativeInt


@dataclass(frozen=True)
class CalibrationPool:
    samples: list[Sample]
    where: str  # in words, for logs and run.json: where the questions come from
    split: str  # tail | train | seed


class Task:
    """Subclass it; the task registry refuses a class that does not. The members with a body are defaults."""

    name: ClassVar[str]  # the registry name, equal to conf/task/<name>.yaml's
    Settings: ClassVar[type[TaskSettings]] = TaskSettings
    extractor_version: str  # bump when extraction changes, so that reports can flag mixed versions
    default_calibration_split: ClassVar[str] = "tail"  # method.calibration.split=auto

    def __init__(self, settings: TaskSettings):
        self.settings = settings

    def load(self, limit: int | None) -> list[Sample]:
        """The first `limit` samples of the configured data (None: all), in the task's order."""
        raise NotImplementedError

    def samples(self) -> list[Sample]:
        """The samples a run evaluates: task.offset skips the first ones (e.g. those a tuning run used), then
        task.limit keeps at most that many; only those are loaded."""
        offset, limit = self.settings.offset, self.settings.limit
        return self.load(None if limit is None else offset + limit)[offset:]

    def answer_instruction(self) -> str:
        """One sentence telling the final agent how to state its answer."""
        raise NotImplementedError

    def extract(self, text: str) -> Extraction:
        raise NotImplementedError

    def score(self, answer: str | None, target: str) -> bool:
        raise NotImplementedError

    def check_available(self) -> None:
        """Raise UserError at once when the data is out of reach (a hub-only task offline, a missing file):
        called before the run imports torch and loads a model."""

    def score_ahead(self, answers: list[tuple[str, str]]) -> None:
        """Prepare the scores of (model output, target) pairs now, e.g. run programs in parallel, so that
        `score` finds them done; safe to call from several threads."""

    def score_details(self, extraction: Extraction, target: str) -> dict | None:
        """How scoring went, kept in the sample's record (code tasks: how each program ended); None if nothing."""
        return None

    def run_info(self) -> dict:
        """What run.json records of the task's scoring (code tasks: the sandbox); {} if nothing."""
        return {}

    def calibration_pool(self, split: str, size: int, seed: int | None, avoid: set[str]) -> CalibrationPool:
        """Up to `size` questions to learn a communication graph on, never among the evaluated ones (`avoid`:
        their question hashes, identity.short_hash). `tail` (the default): the last `size` questions of this
        task's own data, which a run evaluates only when its task.limit reaches them."""
        if split == "train":
            raise UserError(f"method.calibration.split=train needs a train split apart from the evaluated one, but "
                            f"task={self.name} has no named splits; use method.calibration.split=tail.")
        if split == "seed":
            raise UserError("method.calibration.split=seed works only with task=arith; use tail or train.")
        everything = self.load(None)
        pool = everything[-size:]
        return CalibrationPool(pool, f"the last {len(pool)} questions of the {self.name} {self.data_name()} "
                               f"(positions {len(everything) - len(pool)}-{len(everything) - 1}), never evaluated",
                               "tail")

    def data_name(self) -> str:
        """How messages name the data a task reads (e.g. 'test split')."""
        return "task data"


def overlapping(samples: list[Sample], avoid: set[str]) -> list[str]:
    """The ids of samples whose question is among `avoid` (question hashes)."""
    return [s.id for s in samples if short_hash(s.question) in avoid]
