"""Task registry: `task=<name>` resolves here by name; each task's config lives in conf/task/<name>.yaml."""

from mascompare.registry import Registry
from mascompare.tasks.base import Extraction, Sample, Task

TASKS = Registry(
    "task",
    {
        "gsm8k": "mascompare.tasks.gsm8k:GSM8K",
        "arith": "mascompare.tasks.arith:Arith",
        "custom": "mascompare.tasks.custom:CustomJSONL",
    },
)


def build_task(cfg) -> Task:
    """Build the task named by cfg.name from its config node (conf/task/<name>.yaml)."""
    return TASKS.get(cfg.name)(cfg)


__all__ = ["TASKS", "Extraction", "Sample", "Task", "build_task"]
