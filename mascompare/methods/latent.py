"""Latent thinking, shared by latent_mas and pruned_latent_mas: the realignment that turns a last-layer
hidden state into the next input embedding, the "prefill, then m latent steps" block every thinking agent
runs, and the records of such blocks.

An agent thinks on the batch's shared KV cache (LatentBackend): it prefills its prompt, then takes m steps,
each feeding back its realigned last hidden state as the next input embedding,
    e = (h W_a) * target_norm / ||h W_a||,   W_a = (W_out^T W_out + lambda I)^-1 W_out^T W_in,
where W_in and target_norm (the mean norm of W_in's rows) are taken where the first layer reads its input: the
embedding module's output for every token, which some models scale (Gemma 3 multiplies the embedding matrix by
sqrt(d) inside that module). Its prompt and its m thoughts stay in the cache as its segment.
"""

from __future__ import annotations

import weakref

import torch

from mascompare.accounting import prompt_hash
from mascompare.backends.base import LatentBackend
from mascompare.records import UsageRecord

RIDGE_LAMBDA = 1e-5  # the reference's regulariser for the least-squares realignment

_realignments: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # backend -> (W_a, target_norm)


def realignment(backend: LatentBackend) -> tuple[torch.Tensor, torch.Tensor]:
    """W_a [d, d] and the mean input-embedding norm, in fp32, computed once per backend.

    W_a solves min ||W_out W_a - W_in||^2 + lambda ||W_a||^2: it maps an output-space hidden state
    to the input space the way the vocabulary maps one embedding matrix onto the other.
    """
    if backend not in _realignments:
        w_in, w_out = backend.embedding_matrices()
        gram = w_out.T @ w_out + RIDGE_LAMBDA * torch.eye(w_out.shape[1], device=w_out.device)
        w_a = torch.linalg.solve(gram, w_out.T @ w_in)
        _realignments[backend] = (w_a, w_in.norm(dim=1).mean())
    return _realignments[backend]


def latent_thought(hidden: torch.Tensor, w_a: torch.Tensor | None, target_norm: torch.Tensor) -> torch.Tensor:
    """The realigned latent thought: h W_a (h itself when w_a is None) rescaled to the mean input-embedding norm."""
    aligned = hidden.float() if w_a is None else hidden.float() @ w_a
    aligned = aligned * (target_norm / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    return aligned.to(hidden.dtype)


class Thinker:
    """Runs thinking agents on a shared cache: m latent steps after each prompt, realigned or not."""

    def __init__(self, backend: LatentBackend, steps: int, realign: bool):
        self.backend, self.steps = backend, steps
        w_a, self.target_norm = realignment(backend)
        # realign=false keeps the norm rescale (as the LatentMAS reference does): only the map becomes the identity
        self.w_a = w_a if realign else None

    def think(self, state, prompts: list[list[int]], visible: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Prefill `prompts` on the cache, then take the m latent steps; returns the hidden states that became
        thoughts (one [B, d] per step), for diagnostics. `visible` hides cache columns as in `prefill`."""
        hidden, _ = self.backend.prefill(state, prompts, visible)
        thoughts = []
        for _ in range(self.steps):
            thoughts.append(hidden)
            hidden, _ = self.backend.step_embeds(state, latent_thought(hidden, self.w_a, self.target_norm), visible)
        return thoughts


def positions_from(state, segments: dict[str, tuple[int, int]], visible: torch.Tensor | None = None) -> list[dict]:
    """Per row, the real cache positions it may attend to in each agent's segment (columns [begin, end)), by agent
    name; agents it receives nothing from are left out. Their sum is the row's kv_positions_received."""
    mask = state.mask if visible is None else state.mask[:, :visible.shape[1]] * visible
    return [{name: count for name, (begin, end) in segments.items() if (count := int(row[begin:end].sum()))}
            for row in mask]


def record_block(accountant, ids: list[str], agent, index: int, messages: list[list[dict]], prompts, received,
                 received_from: list[dict] | None, wall_time_s: float, phase: str, latent_steps: int,
                 forward_passes: list[int], output_tokens: list[int], finish_reasons=None, seeds=None) -> None:
    """One record per sample of one agent's block; a thinking agent decodes nothing, so it has no finish reason
    or seed. Each sample gets an equal share of the block's wall time."""
    share = wall_time_s / len(ids)
    for i, sample_id in enumerate(ids):
        accountant.record(UsageRecord(
            sample_id, agent.name, agent.role, index, input_tokens=len(prompts[i]), output_tokens=output_tokens[i],
            latent_steps=latent_steps, kv_positions_received=received[i], forward_passes=forward_passes[i],
            wall_time_s=share, phase=phase, finish_reason=finish_reasons[i] if finish_reasons else None,
            seed=seeds[i] if seeds else None, prompt_hash=prompt_hash(messages[i]), messages=messages[i],
            kv_received_from=received_from[i] if received_from is not None else None,
        ))


def latent_diagnostics(latents: list[torch.Tensor]) -> dict:
    """Norm of each hidden state that became a latent thought, and the cosine similarity between
    consecutive ones (after realignment every thought has the same norm, so the raw states tell more)."""
    norms = [round(float(h.float().norm()), 4) for h in latents]
    cosines = [round(float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0)), 6)
               for a, b in zip(latents, latents[1:])]
    return {"latent_norms": norms, "latent_cosines": cosines}
