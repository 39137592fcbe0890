import ast
import operator
import re
import subprocess
import sys
from collections import Counter

import pytest

from helpers import task_section, task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import build_task, task_settings
from mascompare.tasks.arith import Arith


def make(**keys) -> Arith:
    return task_with("arith", **keys)


def recompute(expression: str) -> int:
    """An independent evaluator (Python's own parser) for the expressions the generator records."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def value(node):
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](value(node.left), value(node.right))
        assert isinstance(node, ast.Constant) and isinstance(node.value, int)
        return node.value

    return value(ast.parse(expression, mode="eval").body)


def test_same_seed_same_items_and_other_seed_other_items():
    assert make(seed=7, size_per_level=20).samples() == make(seed=7, size_per_level=20).samples()
    assert make(seed=7, size_per_level=20).samples() != make(seed=8, size_per_level=20).samples()


def test_items_are_the_same_in_a_fresh_process():
    section = task_section("arith", seed=3, size_per_level=4)
    code = (
        "from mascompare.tasks.arith import Arith;"
        f"print([s.question for s in Arith(Arith.Settings.of({section!r}, 'task')).samples()])"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    runs = [run.stdout for run in runs]
    assert runs[0] == runs[1] == str([s.question for s in make(seed=3, size_per_level=4).samples()]) + "\n"


def test_an_item_does_not_depend_on_limit_levels_or_size():
    everything = {s.id: s for s in make(size_per_level=30).samples()}
    for other in (
        make(size_per_level=30, limit=17),
        make(size_per_level=10),
        make(size_per_level=30, levels=[4]),
        make(size_per_level=30, levels=[5, 2]),
        make(size_per_level=30, levels=3),
    ):
        samples = other.samples()
        assert samples and all(everything[s.id] == s for s in samples)


def test_order_interleaves_levels_and_limit_takes_a_prefix():
    samples = make(size_per_level=4).samples()
    assert [s.id for s in samples[:6]] == [
        "arith-L1-0000", "arith-L2-0000", "arith-L3-0000", "arith-L4-0000", "arith-L5-0000", "arith-L1-0001",
    ]
    assert make(size_per_level=4, limit=7).samples() == make(size_per_level=4).load(7) == samples[:7]
    assert make(size_per_level=4, offset=5, limit=3).samples() == samples[5:8]  # offset first, then limit
    levels = Counter(s.metadata["level"] for s in make(size_per_level=4, limit=10).samples())
    assert levels == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}


def test_answers_are_correct_and_numbers_come_from_the_question():
    for sample in make(size_per_level=200, seed=11).samples():
        expression = sample.metadata["expression"]
        answer = recompute(expression)
        assert sample.target == str(answer) and answer >= 0, sample
        # Every operand is stated in the question (a "more than" problem states its base once).
        stated = Counter(int(n) for n in re.findall(r"\d+", sample.question))
        used = Counter(int(n) for n in re.findall(r"\d+", expression))
        assert set(used) <= set(stated), sample


def test_levels_have_the_promised_shape():
    by_level = {}
    for sample in make(size_per_level=200).samples():
        by_level.setdefault(sample.metadata["level"], []).append(sample)
    assert sorted(by_level) == [1, 2, 3, 4, 5]
    for level, samples in by_level.items():
        assert len(samples) == 200
        assert all(s.id == f"arith-L{level}-{i:04d}" for i, s in enumerate(samples))
        assert len({s.question for s in samples}) > 30  # varied wording, not one template
    for sample in by_level[1]:
        a, b = map(int, re.findall(r"\d+", sample.question))
        assert 1 <= a <= 9 and 1 <= b <= 9 and sample.target == str(a + b)
    for sample in by_level[2]:
        assert all(1 <= int(n) <= 9 for n in re.findall(r"\d+", sample.question)), sample
        assert sample.metadata["expression"].count(" ") == 2  # one operation
    for sample in by_level[3]:
        assert all(10 <= int(n) <= 99 for n in re.findall(r"\d+", sample.question)), sample
        assert re.fullmatch(r"\d+ [-+] \d+", sample.metadata["expression"])
    for sample in by_level[4]:
        assert sample.metadata["expression"].count(" ") == 4  # two operations
    for sample in by_level[5]:
        assert "*" in sample.metadata["expression"]


def test_word_problems_vary_names_and_objects():
    questions = " ".join(s.question for s in make(levels=[2, 3, 4, 5], size_per_level=100).samples())
    assert len(set(re.findall(r"\b(?:Tom|Maya|Ravi|Lena|Omar|Sofia|Kenji|Amara|Diego|Priya)\b", questions))) >= 8
    assert len(set(re.findall(r"\b(?:apples|marbles|stickers|pencils|books|cookies|stamps|coins)\b", questions))) >= 6


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"levels": [0, 6]}, "task.levels"),
        ({"levels": []}, "task.levels"),
        ({"levels": ["1"]}, "task.levels"),
        ({"size_per_level": -1}, "task.size_per_level"),
        ({"seed": "abc"}, "task.seed"),
        ({"limit": -3}, r"task.limit must be a non-negative integer or null, got -3\."),
    ],
)
def test_bad_config_is_a_user_error(keys, message):
    with pytest.raises(UserError, match=message):
        make(**keys)


def test_config_file_builds_the_task():
    cfg = compose_config("task=arith").task
    assert cfg.name == "arith" and cfg.limit is None
    task = build_task(task_settings(cfg))
    assert isinstance(task, Arith)
    assert len(task.samples()) == 5 * cfg.size_per_level


def test_scoring_uses_the_numeric_extractor():
    task = make()
    sample = task.samples()[0]
    assert task.score(task.extract(f"The answer is {sample.target}.").strict, sample.target)
    assert not task.score(task.extract("The answer is 1000.").strict, sample.target)
    assert task.extractor_version == "numeric-3"
