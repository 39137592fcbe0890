"""Every config value the runner reads, checked for type and range before anything loads or is written.

Methods and tasks check their own sections (`check_config`, the task's constructor); this module
checks the shared ones (generation, run, backend, model.price) and where results will be written.
Each failure is one sentence naming the key, what it holds and what would be right.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mascompare import tracking
from mascompare.errors import UserError, is_int_at_least

ON_BUSY = ("stop", "wait")
PRIMARY_METRICS = ("strict", "flexible")
HF_DTYPES = ("auto", "float32", "bfloat16", "float16")
HF_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")
PRICE_KEYS = ("input", "output", "cached_input")
MAX_SEED = 2**63 - 1  # torch and the APIs take 64-bit seeds
MIN_FREE_BYTES = 1 << 20  # less than this on the results disk and the first samples could not be written


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(cfg, path: str):
    node = cfg
    for part in path.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    return node


def _require(cfg, path: str, ok, wanted: str, optional: bool = False) -> None:
    """Fail with one sentence unless the value at path (absent counts as null) passes `ok`."""
    value = _value(cfg, path)
    if (value is None and optional) or (value is not None and ok(value)):
        return
    raise UserError(f"{path} must be {wanted}{' or null' if optional else ''}, got {value!r}.")


def _in(choices):
    return lambda v: isinstance(v, str) and v in choices


def _choices(choices) -> str:
    return "one of " + ", ".join(choices)


def check_config(cfg) -> None:
    """All the shared sections; raises UserError at the first bad value."""
    check_generation(cfg)
    check_run(cfg)
    check_backend(cfg)
    check_price(cfg)


def check_generation(cfg) -> None:
    _require(cfg, "generation.max_new_tokens", lambda v: is_int_at_least(v, 1), "an integer of at least 1")
    _require(cfg, "generation.temperature", lambda v: is_number(v) and v >= 0, "0 (greedy) or a positive number")
    _require(cfg, "generation.top_p", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
    _require(cfg, "generation.top_k", lambda v: is_int_at_least(v, 0), "0 (off) or a positive integer")
    _require(cfg, "generation.seed", lambda v: is_int_at_least(v, 0) and v <= MAX_SEED,
             f"an integer from 0 to {MAX_SEED}")


def check_run(cfg) -> None:
    for key in ("resume", "progress", "dry_run", "cache"):
        _require(cfg, f"run.{key}", lambda v: isinstance(v, bool), "true or false")
    _require(cfg, "run.output_root", lambda v: isinstance(v, str) and v.strip() != "", "a directory path")
    _require(cfg, "run.primary_metric", _in(PRIMARY_METRICS), _choices(PRIMARY_METRICS))
    _require(cfg, "run.on_busy", _in(ON_BUSY), _choices(ON_BUSY))
    _require(cfg, "run.max_cost_usd", lambda v: is_number(v) and v >= 0, "a non-negative number of US dollars",
             optional=True)
    tracking.check(_value(cfg, "run.tracking"))


def check_backend(cfg) -> None:
    name = _value(cfg, "backend.name")
    if name == "hf":
        _require(cfg, "backend.device", lambda v: isinstance(v, str) and HF_DEVICE.match(v),
                 "auto, cpu, cuda, cuda:N or mps")
        _require(cfg, "backend.dtype", _in(HF_DTYPES), _choices(HF_DTYPES))
        _require(cfg, "backend.decode_rows", lambda v: is_int_at_least(v, 1), "an integer of at least 1",
                 optional=True)
    elif name == "openai":
        _require(cfg, "backend.base_url", lambda v: isinstance(v, str), "a URL such as http://127.0.0.1:8000/v1",
                 optional=True)
        _require(cfg, "backend.api_key", lambda v: isinstance(v, str), "a string", optional=True)
        _require(cfg, "backend.api_key_file", lambda v: isinstance(v, str), "a file path", optional=True)
        _require(cfg, "backend.max_concurrency", lambda v: is_int_at_least(v, 1), "an integer of at least 1")
        _require(cfg, "backend.max_retries", lambda v: is_int_at_least(v, 0), "an integer of at least 0")
        for key in ("timeout_s", "backoff_s", "max_backoff_s"):
            _require(cfg, f"backend.{key}", lambda v: is_number(v) and v > 0, "a positive number of seconds")
        _require(cfg, "backend.token_limit_param", _in(TOKEN_LIMIT_PARAMS), _choices(TOKEN_LIMIT_PARAMS))
        _require(cfg, "backend.omit_params", lambda v: hasattr(v, "__iter__") and not isinstance(v, str)
                 and all(isinstance(p, str) for p in v), "a list of request parameter names", optional=True)


def check_price(cfg) -> None:
    """model.price: null, or input and output (and optionally cached_input) in USD per million tokens, none negative."""
    price = _value(cfg, "model.price")
    if price is None:
        return
    wanted = ("null or {input: X, output: Y} in USD per million tokens (optionally cached_input), "
              "each a non-negative number")
    if not hasattr(price, "keys") or not {"input", "output"} <= set(price.keys()) \
            or set(price.keys()) - set(PRICE_KEYS):
        raise UserError(f"model.price must be {wanted}, got {_plain(price)}.")
    for key in price.keys():
        value = price[key]
        if not (is_number(value) and value >= 0):
            raise UserError(f"model.price.{key} must be a non-negative number (USD per million tokens), got {value!r}.")


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def check_output_root(root: str | Path) -> Path:
    """Refuse, before anything is written, an output root that is a file, cannot be written or sits on a full disk.

    Returns the closest folder of it that exists (the root itself, or a parent).
    """
    root = Path(root).expanduser()
    where = f"run.output_root={root}"
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == root else f"lies under {existing}, which is a file"
        raise UserError(f"{where} {what}; set run.output_root to a directory.")
    try:
        stats = os.statvfs(existing)
    except OSError as error:
        raise UserError(f"{where} cannot be used ({error.strerror}); set run.output_root to a writable directory.") \
            from None
    if stats.f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{where} is not writable ({existing} is read-only for this user); "
                        "set run.output_root to a writable directory.")
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise UserError(f"{where} is on a full disk (under 1 MB free at {existing}); free some space or set "
                        "run.output_root to another disk.")
    return existing
