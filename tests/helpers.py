"""Test helpers beyond conftest's fixtures: config sections built from the shipped presets with keys set
directly in Python (any type, so that tests can hand the schema values the command line cannot spell)."""

from __future__ import annotations

import copy
import functools

from omegaconf import OmegaConf


@functools.cache
def _preset(group: str, name: str) -> dict:
    from mascompare.app import compose_config

    return OmegaConf.to_container(compose_config(f"{group}={name}")[group], resolve=True)


def merged(base: dict, keys: dict) -> dict:
    """`base` with `keys` set; a mapping given for a mapping is merged into it, key by key."""
    result = copy.deepcopy(base)
    for key, value in keys.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def task_section(name: str, **keys) -> dict:
    """conf/task/<name>.yaml as composed (with `offset`), and `keys` set on it."""
    return merged(_preset("task", name), keys)


def task_with(name: str, **keys):
    """The task conf/task/<name>.yaml builds, with `keys` set (raises the schema's UserError for bad ones)."""
    from mascompare.tasks import TASKS, build_task

    return build_task(TASKS.get(name).Settings.of(task_section(name, **keys), "task"))


def section(group: str, name: str, **keys) -> dict:
    """Any config group's preset (backend/openai, model/gpt-4o-mini, ...) as composed, with `keys` set."""
    return merged(_preset(group, name), keys)
