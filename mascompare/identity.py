"""A run's identity: which settings decide its results, the hash that names its directory, and the names of
sweep directories. The same command always lands in the same place, so running it again resumes it."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mascompare.config import SHIPPED
from mascompare.masking import is_secret_key

# Keys that change where and how a run is shown, sent or capped, not what it computes: left out of
# the run's identity, so that changing them (or asking for more samples with task.limit) resumes
# the same run, e.g. against a server restarted on another port, or with a higher budget.
# run.repeats is one of them: more repeats add to the same run, as a higher task.limit adds samples.
NON_IDENTITY_KEYS = {
    "run": ("output_root", "resume", "progress", "max_cost_usd", "dry_run", "cache", "repeats", "on_busy", "tracking",
            "threads"),
    "task": ("limit",),
    "backend": ("base_url", "api_key", "api_key_file", "max_concurrency", "stream", "timeout_s", "max_retries",
                "backoff_s", "max_backoff_s", "fast_path_check"),
}
MAX_SWEEP_NAME = 80  # characters of a sweep directory's readable part
# Method keys that came after runs were written, at the values that do what those runs did: a key holding its
# value is left out of the identity, so that an earlier command still lands in (and resumes) its directory. The
# message formats likewise, where they equal their preset's (conf/method/pruned_mas.yaml, conf/roles/mas.yaml).
ADDED_METHOD_DEFAULTS = {"fewshot": None, "prompt_pack": None, "prune_count": "keep_half_up", "prune_every": None,
                         "graph_draw": "per_question", "test_graph": "fixed"}
FORMATS_PRESETS = ("method/pruned_mas.yaml", "roles/mas.yaml")


def short_hash(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def config_hash(config: dict) -> str:
    return short_hash(json.dumps(config, sort_keys=True, default=str), 10)


def run_identity(cfg: DictConfig | dict) -> dict:
    """The resolved config that decides a run's results (without Hydra's own settings)."""
    if isinstance(cfg, dict):
        identity = {k: v for k, v in cfg.items() if k != "hydra"}
    else:  # resolve section by section: resolving `hydra` would recurse into the run dir itself
        identity = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                    for k in cfg if k != "hydra"}
    for section, keys in NON_IDENTITY_KEYS.items():
        identity[section] = {k: v for k, v in identity.get(section, {}).items() if k not in keys}
    if identity["task"].get("offset") == 0:  # as every run before task.offset existed: their directories still resume
        del identity["task"]["offset"]
    method = identity.get("method") or {}
    for key, value in ADDED_METHOD_DEFAULTS.items():
        if key in method and method[key] == value:
            del method[key]
    for node in (method, method.get("roles")):
        if isinstance(node, dict) and node.get("formats") in preset_formats():
            del node["formats"]
    for agent in [*(method.get("agents") or []), method.get("decider") or {}]:
        if isinstance(agent, dict) and agent.get("answers") is True:
            del agent["answers"]  # a pruned method's agents answered before the key was written out: they still resume
    return identity


@functools.cache
def preset_formats() -> list[dict]:
    """The message formats the presets give (they did not exist as keys before: runs with them resume)."""
    return [OmegaConf.to_container(OmegaConf.create(SHIPPED.joinpath(*preset.split("/")).read_text(encoding="utf-8")).formats)
            for preset in FORMATS_PRESETS]


def identity_hash(cfg: DictConfig | dict) -> str:
    """The hash that names a run's directory and that run.json keeps as `config_hash`."""
    return config_hash(run_identity(cfg))


def default_run_dir(cfg) -> Path:
    """results/<task>/<method>/<model>/<config-hash>: the same command always lands in the same place."""
    return (Path(cfg.run.output_root) / cfg.task.name / cfg.method.name / str(cfg.model.name).replace("/", "--")
            / identity_hash(cfg))


def sweep_name(overrides) -> str:
    """A sweep's directory name from its own command-line overrides, so that the same sweep resumes in place.

    Keys that do not change results (run.progress, task.limit, ...) are left out, as from a run's identity:
    a sweep re-run with a higher task.limit extends its jobs. The overrides keep their order (job numbers
    follow it) and a hash of them is appended, so that two sweeps never share a directory by accident.
    """
    kept = [str(o) for o in overrides if not _non_identity(str(o)) and not is_secret_key(str(o).split("=", 1)[0])]
    readable = "__".join(re.sub(r"[^\w.\-]+", "_", o).strip("_") for o in kept)[:MAX_SWEEP_NAME] or "defaults"
    return f"{readable}-{short_hash(json.dumps(kept), 8)}"


def _non_identity(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    section, _, leaf = key.partition(".")
    return key.startswith("hydra.") or leaf in NON_IDENTITY_KEYS.get(section, ())
