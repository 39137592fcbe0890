"""Backend registry: `backend=<name>` resolves here; nothing heavy is imported until a backend is built."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from mascompare.backends.base import ChatBackend, Completion, LatentBackend, Message
from mascompare.registry import Registry

BACKENDS = Registry("backend", ChatBackend, {
    "hf": "mascompare.backends.hf:HFBackend",
    "openai": "mascompare.backends.openai_api:OpenAIBackend",
    "scripted": "mascompare.backends.scripted:ScriptedBackend",
})


def build_backend(backend_settings, model_settings, backend_cls: type[ChatBackend] | None = None) -> ChatBackend:
    cls = backend_cls or BACKENDS.get(backend_settings.name)
    return cls(backend_settings, model_settings)


class KeptBackend:
    """The backend of the last run, kept for the next run in this process (the jobs of a sweep).

    A run whose backend and model settings equal the kept one's reuses it, so a local model loads
    once per sweep; a run with other settings closes it and builds its own, so at most one model is
    held at a time.
    """

    def __init__(self):
        self.key: tuple | None = None
        self.backend: ChatBackend | None = None
        self.loads = 0  # backends built so far

    def get(self, backend_settings, model_settings, backend_cls=None) -> tuple[ChatBackend, bool]:
        """The backend for these settings, and whether it was reused."""
        key = (backend_settings, model_settings)
        if self.backend is not None and key == self.key:
            return self.backend, True
        self.close()
        self.backend, self.key = build_backend(backend_settings, model_settings, backend_cls), key
        self.loads += 1
        return self.backend, False

    def close(self) -> None:
        backend, self.backend, self.key = self.backend, None, None
        if backend is None:
            return
        backend.close()
        del backend
        gc.collect()
        if "torch" in sys.modules:  # give a local model's GPU memory back before the next one loads
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def open_backend(run_settings, backend_settings, model_settings, kept: KeptBackend | None = None,
                 backend_cls: type[ChatBackend] | None = None) -> tuple[ChatBackend, bool]:
    """The run's backend (reused from `kept` where the settings are equal), answering repeated requests from the
    response cache under run.output_root when run.cache is true; returns it and whether it was reused."""
    if kept is None:
        backend, reused = build_backend(backend_settings, model_settings, backend_cls), False
    else:
        backend, reused = kept.get(backend_settings, model_settings, backend_cls)
    from mascompare.backends.response_cache import CACHE_FILE

    backend.use_cache(Path(run_settings.output_root) / CACHE_FILE if run_settings.cache else None)
    return backend, reused


def release_backend(backend: ChatBackend, kept: KeptBackend | None = None) -> None:
    """After a run: the response cache is closed; the backend too unless `kept` holds it for the next run."""
    backend.use_cache(None)
    if kept is None or kept.backend is not backend:
        backend.close()


__all__ = ["BACKENDS", "ChatBackend", "Completion", "KeptBackend", "LatentBackend", "Message",
           "build_backend", "open_backend", "release_backend"]
