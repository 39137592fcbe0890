"""Forward passes that append to a shared cache: a left-padded segment of prompts (prefill), or one position per
row, a token or an input embedding (a latent thought). They return the last layer's state and the logits at
each row's last position.

A one-token step on a static cache runs through the model's compiled forward (transformers' `get_compiled_call`;
CUDA graphs on CUDA); everything else runs eagerly, since a prefill's shape changes with every batch.
"""

from __future__ import annotations

import inspect
import weakref

import torch
from transformers import CompileConfig

from mascompare.backends.hf.cache import CacheLayout, SharedCache
from mascompare.backends.hf.prompts import ContextWindowExceeded

_head_inputs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # output head -> what it last read


class HeadInput:
    value: torch.Tensor | None = None  # (a plain class: torch.compile traces a hook that sets its attribute)


def head_input_catcher(model) -> HeadInput:
    """Where the input of the model's output head lands at every forward pass: the last layer's state after
    the final norm, at the positions whose logits are kept (the same tensor as `output_hidden_states`' last
    entry, without the model keeping every layer's states). One forward pre-hook per output head, added once:
    a hook added per call would make the compiled forward recompile."""
    head = model.get_output_embeddings()
    if head not in _head_inputs:
        caught = HeadInput()
        head.register_forward_pre_hook(lambda _, args: setattr(caught, "value", args[0]))
        _head_inputs[head] = caught
    return _head_inputs[head]


class ForwardSteps:
    """The model's forward passes on shared caches laid out by `layout`."""

    def __init__(self, model, layout: CacheLayout, pad_token_id: int, window: int | None):
        self.model, self.layout, self.pad_token_id, self.context_window = model, layout, pad_token_id, window
        self.device = layout.device
        # transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.compile_config = CompileConfig()
        self.head_input = head_input_catcher(model)

    def left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask [B, longest], real tokens right-aligned."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if prompt:
                input_ids[row, width - len(prompt):] = torch.tensor(prompt)
                attention_mask[row, width - len(prompt):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    @torch.inference_mode()
    def prefill(self, state: SharedCache, prompts: list[list[int]], visible: torch.Tensor | None = None):
        """Append one left-padded segment of token ids to the cache; a cache that would outgrow the context
        window raises ContextWindowExceeded, for the whole batch."""
        input_ids, segment_mask = self.left_pad(prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        longest = int((state.next_position + lengths).max())
        if self.context_window is not None and longest > self.context_window:
            raise ContextWindowExceeded(f"latent agents' shared cache would reach {longest:,} positions, beyond the "
                                        f"model's context window of {self.context_window:,}; shorten the input")
        offsets = (segment_mask.cumsum(dim=1) - 1).clamp(min=0)
        return self.extend(state, segment_mask, state.next_position[:, None] + offsets, visible, input_ids=input_ids)

    @torch.inference_mode()
    def step_embeds(self, state: SharedCache, embeds: torch.Tensor, visible: torch.Tensor | None = None):
        """Append one position per row whose input is an embedding ([B, d]) rather than a token."""
        ones = torch.ones((embeds.shape[0], 1), dtype=torch.long, device=self.device)
        return self.extend(state, ones, state.next_position[:, None], visible, inputs_embeds=embeds[:, None, :])

    @torch.inference_mode()
    def step_tokens(self, state: SharedCache, tokens: torch.Tensor, visible: torch.Tensor | None = None):
        """Append one token per row ([B] ids)."""
        ones = torch.ones((tokens.shape[0], 1), dtype=torch.long, device=self.device)
        return self.extend(state, ones, state.next_position[:, None], visible, input_ids=tokens[:, None])

    def extend(self, state: SharedCache, segment_mask, position_ids, visible, **inputs):
        """One forward pass over a segment ([B, width] mask of real tokens) appended to the state. `visible`
        ([B, state.length], 0/1) hides existing columns from it; columns appended after `visible` was made are
        the current agent's own and stay visible."""
        past_mask = state.mask
        if visible is not None:
            grown = state.length - visible.shape[1]
            past_mask = past_mask * torch.cat([visible, visible.new_ones((visible.shape[0], grown))], dim=1)
        attention_mask = torch.cat([past_mask, segment_mask], dim=1)
        forward = self.model
        self.layout.make_room(state, segment_mask.shape[1])
        if state.static:
            # the mask spans the whole static cache (its unused columns hidden), so one-token steps keep one shape
            unused = state.cache.get_max_length() - attention_mask.shape[1]
            attention_mask = torch.nn.functional.pad(attention_mask, (0, unused))
            if segment_mask.shape[1] == 1:
                forward = self.model.get_compiled_call(self.compile_config)
                if "input_ids" in inputs:  # one compiled graph for tokens and latent thoughts alike
                    inputs = {"inputs_embeds": self.model.get_input_embeddings()(inputs["input_ids"])}
        out = forward(**inputs, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                      logits_to_keep=1, **{self.cache_argument: state.cache})
        state.mask = torch.cat([state.mask, segment_mask], dim=1)
        state.next_position = state.next_position + segment_mask.sum(dim=1)
        # copies: a CUDA graph overwrites its outputs at its next replay
        return self.head_input.value[:, -1].clone(), out.logits[:, -1].float().clone()
