"""Local token counts for servers that report none, and for dry runs that call no model.

`TokenCounter` uses the model's tokenizer where one is known, else about 4 characters per
token (a rough English average). Either way its counts are estimates of what a server bills.
"""

from __future__ import annotations

from mascompare.backends.base import Message, plain_prompt

CHARS_PER_TOKEN = 4


class TokenCounter:
    """Counts tokens locally: with the model's tokenizer when `model.tokenizer` names one (a model preset
    in conf/model/, such as smollm2-135m, a local directory or a hub id), else by characters.

    The tokenizer is loaded on first use only: runs against servers that report usage never load it.
    """

    def __init__(self, spec: str | None, template_kwargs: dict | None = None):
        self.spec = spec  # None: count characters
        self.template_kwargs = template_kwargs or {}  # model.chat_template_kwargs, as the model's prompts get them
        self._tokenizer = None

    @property
    def exact(self) -> bool:
        return bool(self.spec)

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(str(self.spec)))
        return self._tokenizer

    def count(self, messages: list[Message]) -> int:
        if not self.exact:
            return sum(4 + self.count_text(m["content"]) for m in messages) + 2  # a few tokens of framing each
        tok = self.tokenizer()
        if tok.chat_template:
            return len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, **self.template_kwargs)["input_ids"])
        return len(tok(plain_prompt(messages))["input_ids"])  # as the hf backend prompts such a model

    def count_text(self, text: str) -> int:
        if not self.exact:
            return -(-len(text) // CHARS_PER_TOKEN)
        return len(self.tokenizer()(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        if not self.exact:
            return text[: max_tokens * CHARS_PER_TOKEN]
        tok = self.tokenizer()
        return tok.decode(tok(text, add_special_tokens=False)["input_ids"][:max_tokens])

    def filler(self, tokens: int) -> str:
        """A text of about `tokens` tokens (dry runs stand it in for a completion not yet written)."""
        return " x" * tokens if self.exact else "x" * (tokens * CHARS_PER_TOKEN)


def tokenizer_path(spec: str) -> str:
    """A model preset's weights directory (converting an embedded model once), or spec itself."""
    from mascompare.config import find_config

    preset = find_config(f"model/{spec}.yaml")
    if preset is None:
        return spec
    from omegaconf import OmegaConf

    from mascompare.backends.models import resolve
    from mascompare.settings import ModelSettings

    model = ModelSettings.of(OmegaConf.create(preset.read_text(encoding="utf-8")), "model")
    return resolve(model).path
