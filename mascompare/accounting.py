"""One UsageRecord per model call (or local forward block) per sample, and the sums over them.

A batched call serves several samples at once; it yields one record per sample, each with
that sample's own token counts and an equal share of the call's wall time, so that per-sample
sums add up to the run's total time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

TOKEN_FIELDS = ("input_tokens", "output_tokens", "latent_steps", "kv_positions_received", "forward_passes")


@dataclass
class UsageRecord:
    sample_id: str
    agent: str  # the agent's name in the method (e.g. "planner", "solver_2")
    role: str  # the role it plays (e.g. "planner", "judger", "answerer")
    round: int = 0
    input_tokens: int = 0  # prompt tokens this call processed for this sample
    output_tokens: int = 0  # decoded (generated) tokens
    latent_steps: int = 0  # latent thoughts generated without decoding
    kv_positions_received: int = 0  # KV-cache positions handed over from earlier agents
    forward_passes: int = 0  # model forward calls for this block (prefill + steps)
    wall_time_s: float = 0.0  # this sample's share of the call's wall time
    usage_source: str = "local_count"  # "api" | "local_count" | "estimate"
    cost_usd: float | None = None  # None when the price is unknown
    phase: str = "eval"  # "eval", or e.g. "calibration" for work done before evaluation

    def to_dict(self) -> dict:
        return asdict(self)


def summed(records: list[UsageRecord]) -> dict:
    """Token, call, time and cost totals over records; cost is None if any record's price is unknown."""
    total = {name: sum(getattr(r, name) for r in records) for name in TOKEN_FIELDS}
    total["calls"] = len(records)
    total["wall_time_s"] = sum(r.wall_time_s for r in records)
    costs = [r.cost_usd for r in records]
    total["cost_usd"] = None if not costs or any(c is None for c in costs) else sum(costs)
    return total


class Accountant:
    """Collects UsageRecords for the samples in flight; the runner takes each sample's records when it is written."""

    def __init__(self):
        self._records: dict[str, list[UsageRecord]] = defaultdict(list)

    def record(self, record: UsageRecord) -> None:
        self._records[record.sample_id].append(record)

    def record_completions(self, sample_ids, completions, agent, role, wall_time_s, round=0, **extra) -> None:
        """Record one batched text call: each sample's own token counts and an equal share of the wall time.

        Decoding n tokens takes n forward passes (the prefill yields the first token).
        """
        share = wall_time_s / max(len(sample_ids), 1)
        for sid, c in zip(sample_ids, completions, strict=True):
            self.record(UsageRecord(
                sid, agent, role, round, input_tokens=c.prompt_tokens, output_tokens=c.completion_tokens,
                forward_passes=c.completion_tokens, wall_time_s=share, usage_source=c.usage_source,
                **extra,
            ))

    def take(self, sample_id: str) -> list[UsageRecord]:
        return self._records.pop(sample_id, [])
