"""The Hydra application: compose the config, run it, return the primary metric.

`mascompare run ...` hands its arguments to `main` in-process, so multirun, sweepers and
launchers work as with any Hydra app; sweepers optimise the returned accuracy.

A run directory changes only when its run really runs: the config is checked first, then the run
takes an OS lock on its directory (a second identical run waits or stops, `run.on_busy`; the kernel
drops the lock of a process that dies), and only then are its records (`.hydra/`, samples, run.json)
written. A command refused before that leaves no trace, not even an empty directory.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
from contextlib import contextmanager, nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mascompare import tracking
from mascompare.backends import KeptBackend
from mascompare.config import HYDRA_CONFIG_PATH, hydra_compose_context, search_path_overrides
from mascompare.errors import UserError
from mascompare.identity import default_run_dir, identity_hash, sweep_name
from mascompare.masking import mask_config, mask_override
from mascompare.records import now_iso
from mascompare.runner import execute
from mascompare.settings import validate
from mascompare.store import RUN_FILE, SAMPLES_FILE, overwrite_json, write_json

RECORD_SUBDIR = ".hydra"  # where Hydra keeps a job's composed config; written here once the run starts
log = logging.getLogger(__name__)

# hydra.run.dir is computed from the run's own config, so the same command resumes in place.
OmegaConf.register_new_resolver("mascompare_run_dir", lambda *, _root_: str(default_run_dir(_root_)), replace=True)

# The jobs of a sweep that run in this process share one backend while its configs stay equal.
SWEEP_BACKEND = KeptBackend()


# use_cache: Hydra copies the sweep's resolver cache into every job's config, so each job sees the
# directory the sweep was given (the cache key is the argument's text), not one named after its own overrides.
OmegaConf.register_new_resolver("mascompare_sweep_name", sweep_name, replace=True, use_cache=True)


def compose_config(*overrides: str) -> DictConfig:
    """The config `mascompare run <overrides>` would use, without running it (scripts, benchmarks, tests)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not any(o.startswith("hydra.searchpath=") for o in overrides):
        overrides += tuple(search_path_overrides())
    GlobalHydra.instance().clear()
    try:
        with hydra_compose_context():
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@hydra.main(config_path=HYDRA_CONFIG_PATH, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    dry_run = cfg.run.get("dry_run") is True
    before = Before.of(out_dir)
    started = []  # set once the run writes its records: from then on a stop is recorded in run.json

    def on_start():
        started.append(True)
        save_hydra_record(cfg, hydra_cfg, out_dir)

    try:
        settings = validate(cfg)
        check_same_config(cfg, out_dir)
        with nullcontext() if dry_run else run_lock(out_dir, cfg.run.on_busy):
            record = execute(cfg, out_dir, kept=SWEEP_BACKEND if multirun else None, on_start=on_start,
                             settings=settings)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        if interrupted:
            for number in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the record of the first
                signal.signal(number, signal.SIG_IGN)
        reason = str(exc) if isinstance(exc, UserError) else fault_reason(exc, cfg, bool(started))
        if started:  # the run had begun: run.json says it stopped, and why
            mark_stopped(out_dir, reason)
        elif not multirun:  # nothing ran: leave no trace, as if the command had been refused before Hydra made the
            before.restore(out_dir, Path(cfg.run.output_root))  # folder (a sweep's job keeps it for failed.json)
        if multirun and not interrupted:
            raise  # Hydra records the failed job (failed.json in its directory) and names its overrides
        if interrupted:
            raise StopRun(reason, SIGNAL_EXIT.get(getattr(exc, "signal_name", "SIGINT"), 130)) from exc
        raise StopRun(sentence(reason), exc.status if isinstance(exc, UserError) else RUN_FAULT) from exc
    if record.status == "dry_run":  # a DryRunReport: nothing ran, so nothing to track
        remove_if_unused(out_dir, Path(cfg.run.output_root))
        return None
    tracking.log_run(cfg, record.to_json(), out_dir, Path(hydra_cfg.sweep.dir) if multirun else None)
    if record.status == "stopped" and record.summary.errors and not record.summary.n and not multirun:
        raise StopRun(f"The run stopped: {record.stop_reason}.", RUN_FAULT)
    return record.summary.accuracy(settings.run.primary_metric)


class Before:
    """What a run directory held before this command, so that a run that never began leaves it as it was: Hydra
    made the folder (and its run.log) before the run could refuse or fail."""

    def __init__(self, existed: bool, log_size: int | None):
        self.existed, self.log_size = existed, log_size

    @classmethod
    def of(cls, out_dir: Path) -> "Before":
        existed = any((out_dir / name).exists() for name in (RUN_FILE, SAMPLES_FILE, RECORD_SUBDIR))
        log = out_dir / "run.log"
        # Hydra opens run.log before the job starts; its size now is what earlier runs wrote
        return cls(existed, log.stat().st_size if existed and log.is_file() else None)

    def restore(self, out_dir: Path, root: Path) -> None:
        log = out_dir / "run.log"
        if not self.existed:
            remove_if_unused(out_dir, root)
        elif self.log_size is not None and log.is_file() and log.stat().st_size > self.log_size:
            with open(log, "r+b") as f:  # what this command logged before it stopped goes with it
                f.truncate(self.log_size)


def check_same_config(cfg, out_dir: Path) -> None:
    """A sweep directory reused with other overrides (job N is now another configuration) must not mix results."""
    saved = _read_run_json(out_dir)
    if not saved or "config_hash" not in saved:
        return
    expected = identity_hash(cfg)
    if saved["config_hash"] != expected:
        raise UserError(f"{out_dir} holds a run of another configuration (config hash {saved['config_hash']}, "
                        f"this one is {expected}); run in another directory (e.g. another hydra.sweep.dir).")


@contextmanager
def run_lock(run_dir: Path, on_busy: str):
    """An exclusive flock on the run directory itself for as long as the run runs.

    The kernel releases it when the process ends, however it ends, so a crashed run never blocks the next.
    """
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_busy != "wait":
                raise UserError(f"Another mascompare process is running this configuration in {run_dir} right now; "
                                "let it finish (the same command then resumes its results), or set "
                                "run.on_busy=wait to start once it has.") from None
            log.info("waiting for the other process running %s to finish (run.on_busy=wait)", run_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def save_hydra_record(cfg: DictConfig, hydra_cfg, out_dir: Path) -> None:
    """What Hydra itself would keep in .hydra/ (config, hydra settings, overrides), with secrets masked."""
    record = out_dir / RECORD_SUBDIR
    record.mkdir(parents=True, exist_ok=True)
    overrides = [mask_override(o) for o in hydra_cfg.overrides.task]
    hydra_node = OmegaConf.to_container(hydra_cfg, resolve=False)
    hydra_node["overrides"]["task"] = overrides
    files = {"config.yaml": mask_config(OmegaConf.to_container(cfg, resolve=False)),
             "hydra.yaml": {"hydra": hydra_node}, "overrides.yaml": overrides}
    for name, node in files.items():
        OmegaConf.save(OmegaConf.create(node), record / name)


def detach_log(path: Path) -> None:
    """Close the root logger's handler of `path` (Hydra's run.log of a run that is going away), so that a later
    run in this process does not log into a folder that no longer exists."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.absolute():
            root.removeHandler(handler)
            handler.close()


def remove_if_unused(directory: Path, root: Path) -> None:
    """Remove what Hydra created before the run was refused: the run directory and its empty parents, up to
    the output root (or up to the folder that existed before the command, where the command line said which),
    with the log file a refused run may have started; nothing of a directory where a run ever ran."""
    if any((directory / name).exists() for name in (RUN_FILE, SAMPLES_FILE, RECORD_SUBDIR)):
        return
    detach_log(directory / "run.log")
    (directory / "run.log").unlink(missing_ok=True)
    keep = Path(existing_before) if existing_before else root
    while keep.resolve() in directory.resolve().parents and directory.is_dir():
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


existing_before: str | None = None  # set by the command line: the output root's closest folder that already existed


RUN_FAULT = 1  # exit status of a run stopped by a fault of its environment (a full disk, ...)
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as a shell reports it
# what each way of failing to write asks of the user
WRITE_FAULTS = {errno.ENOSPC: "make room there", errno.EDQUOT: "make room there (the disk quota is used up)",
                errno.EROFS: "make it writable (it is a read-only file system)",
                errno.EACCES: "give this user write access to it"}


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised in the main thread like a Ctrl-C, so that the run stops the same way and says why."""

    signal_name = "SIGTERM"


def fault_reason(exc: BaseException, cfg, started: bool = True) -> str:
    if isinstance(exc, KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        if not started:
            return f"{what} before the run began, so nothing was written; run the same command again to start it"
        return f"{what}; run the same command again to resume"
    if isinstance(exc, OSError) and exc.errno in WRITE_FAULTS:
        where = f" {exc.filename}" if exc.filename else ""
        root = Path(str(cfg.run.output_root)).expanduser().resolve()
        inside = exc.filename and root in Path(str(exc.filename)).resolve().parents
        setting = f" (run.output_root={cfg.run.output_root})" if inside else ""
        return (f"writing{where} failed: {exc.strerror}{setting}; {WRITE_FAULTS[exc.errno]} and run the same "
                "command again to resume")
    return f"{type(exc).__name__}: {exc}"


def sentence(reason: str) -> str:
    """A reason as a sentence: a capital first letter, unless it begins with a setting's or a file's name that must
    stay as spelled (model.path, run.json), and a full stop."""
    first = reason.split(" ", 1)[0]
    start = reason[0].upper() + reason[1:] if first.isalpha() else reason
    return start + ("" if reason.endswith(".") else ".")


def mark_stopped(out_dir: Path, reason: str) -> None:
    """Record in run.json that the run stopped and why; a disk too full even for that is logged instead."""
    info = _read_run_json(out_dir)
    if not info or info.get("status") != "running":
        return
    info.update(status="stopped", stop_reason=reason, finished=now_iso())
    try:  # written aside and renamed, so that a full disk leaves the old run.json whole
        write_json(out_dir / RUN_FILE, info)
        return
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            log.error("could not record the stop in %s (%s): %s", out_dir / RUN_FILE, error.strerror, reason)
            return
    try:  # no room for a copy: over the old one, in its own space
        overwrite_json(out_dir / RUN_FILE, info)
    except OSError as error:
        log.error("could not record the stop in %s (%s): %s", out_dir / RUN_FILE, error.strerror, reason)


def _read_run_json(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class StopRun(SystemExit):
    """Carries one sentence past Hydra's job wrapper (which reports any Exception with its own banner)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(code)
        self.message = message
