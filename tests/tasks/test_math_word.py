import pytest

from helpers import task_with
from mascompare.errors import UserError
from mascompare.tasks.math_word import AIME2024, AIME2025, SVAMP, MultiArith

SVAMP_ROW = {"ID": "chal-1",
             "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
             "Question": "How much do you have to pay to buy each pack?", "Equation": "( 76.0 - 25.0 )",
             "Answer": 51.0, "Type": "Subtraction"}
MULTIARITH_ROW = {"question": " For Halloween Debby and her sister combined the candy they received. Debby had 32 "
                              "pieces of candy while her sister had 42. If they ate 35 pieces the first night, how "
                              "many pieces do they have left?", "final_ans": "39"}
AIME_ROW = {"id": 60, "problem": "Find the number of ...", "answer": "033", "solution": "...", "year": "2024"}


def load(cls, rows, monkeypatch, **keys):
    monkeypatch.setattr(cls, "hub_rows", lambda self: rows)
    task = task_with(cls.name, **keys)
    assert type(task) is cls
    return task, task.samples()


def test_svamp_joins_story_and_question(monkeypatch):
    task, [sample] = load(SVAMP, [SVAMP_ROW], monkeypatch)
    assert sample.id == "svamp-test-0000" and sample.target == "51"  # 51.0 in the dataset
    assert sample.question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each "
                               "pack How much do you have to pay to buy each pack?")
    assert sample.metadata == {"index": 0, "source": "ChilleD/SVAMP"}
    _, [train] = load(SVAMP, [SVAMP_ROW], monkeypatch, split="train")
    assert train.id == "svamp-train-0000"


def test_multiarith(monkeypatch):
    task, [sample] = load(MultiArith, [MULTIARITH_ROW], monkeypatch)
    assert sample.question.startswith("For Halloween") and sample.target == "39"


@pytest.mark.parametrize("cls, name", [(AIME2024, "aime2024"), (AIME2025, "aime2025")])
def test_aime_targets_are_integers(monkeypatch, cls, name):
    task, [sample] = load(cls, [AIME_ROW], monkeypatch)
    assert (sample.id, sample.target) == (f"{name}-train-0000", "33")
    assert "integer from 0 to 999" in task.answer_instruction()


def test_an_answer_that_is_not_a_number_is_reported(monkeypatch):
    with pytest.raises(UserError, match=r"SVAMP row 0 has the answer 'many', not one number"):
        load(SVAMP, [{**SVAMP_ROW, "Answer": "many"}], monkeypatch)


def test_limit_and_split_checks(monkeypatch):
    _, samples = load(MultiArith, [MULTIARITH_ROW] * 5, monkeypatch, limit=2)
    assert [s.id for s in samples] == ["multiarith-test-0000", "multiarith-test-0001"]
    with pytest.raises(UserError, match="task.split must be one of test, train, got 'validation'"):
        task_with("svamp", split="validation")
    with pytest.raises(UserError, match="task.limit must be a non-negative integer or null"):
        task_with("aime2024", limit=-1)


# (model output, target, right under the shared numeric scorer) for SVAMP / MultiArith answers
NUMERIC = [
    (r"So you pay 76 - 25 = 51 dollars. \boxed{51}", "51", True),
    (r"\boxed{51.0}", "51", True),  # the reference's string match says 51.0 != 51
    (r"\boxed{\$51}", "51", True),
    (r"\boxed{51 \text{ dollars}}", "51", True),
    (r"\boxed{1,080}", "1080", True),  # the reference reads "1"
    (r"\boxed{\frac{1}{2}}", "0.5", True),  # the reference cuts at the inner brace
    (r"\boxed{x = 39}", "39", True),
    ("They have 74 - 35 = 39 pieces left. The answer is 39.", "39", True),
    ("#### 39", "39", True),
    ("The answer is 39 pieces.", "39", True),
    (r"\boxed{40}", "39", False),
    ("The answer is 3.9", "39", False),
    ("I am not sure.", "39", False),
]


@pytest.mark.parametrize("text, target, right", NUMERIC)
def test_numeric_answers(text, target, right):
    task = task_with("svamp")
    extraction = task.extract(text)
    assert task.score(extraction.strict, target) is right
    assert task.score(extraction.flexible, target) is right


def test_truncated_reasoning_has_no_strict_answer():
    # a thinking trace cut off by max_new_tokens: the reference scores its last number as the answer
    extraction = task_with("svamp").extract("<think>First 32 + 42 = 74, then 74 - 3")
    assert extraction.strict is None and extraction.flexible == "3"


# (model output, AIME target, right): AIME compares integers exactly
AIME = [
    (r"\boxed{33}", "33", True),
    (r"\boxed{033}", "33", True),
    (r"\boxed{33.0}", "33", True),
    ("The final answer is 33.", "33", True),
    (r"\boxed{33.00000001}", "33", False),  # within the shared scorer's tolerance, still not the integer
    (r"\boxed{33.5}", "33", False),
    (r"\boxed{\frac{66}{2}}", "33", True),
    (r"\boxed{3, 3}", "33", False),
    (r"\boxed{}", "33", False),
    ("", "33", False),
]


@pytest.mark.parametrize("text, target, right", AIME)
def test_aime_answers(text, target, right):
    task = task_with("aime2025")
    assert task.score(task.extract(text).strict, target) is right
