"""Decoding settings: one object, applied identically to every method and backend.

Sampled decoding draws each call's tokens from its own generator, seeded by `call_seed` from
(run seed, sample id, agent, round, repeat). A sample's sampled answer therefore depends on
nothing else in its batch: the same run gives the same answers at batch size 1 and 8.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from mascompare.settings import MAX_SEED, PositiveInt, Section, wanted


class GenerationConfig(Section):
    """The `generation` section (conf/config.yaml), and the decoding settings every call is made with."""

    max_new_tokens: PositiveInt
    temperature: Annotated[float, wanted("0 (greedy) or a positive number", ge=0)]  # 0 means greedy decoding
    top_p: Annotated[float, wanted("a number in (0, 1]", gt=0, le=1)]
    top_k: Annotated[int, wanted("0 (off) or a positive integer", ge=0)]  # 0 disables top-k filtering
    seed: Annotated[int, wanted(f"an integer from 0 to {MAX_SEED}", ge=0, le=MAX_SEED)]
    # which of run.repeats the calls belong to: set by the runner for each repeat, never a config key
    repeat: Annotated[int, wanted("a non-negative integer", ge=0)] = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def for_repeat(self, repeat: int) -> "GenerationConfig":
        return self.model_copy(update={"repeat": repeat})

    def call_seeds(self, calls) -> list[int] | None:
        """The seeds of (sample id, agent, round) calls; None for greedy decoding, which draws nothing."""
        if self.greedy:
            return None
        return [call_seed(self.seed, sample_id, agent, round, self.repeat) for sample_id, agent, round in calls]


def call_seed(seed: int, sample_id: str, agent: str, round: int, repeat: int) -> int:
    """A 31-bit seed from its parts: fits every API's seed field (llama.cpp's is 32-bit)."""
    key = json.dumps([seed, str(sample_id), agent, round, repeat]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF
