"""The fast path's attention function: transformers' sdpa attention, except that a compiled one-token step reads
shared key/value heads in place. Registered with transformers when a backend takes the fast path, never on
import."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

STEP_ATTENTION = "sdpa_grouped_steps"


def sdpa_grouped_steps(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers' sdpa attention, except that in a compiled one-token step, a model whose query heads
    share key/value heads attends to the shared heads in place, as eager transformers does. (A compiled
    graph otherwise copies every key/value head once per query head sharing it: the whole static cache,
    at every step; on a CPU that copy took longer than the rest of the step's attention.)"""
    groups = getattr(module, "num_key_value_groups", 1)
    changes_the_scores = any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "s_aux"))
    if not torch.compiler.is_compiling() or query.shape[2] != 1 or groups == 1 or changes_the_scores:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, _, head_dim = query.shape
    # the query heads of one group become that key/value head's query rows; a mask shared by the heads
    # ([B, 1, 1, columns]) applies to every row
    grouped = query.reshape(batch, heads // groups, groups, head_dim)
    if attention_mask is not None and attention_mask.shape[1] != 1:
        attention_mask = attention_mask.reshape(batch, heads // groups, groups, -1)
    output = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                              scale=scaling)
    return output.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


def use_step_attention(model) -> None:
    """Register STEP_ATTENTION with transformers (a process-wide table; registering again changes nothing) and
    give it to a model that uses sdpa. Outside compiled one-token steps it is sdpa itself, so the model's eager
    outputs do not change."""
    AttentionInterface.register(STEP_ATTENTION, sdpa_grouped_steps)
    AttentionMaskInterface.register(STEP_ATTENTION, sdpa_mask)
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(STEP_ATTENTION)
