"""Lazy name -> object registries with "did you mean" suggestions.

Entries are "module:attribute" strings, imported only when looked up, so that
choosing `backend=openai` never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from mascompare.errors import UserError


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, name: str, choices) -> UserError:
    choices = sorted(choices)
    return UserError(f"Unknown {kind} '{name}'.{suggest(name, choices)} Valid choices: {', '.join(choices)}.")


class Registry:
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise unknown(self.kind, name, self._entries)
        module_name, _, attribute = self._entries[name].partition(":")
        return getattr(importlib.import_module(module_name), attribute)
