import pytest

from mascompare.tasks.extract import (
    EXTRACTOR_VERSION,
    extract_numeric,
    extract_text,
    normalize_number,
    numbers_equal,
    texts_equal,
)

# (model output, strict, flexible): formats seen in real model answers.
CASES = [
    # \boxed{}, including nested braces and decorations inside
    (r"So she makes $18 a day. \boxed{18}", "18", "18"),
    (r"\boxed{\frac{1}{2}}", "0.5", "0.5"),
    (r"The probability is $\boxed{\dfrac{3}{8}}$.", "0.375", "0.375"),
    (r"\boxed{\tfrac{2}{3}}", "2/3", "2/3"),
    (r"\boxed{-\frac{3}{4}}", "-0.75", "-0.75"),
    (r"\boxed{1,080}", "1080", "1080"),
    (r"\boxed{1{,}080}", "1080", "1080"),
    (r"\boxed{1,\!080}", "1080", "1080"),
    (r"\boxed{1\,080}", "1080", "1080"),
    (r"\boxed{\$18}", "18", "18"),
    (r"\boxed{18 \text{ apples}}", "18", "18"),
    (r"\boxed{\text{18 dollars}}", "18", "18"),
    (r"\boxed{18.00}", "18", "18"),
    (r"\boxed{x = 5}", "5", "5"),
    (r"\boxed{2 \times 9 = 18}", "18", "18"),
    (r"First \boxed{12}, but wait, that is wrong: \boxed{15}. Done, 3 checks.", "15", "15"),
    (r"\boxed{3, 4}", None, "4"),  # a boxed list is ambiguous
    (r"\boxed{} Let me think: 9 * 2 = 18", None, "18"),  # an empty box (echoed instruction) is no answer
    (r"\boxed{7", None, "7"),  # an unclosed box is skipped
    (r"The answer is \boxed{7", "7", "7"),  # ... but the phrase still marks the answer
    (r"\boxed{3\frac{1}{2}}", None, "0.5"),  # mixed numbers are not understood (never read as 31/2)
    (r"\boxed{5} and later the answer is 6", "5", "5"),  # a box beats the answer phrase
    # "the answer is", in its common spellings
    ("Janet sells 9 eggs at $2 each, so the answer is 18.", "18", "18"),
    ("The answer is: 18 apples", "18", "18"),
    ("the final answer is: $1,000.50.", "1000.5", "1000.5"),
    ("Final Answer: The final answer is 42. I hope it is correct.", "42", "42"),
    ("**Final Answer:** 64", "64", "64"),
    ("The final answer is:\n\n**72**", "72", "72"),
    ("THE ANSWER IS 5", "5", "5"),
    ("The answer is 16 - 3 - 4 = 9 eggs.", "9", "9"),
    ("The answer is 18. Then 3 more steps follow.", "18", "18"),  # flexible keeps a strict answer
    ("The answer is clear. She has 20 left.", None, "20"),  # no number in the answer's sentence
    ("I checked whether the answer is right. So 9 + 1 = 10.", None, "10"),
    ("The answer is 4. Checking again, the answer is 5.", "5", "5"),  # the last one wins
    ("The answer isn't 5, it is 7", None, "7"),
    # GSM8K's own "####" format
    ("16 - 3 - 4 = 9\n9 * 2 = 18\n#### 18", "18", "18"),
    ("#### $1,234", "1234", "1234"),
    ("#### Step 2: add 3", None, "3"),  # a markdown heading, not an answer mark
    # signs, decimals, percent, currency
    ("The temperature drops to -5 degrees.", None, "-5"),
    ("The answer is +5", "5", "5"),
    ("It ends at \u22127.", None, "-7"),  # unicode minus
    ("9-4=5", None, "5"),  # a binary minus is not a sign
    ("The answer is $3.50.", "3.5", "3.5"),
    ("The answer is 18.0", "18", "18"),
    ("The answer is 60%.", "60", "60"),
    (r"So the answer is 25\%.", "25", "25"),
    ("About .5 of it", None, "0.5"),
    # plain text: the last number, trailing period and text after it
    ("She has 3 apples and buys 4 more, so 7 apples.", None, "7"),
    ("Total: 1,000,000 dollars.", None, "1000000"),
    # grouped by spaces, as in many languages and in model output
    ("Total: 1 000 000 dollars.", None, "1000000"),
    ("Total: 1\u2009000\u2009000 dollars.", None, "1000000"),  # thin spaces
    ("Total: 1\u202f250.5 dollars.", None, "1250.5"),  # narrow no-break space
    ("The answer is 12 000.", "12000", "12000"),
    ("\\boxed{1 000}", "1000", "1000"),
    ("The numbers are 3 4", None, "4"),  # not a group of three
    ("Rows of 12 345 678 9", None, "9"),
    # a bare "Answer:" line is a strict marker
    ("Step 1: 3 + 4 = 7\nAnswer: 7", "7", "7"),
    ("Working: 2 * 9 = 18\n**Answer:** 18 dollars\nCheck: 18 / 2 = 9", "18", "18"),
    ("answer: 42", "42", "42"),
    ("My answer: 5 is a guess, so 6", None, "6"),  # mid-line, not a marker
    ("The numbers are 3, 4", None, "4"),  # a list, not 34 thousand
    ("Pick 3,4", None, "4"),
    ("Half of it, 1/2, is left", None, "0.5"),
    ("3/0 is undefined", None, None),
    ("I don't know.", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text, strict, flexible", CASES)
def test_extract_numeric(text, strict, flexible):
    extraction = extract_numeric(text)
    assert (extraction.strict, extraction.flexible) == (strict, flexible)


# (answer sentence, what a careful grader reads): the LAST number of the sentence after the marker, leaving out
# parenthesised asides and negated numbers. Version numeric-2 read the first number (5, 12, 2, ...).
ANSWER_SENTENCES = [
    ("The answer is 5 apples and 3 pears, so 8", "8"),
    ("The answer is 5 apples and 3 pears, so 8 fruits in all.", "8"),
    ("So the answer is 2 boxes of 12, that is 24 eggs.", "24"),
    ("The answer is 3 + 5 = 8 fruits in total.", "8"),
    ("The answer is 12 per hour times 3 hours, which makes 36.", "36"),
    ("The final answer is: 4 weeks of 7 days, 28 days.", "28"),
    ("The answer is 8 (5 apples and 3 pears).", "8"),
    ("The answer is 8 (= 5 + 3).", "8"),
    ("The answer is (5 + 3) = 8.", "8"),
    ("The answer is 18, not 20.", "18"),
    ("The answer is not 5 but 7.", "7"),
    ("The answer is 24 rather than 12.", "24"),
    ("The answer is 1,000 instead of 900.", "1000"),
    ("The answer is -3, not 3", "-3"),
    ("The answer is 40 dollars. She had 5 left.", "40"),  # the sentence ends at its period
    ("The answer is 6 eggs. Checking: 3 + 3 = 6, and the answer is 2 dozen, so 24.", "24"),  # the last marker
]


@pytest.mark.parametrize("text, number", ANSWER_SENTENCES)
def test_an_answer_sentence_reads_as_its_last_number(text, number):
    assert extract_numeric(text) == extract_numeric(text).__class__(strict=number, flexible=number)


def test_extractor_version():
    assert EXTRACTOR_VERSION == "numeric-3"


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("18", "18"), ("2,125", "2125"), (" -5 ", "-5"), ("+5", "5"), ("3.50", "3.5"), ("18.0", "18"),
        ("-0", "0"), ("1/3", "1/3"), ("2/4", "0.5"), (r"\frac{10}{4}", "2.5"), ("$1,450,000", "1450000"),
        ("60%", "60"), ("18.", "18"), ("3, 4", None), ("abc", None), ("", None),
    ],
)
def test_normalize_number(raw, normal):
    assert normalize_number(raw) == normal


