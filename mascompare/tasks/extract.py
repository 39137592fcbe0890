r"""Answer extraction and comparison, shared by every task so that every method is scored alike.

Numeric answers (`extract_numeric`, `numbers_equal`):

- strict: the explicitly marked answer, by priority of marker kind:
  1. the last non-empty `\boxed{...}` (nested braces allowed); it decides alone, and gives None
     when it does not hold exactly one number (`\boxed{3, 4}` is ambiguous);
  2. else the last "the answer is X" / "final answer is: X" / "final answer: X", or a line
     that starts with "Answer: X" (any case, markdown emphasis allowed), followed by a number in
     the same sentence: the sentence's LAST number, as a careful grader reads "The answer is 5
     apples and 3 pears, so 8" (8), leaving out parenthesised asides ("8 (5 + 3)" is 8) and
     negated numbers ("18, not 20" is 18; "not", "rather than", "instead of");
  3. else the last "#### X" with the number right after the marks.
- flexible: strict when found, else the last number anywhere in the text.

Normalisation decisions (bump EXTRACTOR_VERSION when any of them changes):

- "$", "\$", units and words around a number are ignored: `\boxed{\$18}` and
  `\boxed{18 \text{ apples}}` are 18.
- "%" is ignored as well, so "60%" equals 60: GSM8K-style targets state percentages as bare
  numbers, and a model answering "60%" to "what percent ..." is right. (inspect_ai keeps
  60% and 60 apart; we do not.)
- "1,000", "1{,}000", "1\,000" and "1,\!000" are one thousand, and so is "1 000" grouped by a
  space, a no-break space or a thin space (digits in groups of three after the first);
  "3, 4", "3,4" and "3 4" are two numbers.
- In a marked answer only the part after the last "=" counts: `\boxed{x = 5}` is 5.
- `\frac{a}{b}`, `\dfrac`, `\tfrac` and "a/b" are fractions; mixed numbers ("2 1/2") are not
  understood and read as two numbers.
- Values compare as exact rationals (18.0 == 18, 0.5 == 1/2, -0 == 0) with a relative tolerance
  of 1e-9, which only forgives long decimal expansions such as 33.333333333333336 for 100/3.

Text answers (`extract_text`, `texts_equal`) use the same markers, keep the marked text as it
is, fall back to the last non-empty line, and compare ignoring case and spacing.
"""

from __future__ import annotations

import re
from fractions import Fraction

from mascompare.tasks.base import Extraction

EXTRACTOR_VERSION = "numeric-3"  # 3: the last number of the answer sentence (2: its first)
TEXT_EXTRACTOR_VERSION = "exact-2"

NUMERIC_INSTRUCTION = (
    # No worked example: small models copy an example number ("\\boxed{42}") into their answers.
    "End with the final answer as a single number inside \\boxed{}."
)
TEXT_INSTRUCTION = "When you are done, write only the final answer inside \\boxed{}, for example \\boxed{Paris}."

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"\b(?:final\s+answer\s*(?:is(?![\w'’])\s*:?|:)|answer\s+is(?![\w'’])\s*:?)"
    r"|^[ \t*_#>]*answer[*_]*\s*:",  # a line of its own: "Answer: 18", "**Answer:** 18"
    re.IGNORECASE | re.MULTILINE,
)
_HASHES = re.compile(r"####")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_ASIDE = re.compile(r"\([^()]*\)")

_GROUP_SPACES = " \u00a0\u2009\u202f"  # space, no-break space, thin space, narrow no-break space
# a decimal grouped in threes by commas or by spaces, or a plain one
_DIGITS = (rf"(?:\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d{{1,3}}(?:[{_GROUP_SPACES}]\d{{3}})+(?!\d)|\d+)(?:\.\d+)?"
           r"|\.\d+")
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])[-+])?"  # a sign, unless it is a binary operator as in 9-4
    rf"(?<![\d.])(?:{_DIGITS})(?:/(?:{_DIGITS}))?"
)

_NEGATED = re.compile(rf"\b(?:not|rather\s+than|instead\s+of)\s+(?:{_NUMBER.pattern})", re.IGNORECASE)

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\[dt]?frac(\d)(\d)")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")

_TOLERANCE = Fraction(1, 10**9)


def extract_numeric(text: str) -> Extraction:
    strict = _strict_number(text)
    if strict is not None:
        return Extraction(strict=strict, flexible=strict)
    numbers = _NUMBER.findall(_clean(text))
    return Extraction(strict=None, flexible=_format(_parse(numbers[-1])) if numbers else None)


def normalize_number(s: str) -> str | None:
    """The canonical form ("18", "-3.5", "1/3") of a string holding one number (after any "="), else None."""
    value = _single_value(_clean(s))
    return None if value is None else _format(value)


def numbers_equal(answer: str | None, target: str) -> bool:
    if answer is None:
        return False
    a, b = _single_value(_clean(answer)), _single_value(_clean(target))
    if a is None or b is None:
        return False
    return abs(a - b) <= _TOLERANCE * max(1, abs(b))


