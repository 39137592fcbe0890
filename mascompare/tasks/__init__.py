"""Task registry: `task=<name>` resolves here by name; each task's config lives in conf/task/<name>.yaml."""

from mascompare.registry import Registry
from mascompare.tasks.base import Extraction, Sample, Task, TaskSettings

TASKS = Registry(
    "task", Task,
    {
        "gsm8k": "mascompare.tasks.gsm8k:GSM8K",
        "arith": "mascompare.tasks.arith:Arith",
        "custom": "mascompare.tasks.custom:CustomJSONL",
        "svamp": "mascompare.tasks.math_word:SVAMP",
        "multiarith": "mascompare.tasks.math_word:MultiArith",
        "aime2024": "mascompare.tasks.math_word:AIME2024",
        "aime2025": "mascompare.tasks.math_word:AIME2025",
        "mmlu": "mascompare.tasks.multiple_choice:MMLU",
        "arc_easy": "mascompare.tasks.multiple_choice:ARCEasy",
        "arc_challenge": "mascompare.tasks.multiple_choice:ARCChallenge",
        "medqa": "mascompare.tasks.multiple_choice:MedQA",
        "gpqa_diamond": "mascompare.tasks.multiple_choice:GPQADiamond",
        "aqua": "mascompare.tasks.multiple_choice:AQuA",
        "humaneval": "mascompare.tasks.code:HumanEval",
        "humaneval_plus": "mascompare.tasks.code:HumanEvalPlus",
        "mbpp": "mascompare.tasks.code:MBPP",
        "mbpp_plus": "mascompare.tasks.code:MBPPPlus",
    },
)


def build_task(settings: TaskSettings) -> Task:
    """The task named by its settings (conf/task/<name>.yaml, validated)."""
    return TASKS.get(settings.name)(settings)


def task_settings(node) -> TaskSettings:
    """A composed `task` section as its task's typed settings (settings.validate does this for whole configs)."""
    return TASKS.get(node.name).Settings.of(node, "task")


__all__ = ["TASKS", "Extraction", "Sample", "Task", "build_task", "task_settings"]
