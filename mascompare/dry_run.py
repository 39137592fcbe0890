"""Dry runs: what a configured run would send, counted without calling the model.

The method runs unchanged against `CountingBackend`, which answers every request at once with a
stand-in text of `generation.max_new_tokens` tokens. So the number of requests is exact, prompt
tokens are counted locally (the model's tokenizer where one is known, else by characters), and
output tokens are an upper bound, as are the prompts of agents that read earlier agents' text.
The same upper bound, per sample, guards `run.max_cost_usd` (`sample_bounds`). Latent methods send no chat
requests and have nothing to count: they cannot be dry-run, nor capped by cost.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant
from mascompare.backends.base import ChatBackend, Completion
from mascompare.backends.tokens import TokenCounter
from mascompare.errors import UserError
from mascompare.methods.masks import MASKS_FILE
from mascompare.records import Usage
from mascompare.store import RunStore


class CountingBackend(ChatBackend):
    name = "dry_run"

    def __init__(self, counter: TokenCounter, model_name: str):
        self.counter, self.model_name = counter, model_name

    def chat(self, conversations, gen, seeds=None) -> list[Completion]:
        return [Completion(self.counter.filler(gen.max_new_tokens), self.counter.count(messages), gen.max_new_tokens,
                           usage_source="estimate", finish_reason="length") for messages in conversations]

    def count_tokens(self, messages) -> int:
        return self.counter.count(messages)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.counter.truncate(text, max_tokens)


@dataclass
class DryRunReport:
    samples_to_run: int
    samples_done: int
    evaluation: dict  # Usage of what is left to run, as JSON
    calibration: dict | None  # Usage of a calibration still to do, as JSON
    cost_usd_at_most: float | None
    token_counts: str  # how prompt tokens were counted
    status: str = "dry_run"


def counter_for(settings) -> TokenCounter:
    """The tokenizer the run's model would use, where it is known without loading any weights."""
    template_kwargs = settings.model.chat_template_kwargs or {}
    if settings.backend.name == "hf":
        from mascompare.backends.models import resolve

        return TokenCounter(resolve(settings.model).path, template_kwargs)
    return TokenCounter(settings.model.tokenizer, template_kwargs)


def counting_method(plan):
    """The plan's method on a counting backend, with its own accountant; refused for latent methods."""
    settings = plan.settings
    if not issubclass(CountingBackend, plan.method_cls.requires):
        raise UserError(f"A dry run counts chat requests; method '{settings.method.name}' thinks in latent space "
                        "inside the hf backend and sends none, so there is nothing to count.")
    accountant = Accountant(plan.price)
    backend = CountingBackend(counter_for(settings), settings.model.name)
    return plan.method_cls(settings.method, backend, plan.task, settings.generation, accountant), accountant


def prepared_counting_method(plan, run_dir: Path):
    """A counting method prepared as the run's own would be, on the masks the run directory already holds (a
    resumed or running run), so that it counts the graph the run evaluates; whatever it saves is thrown away."""
    method, accountant = counting_method(plan)
    with tempfile.TemporaryDirectory() as scratch:
        saved = run_dir / MASKS_FILE
        if plan.settings.run.resume and saved.is_file():
            shutil.copy(saved, scratch)
        method.prepare(Path(scratch), plan.samples, plan.settings.run.resume)
    return method, accountant


def counted_calls(method, accountant, samples, batch_size: int) -> dict[str, list]:
    """Each sample's call records when the counting method runs it."""
    calls = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        method.run(batch)
        for sample in batch:
            calls[sample.id] = calls.get(sample.id, []) + accountant.take(sample.id)
    return calls


def sample_bounds(plan, run_dir: Path) -> dict[str, float]:
    """run.max_cost_usd: each sample's upper bound in USD (the same for every repeat: repeats send the same prompts)."""
    method, accountant = prepared_counting_method(plan, run_dir)
    calls = counted_calls(method, accountant, plan.samples, len(plan.samples) or 1)
    return {sample_id: Usage.of(records).cost_usd or 0.0 for sample_id, records in calls.items()}


def dry_run(plan) -> DryRunReport:
    """What the planned run would send (of what is left to do); writes nothing and calls no model."""
    settings = plan.settings
    done = RunStore.completed_keys_in(plan.run_dir) if settings.run.resume else set()
    # a sample counts once per repeat still to run; repeats send the same prompts
    todo = [s for repeat in range(plan.repeats) for s in plan.samples if (s.id, repeat) not in done]
    method, accountant = prepared_counting_method(plan, plan.run_dir)
    info = method.run_info().get("calibration") or {}
    calibration = info["usage"] if info.get("performed") and "reused_from" not in info else None
    batch_size = settings.run.batch_size
    if batch_size == "auto":
        batch_size = method.backend.auto_batch_size([s.question for s in plan.samples], settings.generation)
    records = []
    for start in range(0, len(todo), batch_size):  # a sample of several repeats counts once per repeat
        batch = todo[start:start + batch_size]
        method.run(batch)
        for sample_id in dict.fromkeys(s.id for s in batch):
            records.extend(accountant.take(sample_id))
    evaluation = Usage.of(records)
    total = None if plan.price is None else (evaluation.cost_usd or 0.0) + (calibration or {}).get("cost_usd", 0.0)
    report = DryRunReport(samples_to_run=len(todo), samples_done=len(plan.samples) * plan.repeats - len(todo),
                          evaluation=evaluation.to_json(), calibration=calibration, cost_usd_at_most=total,
                          token_counts="tokenizer" if method.backend.counter.exact else "about 1 token per 4 characters")
    print_estimate(report, settings)
    return report


def print_estimate(report: DryRunReport, settings) -> None:
    table = Table(title=f"dry run · {settings.method.name} · {settings.task.name} · {settings.model.name}",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("samples", f"{report.samples_to_run} to run, {report.samples_done} already done")
    for phase in ("calibration", "evaluation"):
        usage = getattr(report, phase)
        if usage:
            table.add_row(f"{phase} requests", f"{usage['calls']:,}")
            table.add_row(f"{phase} input tokens", f"{usage['input_tokens']:,} (at most; {report.token_counts})")
            table.add_row(f"{phase} output tokens", f"{usage['output_tokens']:,} (at most: every request writes "
                                                    f"generation.max_new_tokens={settings.generation.max_new_tokens})")
    cost = report.cost_usd_at_most
    table.add_row("cost", f"at most ${cost:.4f}" if cost is not None
                  else f"unknown: no price for '{settings.model.api_id}' in conf/prices.yaml")
    table.add_row("model calls made", "none")
    Console().print(table)
