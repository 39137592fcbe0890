"""The fast path checked against the eager path on the run's own model and first batch, before it is trusted.

Both paths prefill the batch's prompts (the fast path's prefill is the run's own), then take the same steps under
teacher forcing: for latent methods
LATENT_STEPS latent steps (their input is the eager path's last-layer state, scaled to the mean norm of the
prompts' input embeddings, as a latent thought is), then DECODE_STEPS one-token steps fed the eager path's greedy
tokens. The eager path runs first, on dynamic caches, and whatever it raises is the run's own failure; the fast
path then runs on static caches, its one-token steps compiled, with the same inputs (its steps on a copy of the
run's cache, which the run goes on from).

The fast path fails the check if it raises, or if its logits differ from the eager path's by more than the dtype's
tolerance (TOLERANCES, in logits) anywhere, or if its top token differs where the eager path's margin between its
top two exceeds that tolerance. (bf16 is not batch-invariant: where eager's top two are within the tolerance, a
different top token is rounding, not a fault.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from mascompare.backends.hf.cache import SharedCache
from mascompare.backends.hf.forward import ForwardSteps

# The largest difference in logits allowed between the paths. float32 differs by reordered sums only; a half
# precision rounds every intermediate (spacing 1/64 for float16 and 1/8 for bfloat16 at logits of 16-32),
# and a compiled step fuses and orders operations otherwise than eager kernels do.
TOLERANCES = {torch.float32: 1e-2, torch.float16: 0.25, torch.bfloat16: 1.0}
DECODE_STEPS = 4
LATENT_STEPS = 2


@dataclass
class CheckResult:
    passed: bool
    reason: str | None  # why it failed
    figures: dict  # what was compared and found, for run.json


@dataclass
class Comparison:
    """The fast path's logits against the eager path's, over every compared step."""

    tolerance: float
    max_abs_diff: float = 0.0
    top_token_differences: int = 0  # row-steps where the top tokens differ
    decisive_differences: int = 0  # of those, where eager's margin between its top two exceeds the tolerance
    row_steps: int = 0

    def add(self, eager: torch.Tensor, fast: torch.Tensor) -> None:
        """One step's logits ([B, V] each)."""
        diff = float((fast - eager).abs().max())  # NaN where the fast path's logits hold NaN
        if not math.isnan(self.max_abs_diff) and not diff <= self.max_abs_diff:
            self.max_abs_diff = diff  # a larger difference, or NaN, which then stays
        top_two = eager.topk(2, dim=-1).values
        differs = eager.argmax(dim=-1) != fast.argmax(dim=-1)
        self.top_token_differences += int(differs.sum())
        self.decisive_differences += int((differs & (top_two[:, 0] - top_two[:, 1] > self.tolerance)).sum())
        self.row_steps += eager.shape[0]

    def failure(self) -> str | None:
        if math.isnan(self.max_abs_diff):
            return "its logits hold NaN"
        if self.max_abs_diff > self.tolerance:
            return (f"its logits differ from the eager path's by up to {self.max_abs_diff:.4g}, over the tolerance of "
                    f"{self.tolerance:g}")
        if self.decisive_differences:
            return (f"its top token differs from the eager path's in {self.decisive_differences} of {self.row_steps} "
                    f"row-steps where eager's top two are more than {self.tolerance:g} apart")
        return None


