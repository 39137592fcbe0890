"""Decoding settings: one object, applied identically to every method and backend.

Sampled decoding draws each call's tokens from its own generator, seeded by `call_seed` from
(run seed, sample id, agent, round, repeat). A sample's sampled answer therefore depends on
nothing else in its batch: the same run gives the same answers at batch size 1 and 8.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from mascompare.errors import UserError


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k filtering
    seed: int = 42
    repeat: int = 0  # which of run.repeats the calls belong to (set by the runner, not a config key)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def call_seeds(self, calls) -> list[int] | None:
        """The seeds of (sample id, agent, round) calls; None for greedy decoding, which draws nothing."""
        if self.greedy:
            return None
        return [call_seed(self.seed, sample_id, agent, round, self.repeat) for sample_id, agent, round in calls]

    @classmethod
    def from_cfg(cls, cfg) -> "GenerationConfig":
        gen = cls(**{k: cfg[k] for k in asdict(cls()) if k in cfg and k != "repeat"})
        if gen.max_new_tokens < 1:
            raise UserError(f"generation.max_new_tokens must be at least 1, got {gen.max_new_tokens}.")
        if gen.temperature < 0:
            raise UserError(f"generation.temperature must be 0 (greedy) or positive, got {gen.temperature}.")
        if not 0 < gen.top_p <= 1:
            raise UserError(f"generation.top_p must be in (0, 1], got {gen.top_p}.")
        if gen.top_k < 0:
            raise UserError(f"generation.top_k must be 0 (off) or positive, got {gen.top_k}.")
        return gen


def call_seed(seed: int, sample_id: str, agent: str, round: int, repeat: int) -> int:
    """A 31-bit seed from its parts: fits every API's seed field (llama.cpp's is 32-bit)."""
    key = json.dumps([seed, str(sample_id), agent, round, repeat]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF
