"""Arith: self-authored synthetic arithmetic word problems in five difficulty levels.

The embedded CPU model scores near zero on GSM8K; these levels give method comparisons a
measurable accuracy signal on any machine:

1. single-digit addition ("What is 3 + 4?")
2. one-step word problem with single-digit numbers
3. one-step addition or subtraction word problem with two-digit numbers
4. two-step word problem
5. multi-step word problem with multiplication

Item `index` of `level` depends only on (seed, level, index): its random generator is seeded
from those three alone, so changing `limit`, `levels` or `size_per_level` never changes an item.
Samples are interleaved by index (L1-0, L2-0, ..., L1-1, ...) so that any limit keeps the
levels balanced. Every answer is a non-negative integer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from typing import Annotated

from pydantic import field_validator

from mascompare.errors import UserError
from mascompare.identity import short_hash
from mascompare.settings import NonNegativeInt, wanted
from mascompare.tasks.base import CalibrationPool, Sample, Task, TaskSettings
from mascompare.tasks.extract import NumericAnswers

LEVELS = (1, 2, 3, 4, 5)

NAMES = [
    ("Tom", "He"), ("Maya", "She"), ("Ravi", "He"), ("Lena", "She"), ("Omar", "He"), ("Sofia", "She"),
    ("Kenji", "He"), ("Amara", "She"), ("Diego", "He"), ("Priya", "She"), ("Felix", "He"), ("Zoe", "She"),
    ("Tariq", "He"), ("Ingrid", "She"), ("Mateo", "He"), ("Hana", "She"), ("Kwame", "He"), ("Elif", "She"),
]
THINGS = [
    "apples", "marbles", "stickers", "pencils", "books", "cookies", "seashells", "stamps", "coins",
    "balloons", "trading cards", "beads", "crayons", "oranges", "toy cars", "postcards", "buttons", "acorns",
]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets", "crates", "tins"]
GAINS = [
    "buys {n} more", "finds {n} more", "gets {n} more from a friend", "picks up {n} more",
    "wins {n} more at the fair", "is given {n} more", "receives {n} more as a gift",
]
LOSSES = [
    "gives {n} to a friend", "loses {n}", "sells {n}", "gives away {n}", "donates {n} to the school",
    "trades away {n}",
]

Problem = tuple[str, str]  # (question, expression whose value is the answer)


LEVELS_WANTED = "a non-empty list of levels from 1 to 5"


class ArithSettings(TaskSettings):
    seed: Annotated[int, wanted("an integer")]  # item (level, index) depends only on seed, level and index
    levels: Annotated[list[int], wanted(LEVELS_WANTED, min_length=1)]
    size_per_level: NonNegativeInt

    @field_validator("levels", mode="before")
    @classmethod
    def one_level_is_a_list(cls, value):
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("levels")
    @classmethod
    def known_levels(cls, levels: list[int]) -> list[int]:
        if any(level not in LEVELS for level in levels):
            raise ValueError(f"task.levels must be {LEVELS_WANTED}, got {levels!r}.")
        return sorted(set(levels))


class Arith(NumericAnswers, Task):
    name = "arith"
    Settings = ArithSettings
    default_calibration_split = "seed"

    def __init__(self, settings: ArithSettings):
        super().__init__(settings)
        self.seed, self.levels, self.size_per_level = settings.seed, settings.levels, settings.size_per_level

    def load(self, limit: int | None) -> list[Sample]:
        order = [(level, index) for index in range(self.size_per_level) for level in self.levels]
        return [self.item(level, index) for level, index in order[:limit]]

    def item(self, level: int, index: int) -> Sample:
        rng = random.Random(f"mascompare-arith/{self.seed}/{level}/{index}")
        question, expression = rng.choice(TEMPLATES[level])(rng)
        answer = _evaluate(expression)
        return Sample(
            id=f"arith-L{level}-{index:04d}",
            question=question,
            target=str(answer),
            metadata={"level": level, "expression": expression},
        )

    def calibration_pool(self, split: str, size: int, seed: int | None, avoid: set[str]) -> CalibrationPool:
        """`seed`: items generated with another seed (method.calibration.seed; null: task.seed + 1) at the same
        levels; the few that also occur among the evaluated questions (single-digit sums recur) are skipped."""
        if split != "seed":
            return super().calibration_pool(split, size, seed, avoid)
        seed = seed if seed is not None else self.seed + 1
        if seed == self.seed:
            raise UserError("method.calibration.seed must differ from task.seed, or the questions would repeat.")
        other = Arith(self.settings.model_copy(update={"seed": seed,
                                                        "size_per_level": 4 * math.ceil(size / len(self.levels)) + 8}))
        pool = [s for s in other.load(None) if short_hash(s.question) not in avoid][:size]
        return CalibrationPool(pool, f"arith items generated with seed {seed} (levels {self.levels}), evaluated "
                                     "questions skipped", "seed")


def _evaluate(expression: str) -> int:
    """Value of a space-separated expression of integers, +, - and * (with * binding tighter)."""
    total = 0
    for term in expression.replace(" - ", " + -").split(" + "):
        product = 1
        for factor in term.split(" * "):
            product *= int(factor)
        total += product
    return total


# --- templates: each takes the item's generator and returns (question, expression) ---------


def _l1(rng: random.Random) -> Problem:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    phrasing = rng.choice(["What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}. What is the sum?"])
    return phrasing.format(a=a, b=b), f"{a} + {b}"


def _gain(rng: random.Random, low: int, high: int) -> Problem:
    (name, pronoun), thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(low, high), rng.randint(low, high)
    gain = rng.choice(GAINS).format(n=b)
    phrasing = rng.choice([
        f"{name} has {a} {thing} and {gain}. How many {thing} does {name} have now?",
        f"{name} has {a} {thing}. {pronoun} {gain}. How many {thing} does {name} have now?",
    ])
    return phrasing, f"{a} + {b}"


def _loss(rng: random.Random, low: int, high: int) -> Problem:
    (name, pronoun), thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = sorted(rng.sample(range(low, high + 1), 2), reverse=True)
    loss = rng.choice(LOSSES).format(n=b)
    phrasing = rng.choice([
        f"{name} has {a} {thing} and {loss}. How many {thing} does {name} have left?",
        f"{name} has {a} {thing}. {pronoun} {loss}. How many {thing} does {name} have left?",
    ])
    return phrasing, f"{a} - {b}"


def _together(rng: random.Random, low: int, high: int) -> Problem:
    (first, _), (second, _) = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    a, b = rng.randint(low, high), rng.randint(low, high)
    question = f"{first} has {a} {thing} and {second} has {b} {thing}. How many {thing} do they have together?"
    return question, f"{a} + {b}"


def _more_than(rng: random.Random, low: int, high: int) -> Problem:
    (first, _), (second, _) = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    a, b = sorted(rng.sample(range(low, high + 1), 2), reverse=True)
    question = (
        f"{first} has {a} {thing} and {second} has {b} {thing}. How many more {thing} does {first} have than {second}?"
    )
    return question, f"{a} - {b}"


def _one_step(low: int, high: int) -> list[Callable[[random.Random], Problem]]:
    return [partial(template, low=low, high=high) for template in (_gain, _loss, _together, _more_than)]


def _gain_then_loss(rng: random.Random) -> Problem:
    (name, pronoun), thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(10, 60), rng.randint(2, 30)
    c = rng.randint(2, a + b)
    gain, loss = rng.choice(GAINS).format(n=b), rng.choice(LOSSES).format(n=c)
    question = f"{name} has {a} {thing}. {pronoun} {gain} and then {loss}. How many {thing} does {name} have now?"
    return question, f"{a} + {b} - {c}"


def _loss_then_gain(rng: random.Random) -> Problem:
    (name, pronoun), thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(10, 60)
    b, c = rng.randint(2, a), rng.randint(2, 30)
    loss, gain = rng.choice(LOSSES).format(n=b), rng.choice(GAINS).format(n=c)
    question = f"{name} has {a} {thing}. {pronoun} {loss} and then {gain}. How many {thing} does {name} have now?"
    return question, f"{a} - {b} + {c}"


def _three_people(rng: random.Random) -> Problem:
    (first, _), (second, _), (third, _) = rng.sample(NAMES, 3)
    thing = rng.choice(THINGS)
    a, b, c = (rng.randint(5, 40) for _ in range(3))
    return (
        f"{first} has {a} {thing}, {second} has {b} and {third} has {c}. "
        f"How many {thing} do the three of them have altogether?",
        f"{a} + {b} + {c}",
    )


def _compared(rng: random.Random) -> Problem:
    (first, _), (second, _) = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    a = rng.randint(10, 50)
    more = rng.random() < 0.5
    b = rng.randint(2, 20) if more else rng.randint(2, a - 1)
    question = (
        f"{first} has {a} {thing}. {second} has {b} {'more' if more else 'fewer'} {thing} than {first}. "
        f"How many {thing} do they have together?"
    )
    return question, f"{a} + {a} {'+' if more else '-'} {b}"


def _containers_then_change(rng: random.Random) -> Problem:
    (name, pronoun), thing, container = rng.choice(NAMES), rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    c = rng.randint(1, a * b)
    d = rng.randint(2, 20)
    loss, gain = rng.choice(LOSSES).format(n=c), rng.choice(GAINS).format(n=d)
    return (
        f"{name} has {a} {container} of {thing} with {b} {thing} in each. {pronoun} {loss} and then {gain}. "
        f"How many {thing} does {name} have now?",
        f"{a} * {b} - {c} + {d}",
    )


def _two_packers(rng: random.Random) -> Problem:
    (first, _), (second, _) = rng.sample(NAMES, 2)
    thing, container = rng.choice(THINGS), rng.choice(CONTAINERS)
    a, b, c, d = rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 9), rng.randint(2, 12)
    return (
        f"{first} fills {a} {container} with {b} {thing} each, "
        f"and {second} fills {c} {container} with {d} {thing} each. "
        f"How many {thing} did they pack in total?",
        f"{a} * {b} + {c} * {d}",
    )


def _change(rng: random.Random) -> Problem:
    (name, pronoun), thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    bill = next(note for note in (20, 50, 100) if note >= a * b)
    return (
        f"{name} buys {a} {thing} for {b} dollars each and pays with a {bill}-dollar bill. "
        f"How many dollars of change does {pronoun.lower()} get back?",
        f"{bill} - {a} * {b}",
    )


def _reading(rng: random.Random) -> Problem:
    name, _ = rng.choice(NAMES)
    a, b, c, d = rng.randint(5, 30), rng.randint(2, 7), rng.randint(5, 30), rng.randint(2, 7)
    return (
        f"{name} reads {a} pages a day for {b} days and then {c} pages a day for {d} more days. "
        f"How many pages does {name} read in all?",
        f"{a} * {b} + {c} * {d}",
    )


TEMPLATES: dict[int, list[Callable[[random.Random], Problem]]] = {
    1: [_l1],
    2: _one_step(1, 9),
    3: _one_step(10, 99),
    4: [_gain_then_loss, _loss_then_gain, _three_people, _compared],
    5: [_containers_then_change, _two_packers, _change, _reading],
}
