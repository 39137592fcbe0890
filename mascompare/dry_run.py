"""Dry runs: what a configured run would send, counted without calling the model.

The method runs unchanged against `CountingBackend`, which answers every request at once with a
stand-in text of `generation.max_new_tokens` tokens. So the number of requests is exact, prompt
tokens are counted locally (the model's tokenizer where one is known, else by characters), and
output tokens are an upper bound, as are the prompts of agents that read earlier agents' text.
The same upper bound guards `run.max_cost_usd` before a run has any real cost to go by.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mascompare.accounting import Accountant, Price, api_model_id, summed
from mascompare.backends.base import Completion, chat_template_kwargs
from mascompare.backends.tokens import TokenCounter
from mascompare.errors import UserError


class CountingBackend:
    name = "dry_run"
    capabilities = frozenset({"chat"})

    def __init__(self, counter: TokenCounter, model_name: str):
        self.counter, self.model_name = counter, model_name

    def chat(self, conversations, gen, seeds=None) -> list[Completion]:
        return [Completion(self.counter.filler(gen.max_new_tokens), self.counter.count(messages), gen.max_new_tokens,
                           usage_source="estimate", finish_reason="length") for messages in conversations]

    def count_tokens(self, messages) -> int:
        return self.counter.count(messages)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.counter.truncate(text, max_tokens)


def counter_for(cfg) -> TokenCounter:
    """The tokenizer the run's model would use, where it is known without loading any weights."""
    template_kwargs = chat_template_kwargs(cfg.model)
    if cfg.backend.name == "hf":
        from mascompare.backends.models import resolve

        return TokenCounter(resolve(cfg.model).path, template_kwargs)
    return TokenCounter(cfg.model.get("tokenizer"), template_kwargs)


def counting_method(cfg, method_cls, task, gen, price: Price | None):
    missing = set(method_cls.requires) - CountingBackend.capabilities  # the runner's own capability check
    if missing:
        raise UserError(f"A dry run counts chat requests; method '{cfg.method.name}' needs "
                        f"{', '.join(sorted(missing))} and runs inside the hf backend, so it has none.")
    accountant = Accountant(price)
    backend = CountingBackend(counter_for(cfg), str(cfg.model.name))
    return method_cls(cfg.method, backend, task, gen, accountant), accountant


@contextmanager
def counting_instead(method, counter: TokenCounter, price: Price | None):
    """The same (already prepared) method object, answering from a counting backend for a while."""
    saved = method.backend, method.accountant
    method.backend, method.accountant = CountingBackend(counter, saved[0].model_name), Accountant(price)
    try:
        yield method.accountant
    finally:
        method.backend, method.accountant = saved


def upper_bound_usage(method, accountant, samples, batch_size: int) -> dict:
    """Usage totals of running `samples` through a counting method."""
    records = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        method.run(batch)
        for sample in batch:
            records.extend(accountant.take(sample.id))
    return summed(records)


def estimate(cfg, method_cls, task, gen, price, samples, todo, run_dir: Path, batch_size: int) -> dict:
    """The dry-run report of a configured run: requests, tokens and cost of what is left to do."""
    method, accountant = counting_method(cfg, method_cls, task, gen, price)
    calibration = None
    if hasattr(method, "prepare"):
        with tempfile.TemporaryDirectory() as scratch:  # whatever the method saves is thrown away
            for saved in run_dir.glob("masks.json") if cfg.run.resume else ():
                shutil.copy(saved, scratch)  # a resumed run reuses what it learned: nothing to recount
            method.prepare(scratch, samples, resume=cfg.run.resume)
        info = method.run_info().get("calibration") or {}
        if info.get("performed") and "reused_from" not in info:
            calibration = info["usage"]
    evaluation = upper_bound_usage(method, accountant, todo, batch_size)
    total_cost = None if price is None else evaluation["cost_usd"] + (calibration or {}).get("cost_usd", 0.0)
    return {
        "samples_to_run": len(todo),
        "samples_done": len(samples) - len(todo),
        "evaluation": evaluation,
        "calibration": calibration,
        "cost_usd_at_most": total_cost,
        "token_counts": "tokenizer" if method.backend.counter.exact else "about 1 token per 4 characters",
    }


def print_estimate(report: dict, cfg) -> None:
    table = Table(title=f"dry run · {cfg.method.name} · {cfg.task.name} · {cfg.model.name}",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("samples", f"{report['samples_to_run']} to run, {report['samples_done']} already done")
    for phase in ("calibration", "evaluation"):
        usage = report[phase]
        if usage:
            table.add_row(f"{phase} requests", f"{usage['calls']:,}")
            table.add_row(f"{phase} input tokens", f"{usage['input_tokens']:,} (at most; {report['token_counts']})")
            table.add_row(f"{phase} output tokens", f"{usage['output_tokens']:,} (at most: every request writes "
                                                    f"generation.max_new_tokens={cfg.generation.max_new_tokens})")
    cost = report["cost_usd_at_most"]
    table.add_row("cost", f"at most ${cost:.4f}" if cost is not None
                  else f"unknown: no price for '{api_model_id(cfg.model)}' in conf/prices.yaml")
    table.add_row("model calls made", "none")
    Console().print(table)
