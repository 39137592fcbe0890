"""The next token of each row: greedy, or drawn from the row's own seeded random stream, so that a row's tokens
do not depend on the rest of its batch."""

from __future__ import annotations

import torch

from mascompare.generation import GenerationConfig


def row_generator(seed: int, device: torch.device) -> torch.Generator:
    """A random stream of its own for one sample, seeded with that sample's call seed."""
    return torch.Generator(device=device).manual_seed(seed)


def next_tokens(logits: torch.Tensor, gen: GenerationConfig, generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of [B, V] logits: the top one (greedy), else row i's draw from generators[i]."""
    if gen.greedy:
        return logits.argmax(dim=-1).tolist()
    return torch.cat([sample_token(logits[i:i + 1], gen, g) for i, g in enumerate(generators)]).tolist()


def sample_token(logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator) -> torch.Tensor:
    """Temperature / top-k / top-p sampling from [B, V] logits."""
    logits = logits / gen.temperature
    if gen.top_k:
        kth = torch.topk(logits, min(gen.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if gen.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the top token always stays)
        drop = probs.cumsum(dim=-1) - probs >= gen.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)
