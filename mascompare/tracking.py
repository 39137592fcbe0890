"""Runs logged to MLflow: `run.tracking=mlflow` (needs `pip install 'mascompare[tracking]'`).

A run that ends (finished, or stopped by a budget or a fault) becomes an MLflow run: its recorded config
(secrets already masked) as params, its summary as metrics, its records (samples.jsonl, prompts.jsonl,
run.json, the pruned methods' masks) and a view.html of the run as artifacts. The store is
$MLFLOW_TRACKING_URI where set, else a SQLite file under the output root,
`sqlite:///<run.output_root>/mlflow.db`; a SQLite store keeps the artifacts beside it in mlflow-artifacts/
(MLflow treats its plain file store as legacy). A sweep's runs form one experiment named after the sweep's
folder; single runs go to the experiment "mascompare". Running the same run again (a resume) updates
its MLflow run as long as its params are unchanged, and starts a new one otherwise (task.limit raised).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from mascompare.errors import UserError

TRACKERS = ("mlflow",)
DEFAULT_EXPERIMENT = "mascompare"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"
LOCK_FILE = ".mlflow.lock"  # parallel sweep jobs (joblib launcher) take turns at the store
RECORD_FILES = ("samples.jsonl", "prompts.jsonl", "run.json", "masks.json", "masks.png")
TAG_PREFIX = "mascompare."
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
BATCH = 100  # MLflow takes at most 100 params (or tags) per request
UNSAFE_KEY = re.compile(r"[^\w\-. /]")  # MLflow keys: letters, digits, _ - . space /
STATUS = {"finished": "FINISHED", "stopped": "KILLED"}
log = logging.getLogger(__name__)


def check(tracking) -> None:
    """run.tracking is null or a known tracker whose package is installed; else one sentence."""
    if tracking is None:
        return
    if tracking not in TRACKERS:
        raise UserError(f"run.tracking must be null or one of {', '.join(TRACKERS)}, got {tracking!r}.")
    if find_spec("mlflow") is None:
        raise UserError("run.tracking=mlflow needs the mlflow package: pip install 'mascompare[tracking]' "
                        "(or set run.tracking=null).")


def tracking_uri(output_root: str | Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_root).resolve() / STORE_FILE}"


def log_run(cfg, info: dict, run_dir: Path, sweep_dir: Path | None = None) -> str | None:
    """Log a run that ended to MLflow when run.tracking says so; returns the MLflow run's id.

    A store that cannot be written is one warning: the run's own records are on disk either way."""
    if cfg.run.get("tracking") != "mlflow" or info.get("status") not in STATUS:
        return None
    root = Path(cfg.run.output_root)
    try:
        with _store_lock(root), _quiet("mlflow", "alembic"):
            return _log(info, Path(run_dir), root, sweep_dir)
    except Exception as error:  # noqa: BLE001 - whatever the store says, the run itself is done and saved
        log.warning("could not log the run to MLflow at %s (%s: %s); its records are in %s",
                    tracking_uri(root), type(error).__name__, error, run_dir)
        return None


def _log(info: dict, run_dir: Path, root: Path, sweep_dir: Path | None) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mascompare import report

    uri = tracking_uri(root)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, uri, sweep_dir)
    params = {_key(k): _param(v) for k, v in report.flatten(info.get("config") or {}).items()}
    tags = {f"{TAG_PREFIX}{key}": str(info.get(key)) for key in ("run_dir", "config_hash", "method", "task", "model",
                                                                  "backend", "status", "stop_reason")
            if info.get(key) is not None}
    run_id = _same_run(client, experiment_id, info, params)
    if run_id is None:
        name = info.get("method", "run") + (f" {run_dir.name}" if sweep_dir is not None else "")
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        for chunk in _chunks(list(params.items())):
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
    else:
        client.update_run(run_id, status="RUNNING")
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value, step in _metrics(info)]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    for chunk in _chunks(list(tags.items())):
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in chunk])
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(run_id, str(_run_view(run_dir, Path(tmp))))
    client.set_terminated(run_id, STATUS[info["status"]])
    return run_id


def _experiment(client, uri: str, sweep_dir: Path | None) -> str:
    name = sweep_dir.resolve().name if sweep_dir is not None else DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # a SQLite store keeps the artifacts beside it (MLflow would put them in ./mlruns, wherever the command
    # ran); a tracking server decides itself
    local = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    artifacts = (Path(local).resolve().parent / ARTIFACTS_DIR).as_uri() if local else None
    tags = {f"{TAG_PREFIX}sweep_dir": str(sweep_dir.resolve())} if sweep_dir is not None else None
    return client.create_experiment(name, artifact_location=artifacts, tags=tags)


def _same_run(client, experiment_id: str, info: dict, params: dict) -> str | None:
    """The MLflow run this run directory was logged to before with the same params, if any."""
    if not info.get("config_hash"):
        return None
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PREFIX}config_hash` = "
                                                              f"'{info['config_hash']}'")
    for run in found:
        if run.data.tags.get(f"{TAG_PREFIX}run_dir") == str(info.get("run_dir")) and run.data.params == params:
            return run.info.run_id
    return None


def _key(key: str) -> str:
    return UNSAFE_KEY.sub("_", key)


def _param(value) -> str:
    text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 1] + "…"


def _metrics(info: dict) -> list[tuple[str, float, int]]:
    """(key, value, step) for every number of the summary; [low, high] intervals as key_low and key_high,
    per-repeat lists with the repeat as the step."""
    summary = dict(info.get("summary") or {})
    if info.get("model_load_s") is not None:
        summary["model_load_s"] = info["model_load_s"]
    metrics = []
    for key, value in summary.items():
        if _is_number(value):
            metrics.append((_key(key), float(value), 0))
        elif (isinstance(value, (list, tuple)) and key.endswith("_ci95") and len(value) == 2
              and all(map(_is_number, value))):
            stem = _key(key.removesuffix("_ci95"))
            metrics += [(f"{stem}_low", float(value[0]), 0), (f"{stem}_high", float(value[1]), 0)]
        elif isinstance(value, (list, tuple)) and key.endswith("_per_repeat"):
            metrics += [(_key(key), float(v), step) for step, v in enumerate(value) if _is_number(v)]
    return metrics


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _chunks(items: list) -> list[list]:
    return [items[k:k + BATCH] for k in range(0, len(items), BATCH)]


def _run_view(run_dir: Path, out: Path) -> Path:
    """view.html of the run alone."""
    from mascompare import report, view

    return view.write(report.compare(report.collect([run_dir])), out)


@contextmanager
def _store_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextmanager
def _quiet(*names: str):
    """MLflow and alembic announce each table they create (once per new store); keep the run's log to the run."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