def thought(hidden: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """A latent step's input: the last-layer state rescaled to an input embedding's norm."""
    return (hidden.float() * (norm / hidden.float().norm(dim=-1, keepdim=True).clamp_min(1e-6))).to(hidden.dtype)


@dataclass
class Reference:
    """The eager path's run of the check: its prefill (kept, for a run that falls back) and every step after it."""

    state: SharedCache  # as the prefill left it
    hidden: torch.Tensor
    logits: torch.Tensor
    inputs: list[tuple[str, torch.Tensor]]  # ("latent", embeddings) or ("token", ids) per step
    outputs: list[torch.Tensor]  # the logits after each step


@torch.inference_mode()
def eager_reference(steps: ForwardSteps, state: SharedCache, prompts: list[list[int]], visible, latent: bool):
    """The eager path from where `state` stands: the prefill of `prompts`, then the teacher-forced steps."""
    layout = steps.layout
    working = SharedCache(layout.holding(state.contents(), 0, static=False), state.mask, state.next_position)
    hidden, logits = steps.prefill(working, prompts, visible)
    # the prefill's keys and values stay as they are: the steps below append to new tensors
    prefilled = SharedCache(layout.holding(working.contents(), 0, static=False), working.mask, working.next_position)
    reference = Reference(prefilled, hidden, logits, [], [])
    if latent:
        ids, mask = steps.left_pad(prompts)
        norm = steps.model.get_input_embeddings()(ids)[mask.bool()].float().norm(dim=-1).mean()
        for _ in range(LATENT_STEPS):
            reference.inputs.append(("latent", thought(hidden, norm)))
            hidden, logits = steps.step_embeds(working, reference.inputs[-1][1])
            reference.outputs.append(logits)
    for _ in range(DECODE_STEPS):
        reference.inputs.append(("token", logits.argmax(dim=-1)))
        _, logits = steps.step_tokens(working, reference.inputs[-1][1])
        reference.outputs.append(logits)
    return reference


@torch.inference_mode()
def check_fast_path(steps: ForwardSteps, state: SharedCache, prompts: list[list[int]], visible: torch.Tensor | None,
                    room: int, latent: bool) -> tuple[CheckResult, torch.Tensor, torch.Tensor]:
    """Prefill `prompts` into the run's `state` on the fast path, as the run would, and check that path on them.

    The eager path prefills the same prompts on a dynamic copy of the state; both then take the same steps, the
    fast path on a copy of the run's static cache (the run goes on from its prefill). `room`: the columns the run
    makes room for after its prefill, so that the static cache, and the shape compiled for it, are the run's own.
    Returns the result and the prefill's last-layer states and logits; where the fast path failed, `state` holds
    the eager prefill instead (a dynamic cache) and these are the eager path's."""
    started = time.perf_counter()
    dtype = steps.model.dtype
    comparison = Comparison(TOLERANCES.get(dtype, TOLERANCES[torch.float32]))
    reference = eager_reference(steps, state, prompts, visible, latent)
    figures = {"dtype": str(dtype).removeprefix("torch."), "tolerance": comparison.tolerance, "rows": len(prompts),
               "latent_steps": LATENT_STEPS if latent else 0, "decode_steps": DECODE_STEPS}
    reason = None
    try:
        hidden, logits = steps.prefill(state, prompts, visible)
        steps.layout.make_room(state, room)
        comparison.add(reference.logits, logits)
        probe = SharedCache(steps.layout.holding(state.contents(), state.cache.get_max_length() - state.length,
                                                 static=True), state.mask, state.next_position)
        for index, ((kind, value), expected) in enumerate(zip(reference.inputs, reference.outputs)):
            first = time.perf_counter()
            _, step_logits = (steps.step_embeds if kind == "latent" else steps.step_tokens)(probe, value)
            comparison.add(expected, step_logits)
            if index == 0:  # compiling happens here (the run would have paid for it at its first step)
                figures["first_compiled_step_s"] = round(_synchronized(steps.device) - first, 3)
        failure = comparison.failure()
        if failure:
            reason = f"the compiled path ran, but {failure}"
    except Exception as error:  # whatever the fast path raises makes the run fall back (or fail, if so asked)
        message = (str(error).strip().splitlines() or [""])[0][:300]
        reason = f"the compiled path raised {type(error).__name__}" + (f": {message}" if message else "")
    if reason is not None:
        state.cache, state.mask, state.next_position = (reference.state.cache, reference.state.mask,
                                                        reference.state.next_position)
        hidden, logits = reference.hidden, reference.logits
    max_diff = comparison.max_abs_diff
    figures.update(max_abs_diff=None if math.isnan(max_diff) else round(max_diff, 6),
                   top_token_differences=comparison.top_token_differences,
                   decisive_top_token_differences=comparison.decisive_differences,
                   seconds=round(_synchronized(steps.device) - started, 3))
    return CheckResult(reason is None, reason, figures), hidden, logits


def _synchronized(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