@pytest.mark.parametrize(
    "answer, target, equal",
    [
        ("18.0", "18", True), ("18", "18.0", True), ("0.5", "1/2", True), ("1,000", "1000", True),
        ("-3", "-3", True), ("3", "-3", False), ("33.333333333333336", "100/3", True),  # float print of 100/3
        ("33.33", "100/3", False), ("0.1", "0.10000001", False), ("60", "60%", True), (None, "18", False),
        ("18", "eighteen", False), ("17.999", "18", False),
    ],
)
def test_numbers_equal(answer, target, equal):
    assert numbers_equal(answer, target) is equal


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        (r"It is \boxed{\text{Paris}}.", "Paris", "Paris"),
        ("The answer is Mount Everest.", "Mount Everest", "Mount Everest"),
        ("Thinking...\n\n**Blue whale**\n", None, "Blue whale"),  # the last line
        ("It is the largest.\nAnswer: Blue whale\nThat is all.", "Blue whale", "Blue whale"),
        ("", None, None),
    ],
)
def test_extract_text(text, strict, flexible):
    extraction = extract_text(text)
    assert (extraction.strict, extraction.flexible) == (strict, flexible)


def test_texts_equal_ignores_case_spacing_and_final_period():
    assert texts_equal("  mount   EVEREST. ", "Mount Everest")
    assert not texts_equal("Mount Everest", "K2")
    assert not texts_equal(None, "K2")
