"""Backend registry: `backend=<name>` resolves here; nothing heavy is imported until a backend is built."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mascompare.backends.base import ChatBackend, Completion, LatentBackend, Message
from mascompare.errors import UserError
from mascompare.registry import Registry

BACKENDS = Registry("backend", {
    "hf": "mascompare.backends.hf:HFBackend",
    "openai": "mascompare.backends.openai_api:OpenAIBackend",
})


def build_backend(backend_cfg, model_cfg) -> ChatBackend:
    return BACKENDS.get(backend_cfg.name)(backend_cfg, model_cfg)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)


class KeptBackend:
    """The backend of the last run, kept for the next run in this process (the jobs of a sweep).

    A run whose backend and model configs equal the kept one's reuses it, so a local model loads
    once per sweep; a run with other configs closes it and builds its own, so at most one model is
    held at a time.
    """

    def __init__(self):
        self.key: str | None = None
        self.backend: ChatBackend | None = None
        self.loads = 0  # backends built so far

    def get(self, backend_cfg, model_cfg) -> tuple[ChatBackend, bool]:
        """The backend for these configs, and whether it was reused."""
        key = json.dumps([_plain(backend_cfg), _plain(model_cfg)], sort_keys=True, default=str)
        if self.backend is not None and key == self.key:
            return self.backend, True
        self.close()
        self.backend, self.key = build_backend(backend_cfg, model_cfg), key
        self.loads += 1
        return self.backend, False

    def close(self) -> None:
        backend, self.backend, self.key = self.backend, None, None
        if backend is None:
            return
        close_backend(backend)
        del backend
        gc.collect()
        if "torch" in sys.modules:  # give a local model's GPU memory back before the next one loads
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def open_backend(run_cfg, backend_cfg, model_cfg, kept: KeptBackend | None = None) -> tuple[ChatBackend, bool]:
    """The run's backend (reused from `kept` where the configs are equal), answering from the response
    cache under run.output_root when run.cache is true and the backend sends requests; returns it and
    whether it was reused."""
    cache = run_cfg.get("cache", False)
    if not isinstance(cache, bool):
        raise UserError(f"run.cache must be true or false, got {cache!r}.")
    if kept is None:
        backend, reused = build_backend(backend_cfg, model_cfg), False
    else:
        backend, reused = kept.get(backend_cfg, model_cfg)
    if hasattr(backend, "use_cache"):
        from mascompare.backends.response_cache import CACHE_FILE, ResponseCache

        backend.use_cache(ResponseCache(Path(run_cfg.output_root) / CACHE_FILE) if cache else None)
    return backend, reused


def release_backend(backend: ChatBackend, kept: KeptBackend | None = None) -> None:
    """After a run: the response cache is closed; the backend too unless `kept` holds it for the next run."""
    if getattr(backend, "cache", None) is not None:
        backend.cache.close()
        backend.use_cache(None)
    if kept is None or kept.backend is not backend:
        close_backend(backend)


def close_backend(backend: ChatBackend) -> None:
    if hasattr(backend, "close"):
        backend.close()


__all__ = ["BACKENDS", "ChatBackend", "LatentBackend", "Completion", "KeptBackend", "Message", "build_backend", "open_backend",
           "release_backend"]
