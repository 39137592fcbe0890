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


def sample_record(sid: str, correct: bool = True, error: str | None = None, repeat: int = 0, batch: int | None = None,
                  wall: float = 0.5, capped: int = 0, question: str | None = None, **usage):
    """A samples.jsonl record of one answered (or failed) sample: one decoding call of 10 input and 5 output
    tokens unless `usage` says otherwise."""
    from mascompare.records import SampleRecord, Usage

    figures = {"input_tokens": 10, "context_tokens": 10, "output_tokens": 5, "forward_passes": 5, "calls": 1,
               "decoding_calls": 1, "calls_at_max_new_tokens": capped, "wall_time_s": wall, **usage}
    scored = error is None
    return SampleRecord(id=sid, repeat=repeat, batch=batch, target="4", error=error, usage=Usage(**figures),
                        agents=[], transcript=[], final_text="4" if scored else None,
                        question_hash=question, correct_strict=correct if scored else None,
                        correct_flexible=correct if scored else None)
