"""One UsageRecord per model call (or local forward block) per sample, the sums over them, and prices.

A batched call serves several samples at once; it yields one record per sample, each with
that sample's own token counts and an equal share of the call's wall time, so that per-sample
sums add up to the run's total time. A record also keeps what the call was sent (its messages
and their hash), why its decoding ended, and its sampling seed.

Two views of input: `input_tokens` are the prompt tokens a call processed (a text agent re-sends,
and the model re-reads, the whole context it is given; a latent agent's prompt holds only its own
new text); `context_tokens` are the tokens the call's output could attend to: its input tokens
plus the KV-cache positions it received from earlier agents (latent_mas). For text methods both
are the same number.

Prices come from conf/prices.yaml (USD per million tokens). A model that is not listed there
costs `None` ("unknown"), never a guess.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mascompare.config import SHIPPED
from mascompare.errors import UserError
from mascompare.records import UsageRecord

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PRICES_FILE = SHIPPED.joinpath("prices.yaml")


def prompt_hash(messages: list[dict]) -> str:
    """A hash of what a call was sent: the messages as canonical JSON."""
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cached input is billed as ordinary input

    def cost(self, record: UsageRecord) -> float:
        cached = record.cached_input_tokens if self.cached_input is not None else 0
        return ((record.input_tokens - cached) * self.input + cached * (self.cached_input or 0.0)
                + record.output_tokens * self.output) / 1e6


def load_prices(path: Path | Traversable = PRICES_FILE) -> dict[str, Price]:
    """The price table: model id -> Price."""
    import yaml

    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return {str(model): Price(**entry) for model, entry in (table.get("models") or {}).items()}
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise UserError(f"Could not read the price table {path}: {exc}; each model needs input and output "
                        "(USD per million tokens) and may have cached_input.") from None


def price_for(model_id: str | None, path: Path | Traversable = PRICES_FILE) -> Price | None:
    """The model's price, or None when the table does not list it (its cost is then unknown)."""
    return load_prices(path).get(model_id) if model_id else None


class Accountant:
    """Collects UsageRecords for the samples in flight; the runner takes each sample's records when it is written."""

    def __init__(self, price: Price | None = None):
        self._records: dict[str, list[UsageRecord]] = defaultdict(list)
        self.price = price  # None: every record's cost stays unknown

    def record(self, record: UsageRecord) -> None:
        if self.price is not None and record.cost_usd is None:
            record.cost_usd = self.price.cost(record)
        self._records[record.sample_id].append(record)

    def record_completions(self, sample_ids, completions, agent, role, wall_time_s, conversations, seeds,
                           round=0, **extra) -> None:
        """Record one batched text call: each sample's own token counts, messages, seed and finish reason,
        and an equal share of the wall time. `seeds` is None for greedy calls.

        Decoding n tokens takes n forward passes (the prefill yields the first token).
        """
        share = wall_time_s / max(len(sample_ids), 1)
        seeds = seeds if seeds is not None else [None] * len(sample_ids)
        for sid, c, messages, seed in zip(sample_ids, completions, conversations, seeds, strict=True):
            self.record(UsageRecord(
                sid, agent, role, round, input_tokens=c.prompt_tokens, output_tokens=c.completion_tokens,
                cached_input_tokens=c.cached_prompt_tokens or 0, reasoning_tokens=c.reasoning_tokens or 0,
                forward_passes=c.completion_tokens, wall_time_s=share, usage_source=c.usage_source,
                finish_reason=c.finish_reason, seed=seed, prompt_hash=prompt_hash(messages), messages=messages,
                **extra,
            ))

    def take(self, sample_id: str) -> list[UsageRecord]:
        return self._records.pop(sample_id, [])
