"""The backend contract: batched chat generation with per-item token counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from omegaconf import OmegaConf

from mascompare.errors import UserError
from mascompare.generation import GenerationConfig

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def chat_template_kwargs(model_cfg) -> dict:
    """`model.chat_template_kwargs`: extra variables for the model's chat template (e.g. Qwen3's
    {enable_thinking: false}), the same for every prompt a run sends or counts."""
    extra = model_cfg.get("chat_template_kwargs") if model_cfg is not None else None
    if OmegaConf.is_config(extra):
        extra = OmegaConf.to_container(extra, resolve=True)  # plain values, as a Jinja template expects
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise UserError("model.chat_template_kwargs must be a mapping of names to values, e.g. "
                        f"{{enable_thinking: false}}, or null; got {extra!r}.")
    return extra


def plain_prompt(messages: list[Message]) -> str:
    """The documented fallback for models without a chat template (see backends/hf.py)."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


@dataclass
class Completion:
    text: str
    prompt_tokens: int  # after the chat template, without padding
    completion_tokens: int  # generated tokens, without padding, up to and including EOS
    usage_source: str = "local_count"  # "api" | "local_count" | "estimate" | "cache" (answered by run.cache, not sent)
    cached_prompt_tokens: int | None = None  # of prompt_tokens, read from the server's prompt cache
    reasoning_tokens: int | None = None  # of completion_tokens, hidden reasoning (where the server reports it)
    error: str | None = None
    # why decoding ended: "eos" (the model ended its turn), "length" (max_new_tokens reached),
    # "stop" (a stop marker, e.g. the plain format's next turn), "error" (the call failed)
    finish_reason: str | None = None


class Backend(Protocol):
    name: str  # "hf", "openai", ...
    model_name: str  # what results and reports call the model
    capabilities: frozenset[str]  # "chat" always; "hidden_states" for latent methods

    def chat(self, conversations: list[list[Message]], gen: GenerationConfig,
             seeds: list[int] | None = None) -> list[Completion]:
        """One completion per conversation, in input order. `seeds` (one per conversation, from
        GenerationConfig.call_seed) seed sampled decoding; None seeds every row with gen.seed."""

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens of one conversation after the chat template."""

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """The text cut to its first max_tokens tokens (the model's tokens where it knows them)."""