def extract_text(text: str) -> Extraction:
    strict = _strict_text(text)
    if strict is not None:
        return Extraction(strict=strict, flexible=strict)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return Extraction(strict=None, flexible=_unwrap_text(lines[-1]) if lines else None)


def texts_equal(answer: str | None, target: str) -> bool:
    return answer is not None and _text_key(answer) == _text_key(target)


def boxed_content(text: str) -> str | None:
    """The content of the last non-empty \\boxed{...}, without LaTeX text macros and markdown emphasis."""
    box = _last_box(text)
    return None if box is None else _unwrap_text(box)


# --- markers -----------------------------------------------------------------------------


def _strict_number(text: str) -> str | None:
    box = _last_box(text)
    if box is not None:
        return normalize_number(box)
    cleaned = _clean(text)
    for match in reversed(list(_ANSWER_IS.finditer(cleaned))):
        value = _last_value(_after_last_equals(_answer_part(_sentence_after(cleaned, match.end()))))
        if value is not None:
            return _format(value)
    for match in reversed(list(_HASHES.finditer(cleaned))):
        number = _NUMBER.match(cleaned[match.end() :].lstrip(" *"))
        if number:
            return _format(_parse(number.group()))
    return None


def _strict_text(text: str) -> str | None:
    box = _last_box(text)
    if box is not None:
        return _unwrap_text(box)
    for marker in (_ANSWER_IS, _HASHES):
        for match in reversed(list(marker.finditer(text))):
            answer = _unwrap_text(_sentence_after(text, match.end()))
            if answer:
                return answer
    return None


def _last_box(text: str) -> str | None:
    """The content of the last non-empty \\boxed{...}, matching nested braces; an unclosed box is skipped."""
    contents = []
    for match in _BOX.finditer(text):
        depth = 1
        for i in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                if text[match.end() : i].strip():
                    contents.append(text[match.end() : i])
                break
    return contents[-1] if contents else None


def _sentence_after(text: str, start: int) -> str:
    """From `start` to the end of the sentence or line; skips leading blank lines ("answer is:\\n\\n18")."""
    rest = text[start:].lstrip()
    end = _SENTENCE_END.search(rest)
    return rest[: end.start()] if end else rest


def _after_last_equals(span: str) -> str:
    return span.rsplit("=", 1)[-1]


# --- numbers -----------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Rewrite LaTeX and typography so that every number is a plain token for _NUMBER."""
    text = text.replace("\u2212", "-").replace("{,}", ",").replace("\\!", "")
    text = _FRAC.sub(_slash_fraction, _LATEX_THOUSANDS.sub("", text))
    return text.replace("\\$", "").replace("$", "")


def _slash_fraction(match: re.Match) -> str:
    numerator, denominator = (match[1] or match[3]).strip(), (match[2] or match[4]).strip()
    # Right after a digit ("3\frac{1}{2}") a space keeps the fraction from reading as 31/2.
    after_digit = match.string[match.start() - 1 : match.start()].isdigit()
    return f"{' ' if after_digit else ''}{numerator}/{denominator}"


def _single_value(span: str) -> Fraction | None:
    numbers = _NUMBER.findall(_after_last_equals(span))
    return _parse(numbers[0]) if len(numbers) == 1 else None


def _answer_part(sentence: str) -> str:
    """The answer sentence without what a grader would not read as the answer: parenthesised asides and
    negated numbers ("not 20", "rather than 20", "instead of 20")."""
    return _NEGATED.sub(" ", _ASIDE.sub(" ", sentence))


def _last_value(span: str) -> Fraction | None:
    numbers = _NUMBER.findall(span)
    return _parse(numbers[-1]) if numbers else None


def _parse(token: str) -> Fraction | None:
    numerator, _, denominator = re.sub(f"[,{_GROUP_SPACES}]", "", token).partition("/")
    value = Fraction(numerator)
    if denominator:
        if Fraction(denominator) == 0:
            return None
        value /= Fraction(denominator)
    return value


def _format(value: Fraction | None) -> str | None:
    """Integers as integers, terminating decimals as decimals, anything else as a reduced fraction."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


# --- text --------------------------------------------------------------------------------


def _unwrap_text(s: str) -> str:
    return _TEXT_MACRO.sub(r"\1", s).strip().strip("*").strip()


def _text_key(s: str) -> str:
    return " ".join(_unwrap_text(s).rstrip(".").split()).casefold()


class NumericAnswers:
    """Answer format, extraction and scoring for every task whose answer is a number."""

    extractor_version = EXTRACTOR_VERSION

    def answer_instruction(self) -> str:
        return NUMERIC_INSTRUCTION

    def extract(self, text: str) -> Extraction:
        return extract_numeric(text)

    def score(self, answer: str | None, target: str) -> bool:
        return numbers_equal(answer, target)
