"""The one runner: task -> samples -> method over batches -> score -> one line per sample -> run.json.

Every method goes through this loop, so every method is scored by the same extractor,
timed the same way (model loading excluded) and written in the same format.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mascompare import results
from mascompare.accounting import Accountant, summed
from mascompare.backends import BACKENDS, build_backend
from mascompare.display import Progress, print_summary
from mascompare.errors import UserError, is_int_at_least
from mascompare.generation import GenerationConfig
from mascompare.methods import METHODS, build_method
from mascompare.tasks import build_task

log = logging.getLogger(__name__)

# Keys that change where and how a run is shown, not what it computes: left out of the run's
# identity, so that changing them (or asking for more samples with task.limit) resumes the same run.
NON_IDENTITY_KEYS = {"run": ("output_root", "resume", "progress"), "task": ("limit",)}


def run_identity(cfg: DictConfig | dict) -> dict:
    """The resolved config that decides a run's results (without Hydra's own settings)."""
    if isinstance(cfg, dict):
        identity = {k: v for k, v in cfg.items() if k != "hydra"}
    else:  # resolve section by section: resolving `hydra` would recurse into the run dir itself
        identity = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                    for k in cfg if k != "hydra"}
    for section, keys in NON_IDENTITY_KEYS.items():
        identity[section] = {k: v for k, v in identity.get(section, {}).items() if k not in keys}
    return identity


def default_run_dir(cfg) -> Path:
    """results/<task>/<method>/<model>/<config-hash>: the same command always lands in the same place."""
    return (
        Path(cfg.run.output_root) / cfg.task.name / cfg.method.name / str(cfg.model.name).replace("/", "--")
        / results.config_hash(run_identity(cfg))
    )


def _check_batch_size(value) -> int:
    if not is_int_at_least(value, 1):
        raise UserError(f"run.batch_size must be a positive integer, got {value!r}.")
    return value


def score_row(task, sample, output, wall_time_s: float, records) -> dict:
    extraction = task.extract(output.final_text or "")
    usage = summed(records)
    return {
        "id": sample.id,
        "question_hash": results.short_hash(sample.question),
        "target": sample.target,
        "target_hash": results.short_hash(sample.target),
        "final_text": output.final_text,
        "extracted_strict": extraction.strict,
        "extracted_flexible": extraction.flexible,
        "correct_strict": task.score(extraction.strict, sample.target),
        "correct_flexible": task.score(extraction.flexible, sample.target),
        "extractor_version": task.extractor_version,
        "error": output.error,
        "usage": usage,
        "agents": [r.to_dict() for r in records],
        "transcript": [vars(t) for t in output.transcript],
        "wall_time_s": wall_time_s,
        "diagnostics": output.diagnostics,
        "metadata": sample.metadata,
    }


def error_row(sample, error: str, records, output=None) -> dict:
    """A failed sample: kept with whatever the method produced, and retried on resume."""
    return {"id": sample.id, "target": sample.target, "error": error, "usage": summed(records),
            "agents": [r.to_dict() for r in records],
            "final_text": output.final_text if output else None,
            "transcript": [vars(t) for t in output.transcript] if output else []}


def execute(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run (or resume) one configuration into out_dir; returns run.json's contents."""
    gen = GenerationConfig.from_cfg(cfg.generation)
    batch_size = _check_batch_size(cfg.run.batch_size)
    if cfg.run.primary_metric not in ("strict", "flexible"):
        raise UserError(f"run.primary_metric must be 'strict' or 'flexible', got {cfg.run.primary_metric!r}.")
    method_cls = METHODS.get(cfg.method.name)
    backend_cls = BACKENDS.get(cfg.backend.name)
    missing = set(method_cls.requires) - set(backend_cls.capabilities)
    if missing:
        raise UserError(
            f"Method '{cfg.method.name}' needs {', '.join(sorted(missing))}, which backend "
            f"'{cfg.backend.name}' does not provide; use backend=hf."
        )
    if hasattr(method_cls, "check_config"):
        method_cls.check_config(cfg.method)  # before the model loads, which can take minutes
    task = build_task(cfg.task)
    samples = task.load()

    store = results.RunStore(out_dir)
    # what the method reported last time (e.g. calibration): kept when a resumed run has nothing left to do
    earlier_method_info = (store.read_run() or {}).get("method_info") if cfg.run.resume else None
    if not cfg.run.resume:
        store.reset()
    done = store.completed_ids()
    todo = [s for s in samples if s.id not in done]
    info = {
        "status": "running",
        "run_dir": str(store.dir),
        "task": cfg.task.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "backend": cfg.backend.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "config_hash": results.config_hash(run_identity(cfg)),
        "versions": results.package_versions(),
        "git_sha": results.git_sha(),
        "started": results.now_iso(),
        "samples_total": len(samples),
        "samples_resumed": len(samples) - len(todo),
        "method_info": earlier_method_info,
    }
    log.info("%s: %d samples, %d already done, %d to run -> %s", cfg.task.name, len(samples),
             len(samples) - len(todo), len(todo), store.dir)

    if todo:
        load_start = time.perf_counter()
        backend = build_backend(cfg.backend, cfg.model)
        info["model_load_s"] = round(time.perf_counter() - load_start, 3)
        accountant = Accountant()
        method = build_method(cfg.method, backend, task, gen, accountant)
        if hasattr(method, "prepare"):  # optional hook: once-per-run work before evaluation (e.g. calibration)
            method.prepare(store.dir, samples, resume=cfg.run.resume)
        if hasattr(method, "run_info"):  # optional: what the method reports beyond the samples
            info["method_info"] = method.run_info()
        store.write_run(info)
        _run_batches(method, task, todo, batch_size, store, accountant, cfg, already=len(samples) - len(todo))

    ids = {s.id for s in samples}
    rows = [row for sid, row in store.records().items() if sid in ids]
    info.update(status="finished", finished=results.now_iso(), summary=results.summarize(rows))
    store.write_run(info)
    print_summary(info)
    return info


def _run_batches(method, task, todo, batch_size, store, accountant, cfg, already: int) -> None:
    with Progress(total=len(todo) + already, done=already, enabled=cfg.run.progress) as progress:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            began = time.perf_counter()
            try:
                outputs = method.run(batch)
            except UserError:
                raise
            except Exception as exc:  # one failed batch is recorded, not fatal: resume retries it
                log.exception("batch starting at %s failed", batch[0].id)
                outputs = None
                failure = f"{type(exc).__name__}: {exc}"
            share = (time.perf_counter() - began) / len(batch)
            for i, sample in enumerate(batch):
                records = accountant.take(sample.id)
                if outputs is None:
                    row = error_row(sample, failure, records)
                elif outputs[i].error:
                    row = error_row(sample, outputs[i].error, records, outputs[i])
                else:
                    row = score_row(task, sample, outputs[i], share, records)
                store.append(row)
                progress.advance(row, cfg.run.primary_metric)
