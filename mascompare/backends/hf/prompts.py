"""Conversations into token ids and completions back into text, for one tokenizer, within the model's context window.

Prompts are the model's chat template with the generation prompt. A model without a chat template (a base model
such as Gemma-3-270m) gets a plain-text format instead: every message becomes "System: ...", "User: ..." or
"Assistant: ..." (the role, capitalised, then the content), messages are separated by a blank line, and the
prompt ends with "Assistant:" for the model to continue. The tokenizer adds its usual special tokens (e.g. BOS)
to that text. A base model rarely emits EOS and goes on to write the user's next turn, so in this format a
completion also ends where its text first contains "\\nUser:" (the turn marker): its text stops before the
marker, its token count includes it (as with EOS).

A prompt that, with generation.max_new_tokens, would not fit the model's context window (its maximum positions)
cannot run; a text too long to fit however it tokenizes is refused before it is tokenized, so a huge input costs
neither time nor memory.
"""

from __future__ import annotations

from mascompare.backends.base import Message, plain_prompt

PLAIN_TURN_END = "\nUser:"
MARKER_WINDOW = 8  # tokens decoded to look for the turn marker: more than a short ASCII marker can span


class ContextWindowExceeded(RuntimeError):
    """Input longer than the model's context window."""


def context_window(config) -> int | None:
    """The model's maximum positions (None where its config does not say)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def conversation_chars(conversation: list[Message]) -> int:
    return sum(len(str(m.get("content") or "")) for m in conversation)


class Prompts:
    """The prompt format of one tokenizer (its chat template, else the plain format) and the context window."""

    def __init__(self, tokenizer, template_kwargs: dict, window: int | None):
        self.tokenizer = tokenizer
        self.template_kwargs = template_kwargs  # model.chat_template_kwargs, for every prompt
        self.context_window = window
        # no token spells more characters than the longest vocabulary entry, so a text longer than
        # window x that is too long whatever its tokens: refused without tokenizing it
        self.max_chars = window * max(map(len, tokenizer.get_vocab()), default=1) if window else None
        self.turn_end = PLAIN_TURN_END

    @property
    def plain(self) -> bool:
        """Whether prompts use the plain-text format (no chat template), whose completions end at the turn marker."""
        return not self.tokenizer.chat_template

    def window_error(self, chars: int, tokens: int | None, max_new_tokens: int) -> str | None:
        """Why a prompt of this many characters (and tokens, once counted) cannot run, or None."""
        if self.context_window is None:
            return None
        if tokens is None:
            if chars <= self.max_chars:
                return None
            size = f"{chars:,} characters (over {self.max_chars:,}, so more than {self.context_window:,} tokens)"
        elif tokens + max_new_tokens <= self.context_window:
            return None
        else:
            size = f"{tokens:,} tokens"
        return (f"the prompt has {size}, which with generation.max_new_tokens={max_new_tokens} does not fit the "
                f"model's context window of {self.context_window:,} positions; shorten the input or lower "
                "generation.max_new_tokens")

    def encode(self, conversations: list[list[Message]]) -> list[list[int]]:
        """Prompt token ids per conversation, generation prompt included, unpadded; a text too long for the
        window whatever its tokens raises ContextWindowExceeded."""
        for conversation in conversations:
            error = self.window_error(conversation_chars(conversation), None, 0)
            if error:
                raise ContextWindowExceeded(error)
        if self.plain:
            return [self.tokenizer(plain_prompt(c))["input_ids"] for c in conversations]
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                                    **self.template_kwargs) for c in conversations]
        # the template already holds every special token the model expects
        return [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The text cut to its first max_tokens tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def ends_turn(self, tokens: list[int]) -> bool:
        """Whether the last tokens of a plain-format completion contain the turn marker."""
        return self.turn_end in self.tokenizer.decode(tokens[-MARKER_WINDOW:], skip_special_tokens=True)

    def completion_text(self, tokens: list[int]) -> str:
        """The text of a completion's tokens (which end where it ended), before the turn marker in the plain format."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.split(self.turn_end)[0] if self.plain else text
