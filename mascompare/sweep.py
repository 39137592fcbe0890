"""The Hydra callback that writes a sweep's comparison (and its view.html) into its multirun directory.

Registered in conf/config.yaml under hydra.callbacks. Hydra calls `on_multirun_end` only when
the sweeper returns; Hydra's BasicSweeper instead raises the first failed job's error once its
batch has run, so `on_multirun_end` never comes. Each failed job therefore leaves `failed.json`
in its directory, and from the first failure on every job that ends rewrites the comparison: the
last job to end writes it whole, failures listed. `on_job_end` runs wherever the job runs (in a
worker process under the joblib launcher), so the rewrites take a file lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mascompare.errors import UserError
from mascompare.store import FAILURE_FILE, RUN_FILE, plural

log = logging.getLogger(__name__)
LOCK_FILE = ".comparison.lock"


class CompareSweep(Callback):
    def __init__(self, reference: str | None = None, by: list[str] | None = None, metric: str = "flexible"):
        self.reference = reference
        self.by = list(by) if by is not None else None  # None: the sweep's own axes
        self.metric = metric

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        record = Path(config.hydra.runtime.output_dir) / FAILURE_FILE
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # reading .return_value would raise it here
            record.write_text(json.dumps({"error": _one_line(error), "overrides": list(job_return.overrides or [])}))
        else:
            record.unlink(missing_ok=True)  # a job that failed before and now succeeded
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if any(sweep_dir.rglob(FAILURE_FILE)):
            self._write(sweep_dir, config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        comparison = self._write(sweep_dir, config)
        if comparison is not None:  # the sweep's result on the terminal, and where its files are
            from rich.console import Console

            from mascompare import report

            report.render(comparison, Console())
            Console().print(f"comparison.md, .csv, .tex and the plot pareto.png are in {sweep_dir}, with view.html "
                            "(every question and agent call, for a browser); "
                            f"`mascompare compare {sweep_dir}` shows this again.", soft_wrap=True, highlight=False)

    def _write(self, sweep_dir: Path, config: DictConfig):
        """The comparison written, or None. Never fails the sweep: a comparison that cannot be written is
        logged and skipped."""
        if not any(sweep_dir.rglob(RUN_FILE)):  # nothing ran (all failed early, or a dry run): leave no trace
            return None
        from mascompare import report, view  # pandas and matplotlib: only when a comparison is written

        try:
            with open(sweep_dir / LOCK_FILE, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                collection = report.collect([sweep_dir])
                if not collection.runs:
                    return None
                by = self.by if self.by is not None else sweep_axes(_sweep_config(sweep_dir, config), collection)
                try:
                    comparison = report.compare(collection, self.reference, by, self.metric)
                except UserError as exc:  # e.g. the reference's own job failed: the others still get compared
                    log.warning("%s Comparing with the default reference instead.", exc)
                    comparison = report.compare(collection, None, by, self.metric)
                report.write(comparison, sweep_dir)
                view.write(comparison, sweep_dir, (sweep_dir / "pareto.png").read_bytes())
        except UserError as exc:
            log.warning("no comparison for %s: %s", sweep_dir, exc)
            return None
        except Exception:
            log.exception("writing the comparison for %s failed", sweep_dir)
            return None
        failed = f" ({plural(len(collection.failures), 'failed job')})" if collection.failures else ""
        log.info("comparison of %s%s: %s", plural(len(collection.runs), "run"), failed, sweep_dir / "comparison.md")
        return comparison


def sweep_axes(config: DictConfig, collection) -> list[str]:
    """The config keys a sweep varies (command line or hydra.sweeper.params), as comparison columns.

    Config-group choices (method=..., +experiment/...=...) are not keys; the method is a column anyway.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    texts = list(config.hydra.overrides.task) + [f"{key}={value}" for key, value in params.items()]
    known = set().union(*(run.config for run in collection.runs))
    axes = []
    for override in OverridesParser.create().parse_overrides(texts):
        key = override.key_or_group
        if override.is_sweep_override() and key in known and key not in axes:
            axes.append(key)
    return axes


def _sweep_config(sweep_dir: Path, config: DictConfig) -> DictConfig:
    """The sweep's own config (its overrides hold the swept lists); a job's config holds one value each."""
    saved = sweep_dir / "multirun.yaml"  # written by Hydra's BasicSweeper
    return OmegaConf.load(saved) if saved.is_file() else config


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}".rstrip(": ")
