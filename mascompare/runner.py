"""The one runner: task -> samples -> method over batches -> score -> one line per sample -> run.json.

Every method goes through this loop, so every method is scored by the same extractor,
timed the same way (model loading excluded) and written in the same format.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from copy import copy
from dataclasses import replace
from functools import partial
from itertools import count
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mascompare import environment, results
from mascompare.accounting import Accountant, Price, api_model_id, price_for, summed
from mascompare.backends import BACKENDS, KeptBackend, open_backend, release_backend
from mascompare.display import Progress, print_summary
from mascompare.errors import UserError, is_int_at_least
from mascompare.generation import GenerationConfig
from mascompare.masking import mask_config
from mascompare.methods import METHODS, build_method
from mascompare.tasks import build_task

log = logging.getLogger(__name__)

# Keys that change where and how a run is shown, sent or capped, not what it computes: left out of
# the run's identity, so that changing them (or asking for more samples with task.limit) resumes
# the same run, e.g. against a server restarted on another port, or with a higher budget.
# run.repeats is one of them: more repeats add to the same run, as a higher task.limit adds samples.
NON_IDENTITY_KEYS = {
    "run": ("output_root", "resume", "progress", "max_cost_usd", "dry_run", "cache", "repeats", "on_busy"),
    "task": ("limit",),
    "backend": ("base_url", "api_key", "api_key_file", "max_concurrency", "stream", "timeout_s", "max_retries",
                "backoff_s", "max_backoff_s", "fast_path_check"),
}


def run_identity(cfg: DictConfig | dict) -> dict:
    """The resolved config that decides a run's results (without Hydra's own settings)."""
    if isinstance(cfg, dict):
        identity = {k: v for k, v in cfg.items() if k != "hydra"}
    else:  # resolve section by section: resolving `hydra` would recurse into the run dir itself
        identity = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                    for k in cfg if k != "hydra"}
    for section, keys in NON_IDENTITY_KEYS.items():
        identity[section] = {k: v for k, v in identity.get(section, {}).items() if k not in keys}
    if identity["task"].get("offset") == 0:  # as every run before task.offset existed: their directories still resume
        del identity["task"]["offset"]
    return identity


def default_run_dir(cfg) -> Path:
    """results/<task>/<method>/<model>/<config-hash>: the same command always lands in the same place."""
    return (
        Path(cfg.run.output_root) / cfg.task.name / cfg.method.name / str(cfg.model.name).replace("/", "--")
        / results.config_hash(run_identity(cfg))
    )


def _check_batch_size(value) -> int | str:
    if value != "auto" and not is_int_at_least(value, 1):
        raise UserError(f"run.batch_size must be a positive integer or auto, got {value!r}.")
    return value


def _resolve_batch_size(batch_size, backend, samples, gen) -> int:
    """run.batch_size=auto: the backend's choice for these samples (8 where it has none)."""
    if batch_size != "auto":
        return batch_size
    choose = getattr(backend, "auto_batch_size", None)
    return choose([s.question for s in samples], gen) if choose else 8


def _check_repeats(value, gen: GenerationConfig) -> int:
    if not is_int_at_least(value, 1):
        raise UserError(f"run.repeats must be a positive integer, got {value!r}.")
    if value > 1 and gen.greedy:
        raise UserError(f"run.repeats={value} repeats identical greedy answers; set generation.temperature > 0 "
                        "to sample, or run.repeats=1.")
    return value


def select_samples(task, task_cfg) -> list:
    """The evaluated samples: task.offset skips the first ones (e.g. those a tuning run used), then
    task.limit keeps at most that many."""
    offset = task_cfg.get("offset", 0)
    if not is_int_at_least(offset, 0):
        raise UserError(f"task.offset must be a non-negative integer, got {offset!r}.")
    if not offset:
        return task.load()
    limit = task_cfg.get("limit")
    if hasattr(task, "limit"):  # load only what is needed: the offset ones and the limit after them
        task.limit = None if limit is None else offset + limit
    return task.load()[offset:]


