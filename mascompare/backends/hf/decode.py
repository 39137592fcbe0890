"""The decoding loop shared by `chat` and the latent path: one state per sample, one stop rule, continuous batching.

Row r of the batch starts with sample r; the samples after those wait with their prompts. A row whose sample ends
takes the next waiting sample: its prompt is prefilled apart (eagerly, on a dynamic cache) and its keys and values
replace the row's, right-aligned at the cache's end with hidden columns before them, so that its tokens stay
contiguous and its positions count from 0, as at batch 1 (a sliding window sees the same tokens). A sample keeps
its own random stream wherever it runs. Finished rows with nothing to take stay in the batch, decoding padding:
compiled steps keep one batch shape, and on a CPU dropping them was measured slower than keeping them
(bench/results/continuous_batching_rows_leave.txt).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mascompare.backends.hf.cache import SharedCache
from mascompare.backends.hf.forward import ForwardSteps
from mascompare.backends.hf.sampling import next_tokens
from mascompare.generation import GenerationConfig


@dataclass
class Sequence:
    """One sample's decoding: which sample it is, its tokens so far, its random stream, and why it ended."""

    sample: int  # its index among the call's samples
    generator: torch.Generator | None  # None for greedy decoding
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # set once it ends: "eos" | "stop" | "length"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class StopRule:
    """Where a sequence ends, and why: at an end-of-turn token ("eos"); in the plain prompt format, once its text
    contains the turn marker ("stop"); else after max_new_tokens ("length"). The ending token is the sequence's
    last."""

    eos_token_ids: frozenset[int]
    max_new_tokens: int
    ends_turn: Callable[[list[int]], bool] | None = None  # the plain format's marker check; None with a template

    def finish_reason(self, tokens: list[int]) -> str | None:
        """Why a sequence with these tokens has ended, or None while it goes on."""
        if tokens[-1] in self.eos_token_ids:
            return "eos"
        if self.ends_turn is not None and self.ends_turn(tokens):
            return "stop"
        return "length" if len(tokens) >= self.max_new_tokens else None


@torch.inference_mode()
def decode_sequences(steps: ForwardSteps, state: SharedCache, logits: torch.Tensor, gen: GenerationConfig,
                     stop: StopRule, sequences: list[Sequence], waiting: list[list[int]] = (),
                     visible: torch.Tensor | None = None) -> None:
    """Decode every sequence to its end, from `logits` ([B, V], the next-token logits of the state's rows).

    The first B sequences are the state's rows; the others wait, with their prompts `waiting`, for a row to
    free. `visible` hides cache columns as in a prefill (pass the mask the prompt was prefilled with)."""
    rows = list(sequences[:logits.shape[0]])  # the sequence each row decodes (its last one, once it has ended)
    queue = deque(zip(sequences[len(rows):], waiting))
    layout = steps.layout
    # room for the longest prompt and all its tokens, so that dropping hidden columns always makes enough
    layout.make_room(state, max([state.length, *map(len, waiting)]) - state.length + gen.max_new_tokens)
    fresh = list(range(len(rows)))  # rows whose logits no token has been taken from yet
    while True:
        picking = [row for row in fresh if not rows[row].finished]
        if picking:
            for row, token in zip(picking, next_tokens(logits[picking], gen, [rows[r].generator for r in picking])):
                sequence = rows[row]
                sequence.tokens.append(token)
                sequence.finish_reason = stop.finish_reason(sequence.tokens)
        free = [row for row, sequence in enumerate(rows) if sequence.finished]
        if free and queue:
            arriving = [queue.popleft() for _ in range(min(len(free), len(queue)))]
            fresh = free[:len(arriving)]
            for row, (sequence, _) in zip(fresh, arriving):
                rows[row] = sequence
            logits[fresh] = admit(steps, state, [not s.finished for s in rows], fresh, [p for _, p in arriving])
            continue
        live = [not sequence.finished for sequence in rows]
        if not any(live):
            return
        if state.static and state.length == state.cache.get_max_length():
            visible = layout.relayout(state, live, visible=visible)
        tokens = torch.tensor([s.tokens[-1] if not s.finished else steps.pad_token_id for s in rows],
                              device=steps.device)
        _, logits = steps.step_tokens(state, tokens, visible)
        fresh = list(range(len(rows)))


def admit(steps: ForwardSteps, state: SharedCache, live: list[bool], slots: list[int],
          prompts: list[list[int]]) -> torch.Tensor:
    """Prefill `prompts` (left-padded among themselves) and splice them into rows `slots` of the state; returns
    their logits. Arrivals are prefilled on a dynamic cache, eagerly, then copied across."""
    arrivals = steps.layout.new(len(prompts), static=False)
    _, logits = steps.prefill(arrivals, prompts)
    steps.layout.relayout(state, live, arrivals, slots)
    return logits
