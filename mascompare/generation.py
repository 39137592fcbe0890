"""Decoding settings: one object, applied identically to every method and backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mascompare.errors import UserError


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k filtering
    seed: int = 42

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @classmethod
    def from_cfg(cls, cfg) -> "GenerationConfig":
        gen = cls(**{k: cfg[k] for k in asdict(cls()) if k in cfg})
        if gen.max_new_tokens < 1:
            raise UserError(f"generation.max_new_tokens must be at least 1, got {gen.max_new_tokens}.")
        if gen.temperature < 0:
            raise UserError(f"generation.temperature must be 0 (greedy) or positive, got {gen.temperature}.")
        if not 0 < gen.top_p <= 1:
            raise UserError(f"generation.top_p must be in (0, 1], got {gen.top_p}.")
        if gen.top_k < 0:
            raise UserError(f"generation.top_k must be 0 (off) or positive, got {gen.top_k}.")
        return gen