def _check_cost_cap(cfg, price) -> float | None:
    cap = cfg.run.get("max_cost_usd")
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap < 0:
        raise UserError(f"run.max_cost_usd must be a non-negative number of US dollars or null, got {cap!r}.")
    if price is None:
        raise UserError(f"run.max_cost_usd is set, but the price of model '{api_model_id(cfg.model)}' is unknown; add it to "
                        "conf/prices.yaml, or set run.max_cost_usd=null.")
    return float(cap)


def model_price(model_cfg) -> Price | None:
    """model.price where a preset sets one (e.g. what a self-hosted server costs), else conf/prices.yaml's entry."""
    own = model_cfg.get("price")
    if own is None:
        return price_for(api_model_id(model_cfg))
    try:
        return Price(**own)
    except TypeError:
        raise UserError(f"model.price must have input and output (USD per million tokens) and may have "
                        f"cached_input, got {dict(own)}.") from None


def recorded_config(cfg) -> dict:
    """The resolved config as run.json keeps it: secrets masked."""
    return mask_config(OmegaConf.to_container(cfg, resolve=True))


def score_row(task, sample, output, wall_time_s: float, records) -> dict:
    extraction = task.extract(output.final_text or "")
    usage = summed(records)
    row = {
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
    if hasattr(task, "score_details"):  # optional: how scoring went (code tasks: how each program ended)
        row["score_details"] = task.score_details(extraction, sample.target)
    return row


def error_row(sample, error: str, records, output=None) -> dict:
    """A failed sample: kept with whatever the method produced, and retried on resume."""
    return {"id": sample.id, "target": sample.target, "error": error, "usage": summed(records),
            "agents": [r.to_dict() for r in records],
            "final_text": output.final_text if output else None,
            "transcript": [vars(t) for t in output.transcript] if output else []}


def execute(cfg: DictConfig, out_dir: str | Path, kept: KeptBackend | None = None, on_start=None) -> dict:
    """Run (or resume) one configuration into out_dir; returns run.json's contents.

    `kept` (a sweep's) holds the backend between runs, so that equal configs load the model once.
    `on_start()` is called once everything is checked and loaded, just before out_dir is first written.
    """
    gen = GenerationConfig.from_cfg(cfg.generation)
    batch_size = _check_batch_size(cfg.run.batch_size)
    repeats = _check_repeats(cfg.run.get("repeats", 1), gen)
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
    price = model_price(cfg.model)
    cap = _check_cost_cap(cfg, price)
    task = build_task(cfg.task)
    samples = select_samples(task, cfg.task)

    if cfg.run.get("dry_run"):
        return _dry_run(cfg, method_cls, task, gen, price, samples, Path(out_dir), _resolve_batch_size(
            batch_size, None, samples, gen), repeats)
    if on_start is not None:
        on_start()
    store = results.RunStore(out_dir)
    # what the last run recorded (the method's report, e.g. calibration, and the environment): kept when a
    # resumed run has nothing left to do
    earlier = (store.read_run() or {}) if cfg.run.resume else {}
    if not cfg.run.resume:
        store.reset()
    done = store.completed_keys()
    todo = [(repeat, s) for repeat in range(repeats) for s in samples if (s.id, repeat) not in done]
    total = len(samples) * repeats
    info = {
        "status": "running",
        "run_dir": str(store.dir),
        "task": cfg.task.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "backend": cfg.backend.name,
        "config": recorded_config(cfg),
        "config_hash": results.config_hash(run_identity(cfg)),
        "environment": earlier.get("environment"),
        "started": results.now_iso(),
        "samples_total": len(samples),
        "repeats": repeats,
        "samples_resumed": total - len(todo),
        "method_info": earlier.get("method_info"),
    }
    if hasattr(task, "run_info"):  # optional: what the task reports of its scoring (code tasks: the sandbox)
        info["task_info"] = task.run_info()
    log.info("%s: %d samples x %d repeats, %d already done, %d to run -> %s", cfg.task.name, len(samples), repeats,
             total - len(todo), len(todo), store.dir)

    if todo:
        load_start = time.perf_counter()
        backend, info["backend_reused"] = open_backend(cfg.run, cfg.backend, cfg.model, kept)
        info["model_load_s"] = round(time.perf_counter() - load_start, 3)
        info["environment"] = environment.describe(backend, samples)
        info["batch_size"] = batch_size = _resolve_batch_size(batch_size, backend, samples, gen)
        accountant = Accountant(price)
        method = build_method(cfg.method, backend, task, gen, accountant)
        if hasattr(method, "prepare"):  # optional hook: once-per-run work before evaluation (e.g. calibration)
            method.prepare(store.dir, samples, resume=cfg.run.resume)
        if hasattr(method, "run_info"):  # optional: what the method reports beyond the samples
            info["method_info"] = method.run_info()
        store.write_run(info)
        # the budget gets its own copy of the method: it swaps in a counting backend while samples run
        budget = Budget(cap, store, info, copy(method), backend, price, cfg) if cap is not None else None
        try:
            stop_reason = _run_batches(method, task, todo, batch_size, store, accountant, cfg, gen,
                                       already=total - len(todo), budget=budget,
                                       sample_workers=getattr(backend, "sample_workers", None),
                                       by_length=cfg.run.batch_size == "auto")
        finally:
            info["backend_info"] = backend.run_info()  # e.g. the checks the backend made of its fast path
            release_backend(backend, kept)
        info["stop_reason"] = stop_reason

    ids = {s.id for s in samples}
    rows = [row for (sid, repeat), row in store.records().items() if sid in ids and repeat < repeats]
    status = "stopped" if info.get("stop_reason") else "finished"
    info.update(status=status, finished=results.now_iso(), summary=results.summarize(rows))
    if warning := results.capped_share_warning(info["summary"]):
        log.warning(warning)
    if cap is not None:
        info["summary"]["cost_usd_spent"] = spent_usd(store, info)
    store.write_run(info)
    print_summary(info)
    return info


def _dry_run(cfg, method_cls, task, gen, price, samples, run_dir: Path, batch_size: int, repeats: int) -> dict:
    """Count what the run would send; writes nothing and calls no model."""
    from mascompare.dry_run import estimate, print_estimate

    done = results.RunStore.completed_keys_in(run_dir) if cfg.run.resume else set()
    # a sample counts once per repeat still to run; repeats send the same prompts
    todo = [s for repeat in range(repeats) for s in samples if (s.id, repeat) not in done]
    report = estimate(cfg, method_cls, task, gen, price, samples * repeats, todo, run_dir, batch_size)
    print_estimate(report, cfg)
    return {"status": "dry_run", "dry_run": report, "summary": {}}


def row_cost(row: dict) -> float:
    return (row.get("usage") or {}).get("cost_usd") or 0.0


def attempt_costs(store) -> list[float]:
    """The cost of every attempt of every sample so far: a failed attempt was billed too."""
    return [row_cost(row) for row in store.all_rows()]


def calibration_cost(info) -> float:
    calibration = (info.get("method_info") or {}).get("calibration") or {}
    if calibration.get("performed") and "reused_from" not in calibration:
        return (calibration.get("usage") or {}).get("cost_usd") or 0.0
    return 0.0


def spent_usd(store, info) -> float:
    """Everything this run has cost so far: every attempt of every sample and the method's calibration."""
    return sum(attempt_costs(store)) + calibration_cost(info)


class Budget:
    """run.max_cost_usd: before each batch, stop if what is spent plus what the batch may cost passes the cap.

    What the batch may cost is the larger of its dry-run upper bound (every request writing
    generation.max_new_tokens, prompts counted locally) and the mean cost per sample so far times
    its size (in case local counts run below the server's), so the cap is not passed.
    """

    def __init__(self, cap: float, store, info, method, backend, price, cfg):
        from mascompare.dry_run import counter_for

        self.cap, self.method, self.price = cap, method, price
        # built once: a tokenizer loaded for counting serves every batch
        self.counter = getattr(backend, "counter", None) or counter_for(cfg)
        self.attempts = attempt_costs(store)
        self.spent = sum(self.attempts) + calibration_cost(info)

    def add(self, row: dict) -> None:
        cost = row_cost(row)
        self.spent += cost
        self.attempts.append(cost)

    def next_batch_cost(self, batch) -> float:
        from mascompare.dry_run import counting_instead, upper_bound_usage

        with counting_instead(self.method, self.counter, self.price) as accountant:
            bound = upper_bound_usage(self.method, accountant, batch, len(batch))["cost_usd"]
        observed = sum(self.attempts) / len(self.attempts) * len(batch) if self.attempts else 0.0
        return max(bound, observed)

    def stop_reason(self, batch) -> str | None:
        expected = self.next_batch_cost(batch)
        if self.spent + expected <= self.cap:
            return None
        return (f"budget: ${self.spent:.4f} spent of run.max_cost_usd=${self.cap:.4f}, and the next "
                f"{len(batch)} samples may cost up to ${expected:.4f}; raise run.max_cost_usd and run the "
                "same command again to resume")


def _run_batches(method, task, todo, batch_size, store, accountant, cfg, gen, already: int, budget=None,
                 sample_workers: int | None = None, by_length: bool = False) -> str | None:
    """Run the (repeat, sample) pairs one repeat at a time: batch by batch, or each sample as its own task
    with `sample_workers` at once (the backend's choice); returns why it stopped early, or None when every
    sample ran. Each line records its repeat and the number of the batch (or task) it ran in."""
    numbers = count(max((row.get("batch", -1) for row in store.all_rows()), default=-1) + 1)  # on across resumes
    with Progress(total=len(todo) + already, done=already, enabled=cfg.run.progress) as progress:
        def write(repeat, batch, outputs, failure, share):
            number = next(numbers)
            for i, sample in enumerate(batch):
                records = accountant.take(sample.id)
                if outputs is None:
                    row = error_row(sample, failure, records)
                elif outputs[i].error:
                    row = error_row(sample, outputs[i].error, records, outputs[i])
                else:
                    row = score_row(task, sample, outputs[i], share, records)
                row = {"id": sample.id, "repeat": repeat, "batch": number, **row}
                store.append(row)
                if budget is not None:
                    budget.add(row)
                progress.advance(row, cfg.run.primary_metric)

        for repeat in sorted({r for r, _ in todo}):
            method.gen = replace(gen, repeat=repeat)  # every call's seed includes the repeat
            mine = [s for r, s in todo if r == repeat]  # a sample id appears once in a repeat's batches
            if by_length and budget is None:  # (a run its budget stops keeps the task's order: no bias)
                # longest first: rows of a batch pad less, and a batch too large for memory fails at once
                mine.sort(key=lambda s: len(s.question), reverse=True)
            if sample_workers:
                if stop := _stream_samples(method, task, mine, sample_workers, budget, partial(write, repeat)):
                    return stop
                continue
            for start in range(0, len(mine), batch_size):
                batch = mine[start:start + batch_size]
                if budget is not None and (reason := budget.stop_reason(batch)):
                    log.warning("stopping: %s", reason)
                    return reason
                write(repeat, batch, *_run_method(method, batch, task))
    return None


def _run_method(method, batch, task) -> tuple[list | None, str | None, float]:
    """The method's outputs for a batch (or None and why it failed), and each sample's share of the time."""
    began = time.perf_counter()
    try:
        outputs, failure = method.run(batch), None
    except UserError:
        raise
    except Exception as exc:  # one failed batch is recorded, not fatal: resume retries it
        log.exception("batch starting at %s failed", batch[0].id)
        outputs, failure = None, f"{type(exc).__name__}: {exc}"
    share = (time.perf_counter() - began) / len(batch)
    if outputs is not None and hasattr(task, "score_ahead"):  # optional: score the batch now, in parallel
        task.score_ahead([(o.final_text or "", s.target) for s, o in zip(batch, outputs) if not o.error])
    return outputs, failure, share


def _stream_samples(method, task, todo, workers: int, budget, write) -> str | None:
    """Each sample as its own task, `workers` at a time, written as soon as it finishes: a slow request
    holds up its own sample only, never a whole batch. The budget is checked before each sample starts,
    counting what the samples still in flight may cost."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="sample")
    in_flight, queue, stop = {}, iter(todo), None
    try:
        while True:
            while stop is None and len(in_flight) < workers and (sample := next(queue, None)) is not None:
                if budget is not None and (stop := budget.stop_reason([*in_flight.values(), sample])):
                    log.warning("stopping: %s", stop)
                    break
                in_flight[pool.submit(_run_method, method, [sample], task)] = sample
            if not in_flight:
                return stop
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                write([in_flight.pop(future)], *future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
