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

import random
from collections.abc import Callable
from functools import partial

from mascompare.errors import UserError, is_int_at_least
from mascompare.tasks.base import Sample, check_limit
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


class Arith(NumericAnswers):
    name = "arith"

    def __init__(self, cfg):
        self.seed = cfg.get("seed", 0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UserError(f"task.seed must be an integer, got {self.seed!r}.")
        self.levels = _check_levels(cfg.get("levels", list(LEVELS)))
        self.size_per_level = cfg.get("size_per_level", 50)
        if not is_int_at_least(self.size_per_level, 0):
            raise UserError(f"task.size_per_level must be a non-negative integer, got {self.size_per_level!r}.")
        self.limit = check_limit(cfg.get("limit"))

    def load(self) -> list[Sample]:
        order = [(level, index) for index in range(self.size_per_level) for level in self.levels]
        return [self.item(level, index) for level, index in order[: self.limit]]

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


def _check_levels(levels) -> list[int]:
    levels = [levels] if isinstance(levels, int) else list(levels)
    if not levels or any(level not in LEVELS or isinstance(level, bool) for level in levels):
        raise UserError(f"task.levels must be a non-empty list of levels from 1 to 5, got {levels!r}.")
    return sorted(set(levels))


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
