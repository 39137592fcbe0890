"""Running an agent's reply as Python (an agent with `execute: true`): the one place the methods use the code
sandbox (tasks/sandbox.py), always under bubblewrap with the sandbox's default limits, never on the host.

The program is the reply's code as the code tasks extract it (the last Python code block; else a block left
open at the end; else the whole reply). What is appended to the reply before anyone reads it:

- the program ran to its end and printed something: `formats.executed` with {output}, what it printed
  (stripped, at most OUTPUT_CHARS characters);
- otherwise `formats.execution_failed` with {error}: the last line of its error output (e.g.
  "ZeroDivisionError: division by zero"), how the sandbox ended it (e.g. "timed out after 10 s"), or
  "it printed nothing".
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from mascompare.errors import UserError
from mascompare.methods.roles import Formats, fill
from mascompare.tasks.code import extract_code
from mascompare.tasks.sandbox import Limits, Sandbox, SandboxUnavailable

OUTPUT_CHARS = 1000  # of a program's output, appended to a reply: enough for any answer, short for a prompt
KEPT_OUTCOMES = 1024  # distinct programs remembered per run (greedy replies repeat)


class ReplyRunner:
    """Runs replies in the sandbox, several at a time; each distinct program runs once per run."""

    def __init__(self, formats: Formats):
        self.formats = formats
        self.sandbox: Sandbox | None = None
        self.ran: dict[str, tuple[str, dict]] = {}
        self.lock = threading.Lock()

    def check(self) -> None:
        """Start the sandbox before any model call: a run whose agents cannot execute should not begin."""
        if self.sandbox is not None:
            return
        try:
            sandbox = Sandbox(Limits(), "bwrap")
            sandbox.check()
        except SandboxUnavailable as error:
            raise UserError(f"An agent has `execute: true`, but the code sandbox cannot start bubblewrap: {error}; "
                            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or on "
                            "Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), or remove `execute`.") from None
        self.sandbox = sandbox

    def run(self, replies: list[str]) -> list[tuple[str, dict]]:
        """Per reply: the text to append to it, and the record of how its program ended."""
        self.check()
        programs = [extract_code(reply).flexible or "" for reply in replies]
        distinct = list(dict.fromkeys(programs))
        with ThreadPoolExecutor(max_workers=max(1, min(len(distinct), os.cpu_count() or 1))) as pool:
            results = dict(zip(distinct, pool.map(self.outcome, distinct)))
        return [results[program] for program in programs]

    def outcome(self, program: str) -> tuple[str, dict]:
        with self.lock:
            if program in self.ran:
                return self.ran[program]
        outcome = self.sandbox.run(program)
        printed = outcome.stdout.strip()
        if outcome.passed and printed:
            suffix = fill(self.formats.executed, output=printed[:OUTPUT_CHARS])
        else:
            suffix = fill(self.formats.execution_failed, error=failure(outcome))
        result = (suffix, {"ending": outcome.ending, "status": outcome.status, "appended": suffix,
                           "seconds": round(outcome.seconds, 3)})
        with self.lock:
            self.ran[program] = result
            while len(self.ran) > KEPT_OUTCOMES:  # the oldest go first
                del self.ran[next(iter(self.ran))]
        return result


def failure(outcome) -> str:
    """Why a program gave no answer, in a few words."""
    if outcome.passed:
        return "it printed nothing"
    if outcome.ending == "failed":
        lines = [line.strip() for line in outcome.stderr.splitlines() if line.strip()]
        return lines[-1][:OUTPUT_CHARS] if lines else outcome.status
    return outcome.status
