"""The method contract: what a method provides, with the defaults the runner relies on.

A method gets a batch of samples and returns one final text per sample plus a transcript; every model call it
makes is recorded with the accountant (with the messages it sent, why its decoding ended and its seed). Methods
never score. A method decodes with `self.gen`, which the runner replaces for each of `run.repeats`, and seeds
each sampled call with `self.gen.call_seeds((sample id, agent, round))`.

Each method lives in one file, `mascompare/methods/<name>.py`, with one `Method` subclass that declares its
config section (`Settings`), the backend it needs (`requires`), and overrides the hooks that apply to it. The
runner calls every hook unconditionally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mascompare.backends.base import ChatBackend
from mascompare.records import Turn
from mascompare.settings import Section


@dataclass
class MethodOutput:
    final_text: str
    transcript: list[Turn] = field(default_factory=list)
    error: str | None = None  # set when this sample failed (e.g. a request that failed after retries)
    diagnostics: dict | None = None  # optional per-sample measurements a method records (e.g. latent norms)


class Method:
    """Subclass it in mascompare/methods/<name>.py; the method registry refuses a class that does not."""

    name: ClassVar[str]  # the registry name, equal to the config group's (`method=<name>`)
    Settings: ClassVar[type[Section]]  # the method's config section (conf/method/<name>.yaml)
    # The backend contract the method needs: ChatBackend (any backend), or LatentBackend (a model in this
    # process). The runner refuses, before anything loads, a backend that does not provide it.
    requires: ClassVar[type[ChatBackend]] = ChatBackend

    def __init__(self, settings, backend: ChatBackend, task, gen, accountant):
        self.settings, self.backend, self.task, self.gen, self.accountant = settings, backend, task, gen, accountant

    def prepare(self, run_dir: Path | None, samples: list, resume: bool) -> None:
        """Once-per-run work before evaluation (e.g. learning a communication graph). `samples` are every sample
        the run evaluates; `run_dir` (None in a dry run's scratch-free use) receives any files the method keeps."""

    def run_info(self) -> dict:
        """What run.json records about this method beyond the samples (under "method_info"); {} if nothing."""
        return {}

    def run(self, samples: list) -> list[MethodOutput]:
        """One output per sample, in order."""
        raise NotImplementedError
