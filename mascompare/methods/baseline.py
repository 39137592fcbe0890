"""baseline: a single agent answers each question with one prompt.

Every multi-agent method is compared against this: same model, same decoding settings,
same answer-format instruction from the task, same extractor.
"""

from __future__ import annotations

import time
from typing import Annotated

from mascompare.methods.base import Method, MethodOutput
from mascompare.records import Turn
from mascompare.settings import Section, Text, wanted


class BaselineSettings(Section):
    name: Text
    system: Annotated[str | None, wanted("a system message or null")]
    instruction: Annotated[str | None, wanted("an instruction placed before the question, or null")]


class Baseline(Method):
    name = "baseline"
    Settings = BaselineSettings

    def prompt(self, question: str) -> list[dict]:
        settings = self.settings
        user = "\n\n".join(part for part in (settings.instruction, question, self.task.answer_instruction()) if part)
        system = [{"role": "system", "content": settings.system}] if settings.system else []
        return system + [{"role": "user", "content": user}]

    def run(self, samples) -> list[MethodOutput]:
        start = time.perf_counter()
        conversations = [self.prompt(s.question) for s in samples]
        seeds = self.gen.call_seeds([(s.id, "answerer", 0) for s in samples])
        completions = self.backend.chat(conversations, self.gen, seeds)
        self.accountant.record_completions(
            [s.id for s in samples], completions, agent="answerer", role="answerer",
            wall_time_s=time.perf_counter() - start, conversations=conversations, seeds=seeds,
        )
        return [
            MethodOutput(c.text, [Turn("answerer", "answerer", 0, c.text)], error=c.error) for c in completions
        ]
