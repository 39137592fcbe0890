"""Lazy name -> object registries with "did you mean" suggestions.

Entries are "module:attribute" strings, imported only when looked up, so that
choosing `backend=openai` never imports torch. Each registry holds one contract's classes (a method, task or
backend base class): a registered class that does not subclass it is a programming error, refused on lookup.
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
    """Names to classes of one contract: every entry must subclass `base` (checked when it is looked up)."""

    def __init__(self, kind: str, base: type, entries: dict[str, str]):
        self.kind, self.base = kind, base
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise unknown(self.kind, name, self._entries)
        module_name, _, attribute = self._entries[name].partition(":")
        found = getattr(importlib.import_module(module_name), attribute)
        if not (isinstance(found, type) and issubclass(found, self.base)):
            raise TypeError(f"{self._entries[name]} is registered as {self.kind} '{name}' but is not a subclass of "
                            f"{self.base.__module__}.{self.base.__qualname__}")
        return found
