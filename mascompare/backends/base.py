"""The backend contracts: `ChatBackend` (batched chat generation with per-item token counts), which every
backend subclasses, and `LatentBackend`, what latent methods think with, offered by backends that run the model
in this process. A method declares which it needs; the runner checks that before anything loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mascompare.generation import GenerationConfig

if TYPE_CHECKING:  # torch is imported by the backends that run a model, never by this contract
    from torch import Tensor

    from mascompare.backends.hf import SharedCache

DEFAULT_AUTO_BATCH = 8  # run.batch_size=auto where a backend has no better choice

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def plain_prompt(messages: list[Message]) -> str:
    """The documented fallback for models without a chat template (see backends/hf/prompts.py)."""
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


@dataclass
class Decoded:
    """One row decoded from a shared KV cache (`LatentBackend.decode`)."""

    tokens: list[int]  # every generated token up to and including the one that ended the row
    text: str  # the completion's text (before the plain format's turn marker)
    finish_reason: str  # "eos" | "length" | "stop", as Completion.finish_reason


class ChatBackend:
    """What every backend provides: batched chat completions with per-item token counts.

    Subclass it; the backend registry refuses a class that does not. The members with a body are defaults the
    runner relies on; a backend overrides those that apply to it.
    """

    name: ClassVar[str]  # the registry name ("hf", "openai", ...)
    model_name: str  # what results and reports call the model
    # Samples the runner runs at once, each as its own task, written as soon as it finishes (an API backend's
    # request pool); None: the runner runs batches of run.batch_size.
    sample_workers: int | None = None

    def chat(self, conversations: list[list[Message]], gen: GenerationConfig,
             seeds: list[int] | None = None) -> list[Completion]:
        """One completion per conversation, in input order. `seeds` (one per conversation, from
        GenerationConfig.call_seeds) seed sampled decoding; None seeds every row with gen.seed. A conversation
        that fails carries its error in its completion instead of raising."""
        raise NotImplementedError

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens of one conversation after the chat template."""
        raise NotImplementedError

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """The text cut to its first max_tokens tokens (the model's tokens where it knows them)."""
        raise NotImplementedError

    def auto_batch_size(self, questions: list[str], gen: GenerationConfig) -> int:
        """run.batch_size=auto: the batch this backend runs best for these questions."""
        return DEFAULT_AUTO_BATCH

    def use_cache(self, path: Path | None) -> None:
        """Answer repeated requests from the response cache at `path` (run.cache); None closes it. Only backends
        that send requests keep one; the others compute every answer anyway."""

    def environment(self) -> dict:
        """What run.json's environment block records of this backend: where and how the model ran."""
        return {"backend": self.name}

    def run_info(self) -> dict:
        """What run.json records of this run's backend beyond its environment (e.g. checks it made); {} if none."""
        return {}

    def close(self) -> None:
        """Give back what the backend holds (threads, connections, memory)."""


class LatentBackend(ChatBackend):
    """A chat backend whose model runs in this process, with the primitives latent methods think with.

    All of a batch's agents share ONE KV cache (`new_cache`), kept exact under batching: every segment is
    left-padded, padding is masked out of every later attention, and positions count real tokens only, so a
    row's result does not depend on the rest of its batch. `visible` ([B, state.length], 0/1) hides existing
    cache columns from a segment, and from the steps that pass the same mask later.
    """

    context_window: int | None  # the model's maximum positions (None where its config does not say)

    def encode_chat(self, conversations: list[list[Message]]) -> list[list[int]]:
        """Prompt token ids per conversation, generation prompt included, unpadded."""
        raise NotImplementedError

    def window_error(self, chars: int, tokens: int | None, max_new_tokens: int) -> str | None:
        """Why a prompt of this many characters (and tokens, once counted) cannot fit the context window."""
        raise NotImplementedError

    def embedding_matrices(self) -> tuple[Tensor, Tensor]:
        """([V, d] what the first layer receives for each token, [V, d] the output head's weights), float32."""
        raise NotImplementedError

    def new_cache(self, batch_size: int, first_positions: list[int] | None = None) -> SharedCache:
        """An empty shared cache; each row's positions start at 0, or at `first_positions`."""
        raise NotImplementedError

    def prefill(self, state: SharedCache, prompts: list[list[int]],
                visible: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Append one left-padded segment of token ids; the last layer's state and the logits at each row's
        last token ([B, d], [B, V])."""
        raise NotImplementedError

    def step_embeds(self, state: SharedCache, embeds: Tensor,
                    visible: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Append one position per row whose input is an embedding ([B, d]); as `prefill` returns."""
        raise NotImplementedError

    def decode(self, state: SharedCache, first_logits: Tensor, gen: GenerationConfig,
               visible: Tensor | None = None, seeds: list[int] | None = None) -> list[Decoded]:
        """Generate from the cache, up to gen.max_new_tokens per row, with the same stop rule as `chat`."""
        raise NotImplementedError

    def can_join_rows(self) -> bool:
        """Whether `join_rows` applies (every cache layer keeps all its positions: no sliding window)."""
        raise NotImplementedError

    def join_rows(self, state: SharedCache, groups: int) -> SharedCache:
        """A cache of groups x B rows made into B rows: row block g becomes the g-th run of columns of each row."""
        raise NotImplementedError

    def padding_could_pass_window(self, segment_lengths: list[list[int]], appended: int) -> bool:
        """Whether a batch's cache could hold padding between a row's tokens and grow past a sliding window
        (`segment_lengths`: per left-padded segment, each row's length; `appended`: positions added after them
        without padding)."""
        raise NotImplementedError
