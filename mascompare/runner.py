"""The one runner, in three phases: plan → run batches → record.

1. Plan (`make_plan`): the settings, checked once (settings.validate); the task and the samples it evaluates;
   the method and backend classes, and whether the backend provides what the method needs; the price and the
   cost cap. Nothing is loaded or written; a dry run stops here, with its counts.
2. Run (`run_batches`): the backend opens (the model loads), the method is built and prepared once (e.g.
   calibration), the budget gets each sample's cost bound from the dry-run counter, then the samples run batch
   by batch (or each as its own task, as many at once as the backend's `sample_workers`), each scored by the
   task's extractor and written as one line at once.
3. Record (`record`): run.json gets the summary of the latest line of every sample (stats.summarize).

Every method goes through this loop, so every method is scored by the same extractor, timed the same way (model
loading excluded) and written in the same format.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mascompare import environment, stats, threads
from mascompare.accounting import Accountant, Price, price_for
from mascompare.backends import BACKENDS, KeptBackend, open_backend, release_backend
from mascompare.backends.base import ChatBackend, LatentBackend
from mascompare.budget import Budget
from mascompare.display import Progress, duration, print_summary, problem_rows
from mascompare.errors import UserError
from mascompare.identity import identity_hash, short_hash
from mascompare.masking import mask_config
from mascompare.methods import METHODS, Method, MethodOutput
from mascompare.records import RunRecord, SampleRecord, Usage, now_iso
from mascompare.settings import ModelSettings, Settings, validate
from mascompare.store import RunStore, check_writable, plural, set_aside_lines
from mascompare.tasks import Sample, Task, build_task

log = logging.getLogger(__name__)
CPU_MANY_SAMPLES = 50  # more than this to run on a CPU: say at the start how to run fewer
LONG_RUN_S = 600  # a run whose pace promises more than this says so after its first samples


@dataclass
class Plan:
    """Everything a run needs decided before anything loads."""

    cfg: DictConfig  # as composed: recorded (secrets masked) and hashed into the run's identity
    settings: Settings
    task: Task
    samples: list[Sample]  # what the run evaluates, in the task's order
    method_cls: type[Method]
    backend_cls: type[ChatBackend]
    price: Price | None
    run_dir: Path

    @property
    def repeats(self) -> int:
        return self.settings.run.repeats

    def todo(self, done: set[tuple[str, int]]) -> list[tuple[int, Sample]]:
        """The (repeat, sample) pairs not yet written without error, repeat by repeat."""
        return [(repeat, s) for repeat in range(self.repeats) for s in self.samples if (s.id, repeat) not in done]


def make_plan(cfg: DictConfig, out_dir: str | Path, settings: Settings | None = None) -> Plan:
    """Phase 1: check and decide everything that can be without loading a model; raises UserError."""
    settings = settings or validate(cfg)
    task = build_task(settings.task)
    task.check_available()  # before the backend's class is imported: the hf backend's import pulls torch
    method_cls = METHODS.get(settings.method.name)
    backend_cls = BACKENDS.get(settings.backend.name)
    if not issubclass(backend_cls, method_cls.requires):
        raise UserError(f"Method '{settings.method.name}' thinks in latent space and needs a model running in this "
                        f"process, which backend '{settings.backend.name}' is not; use backend=hf.")
    price = model_price(settings.model)
    if settings.run.max_cost_usd is not None:
        if price is None:
            raise UserError(f"run.max_cost_usd is set, but the price of model '{settings.model.api_id}' is unknown; "
                            "add it to conf/prices.yaml, or set run.max_cost_usd=null.")
        from mascompare.dry_run import CountingBackend

        if not issubclass(CountingBackend, method_cls.requires):
            raise UserError(f"run.max_cost_usd bounds each batch's cost by counting its chat requests first, and method "
                            f"'{settings.method.name}' thinks in latent space, so it sends none to count; set "
                            "run.max_cost_usd=null and cap the run with task.limit instead.")
    return Plan(cfg, settings, task, task.samples(), method_cls, backend_cls, price, Path(out_dir))


def model_price(model: ModelSettings) -> Price | None:
    """model.price where a preset sets one (e.g. what a self-hosted server costs), else conf/prices.yaml's entry."""
    if model.price is None:
        return price_for(model.api_id)
    return Price(input=model.price.input, output=model.price.output, cached_input=model.price.cached_input)


def recorded_config(cfg) -> dict:
    """The resolved config as run.json keeps it: secrets masked."""
    return mask_config(OmegaConf.to_container(cfg, resolve=True))


def execute(cfg: DictConfig, out_dir: str | Path, kept: KeptBackend | None = None, on_start=None,
            settings: Settings | None = None):
    """Run (or resume) one configuration into out_dir; returns its RunRecord (a dry run: its DryRunReport).

    `kept` (a sweep's) holds the backend between runs, so that equal configs load the model once.
    `on_start()` is called once everything is checked and loaded, just before the run first writes its records:
    a run refused before then (bad input found while loading, e.g. a missing API key) has written nothing.
    """
    plan = make_plan(cfg, out_dir, settings)
    if plan.settings.run.dry_run:
        from mascompare.dry_run import dry_run

        return dry_run(plan)
    check_model_cache(plan.settings)
    done = RunStore.completed_keys_in(plan.run_dir) if plan.settings.run.resume else set()
    if not plan.todo(done):  # nothing left to do: the summary again, nothing loaded
        store, record = begin(plan, on_start)
        return finish(plan, store, record)
    return finish(plan, *run_batches(plan, kept, on_start))


def check_model_cache(settings: Settings) -> None:
    """An embedded model not yet converted is converted into $MASCOMPARE_CACHE: refuse a cache that cannot be
    written before the model loads, naming the variable."""
    from mascompare.backends.models import STAMP_FILE, cache_dir, model_cache_dir

    model = settings.model
    if settings.backend.name != "hf" or model.path or model.embedded is None \
            or (model_cache_dir(model.name) / STAMP_FILE).is_file():
        return
    check_writable(cache_dir(), "MASCOMPARE_CACHE", f"where the embedded model '{model.name}' is converted on first "
                                                    "use")


def begin(plan: Plan, on_start) -> tuple[RunStore, RunRecord]:
    """The run's first writes: .hydra/ (on_start), the store opened (damaged lines set aside), its record."""
    if on_start is not None:
        on_start()
    store = RunStore(plan.run_dir)
    record = start_record(plan, store)
    todo = plan.todo(store.completed_keys())
    record.samples_resumed = len(plan.samples) * plan.repeats - len(todo)
    log.info("%s: %s x %s, %d already done, %d to run -> %s", record.task, plural(len(plan.samples), "sample"),
             plural(plan.repeats, "repeat"), record.samples_resumed, len(todo), store.dir)
    return store, record


def start_record(plan: Plan, store: RunStore) -> RunRecord:
    """run.json of a run that starts: what the last run recorded of the method and the environment is kept, for a
    resumed run that has nothing left to do."""
    settings = plan.settings
    earlier = store.read_run() if settings.run.resume else None
    if not settings.run.resume:
        store.reset()
    return RunRecord(
        status="running", run_dir=str(store.dir), task=settings.task.name, method=settings.method.name,
        model=settings.model.name, backend=settings.backend.name, config=recorded_config(plan.cfg),
        config_hash=identity_hash(plan.cfg), started=now_iso(), samples_total=len(plan.samples),
        repeats=plan.repeats, environment=earlier.environment if earlier else None,
        method_info=earlier.method_info if earlier else None, task_info=plan.task.run_info())


def run_batches(plan: Plan, kept: KeptBackend | None, on_start) -> tuple[RunStore, RunRecord]:
    """Phase 2: load and prepare (nothing written yet), then start the record and run every (repeat, sample)
    still to do; returns the store and the record, its stop_reason set where the run stopped early. A run stopped
    by an exception keeps in run.json what its backend recorded (e.g. a failed check of its fast path); the
    caller records why it stopped."""
    settings = plan.settings
    load_start = time.perf_counter()
    local = issubclass(plan.backend_cls, LatentBackend)  # the model runs here: torch computes with our threads
    if local:
        threads.apply(settings.run.threads)
    with quiet_loading(not settings.run.progress and local):
        backend, reused = open_backend(settings.run, settings.backend, settings.model, kept, plan.backend_cls)
    store = record = None
    try:
        model_load_s = round(time.perf_counter() - load_start, 3)
        batch_size = settings.run.batch_size
        if batch_size == "auto":
            batch_size = backend.auto_batch_size([s.question for s in plan.samples], settings.generation)
        accountant = WatchedAccountant(plan.price)
        method = plan.method_cls(settings.method, backend, plan.task, settings.generation, accountant)
        method.prepare(plan.run_dir, plan.samples, settings.run.resume)
        store, record = begin(plan, on_start)
        record.backend_reused, record.model_load_s, record.batch_size = reused, model_load_s, batch_size
        record.environment = environment.describe(backend, plan.samples)
        record.method_info = method.run_info()
        store.write_run(record)
        budget = None
        if settings.run.max_cost_usd is not None:
            from mascompare.dry_run import sample_bounds

            budget = Budget(settings.run.max_cost_usd, sample_bounds(plan, store.dir),
                            [attempt.usage.cost_usd or 0.0 for attempt in store.all_records()],
                            calibration_cost(record.method_info))
        todo = plan.todo(store.completed_keys())
        if record.environment.get("device") == "cpu" and len(todo) > CPU_MANY_SAMPLES:
            log.warning("%s to run on a CPU, which answers a few questions a minute with a small model and far "
                        "fewer with a large one: this may take hours; task.limit=N runs only the first N (the same "
                        "command later resumes and extends the run)", plural(len(todo), "sample"))
        record.stop_reason = Batches(plan, method, backend, store, accountant, budget, batch_size).run(todo)
        record.backend_info = backend.run_info()  # e.g. the checks the backend made of its fast path
        return store, record
    except BaseException as stop:
        if not isinstance(stop, Exception) and kept is not None:
            kept.close()  # interrupted: requests in flight are cancelled, even those of a sweep's kept backend
        if record is not None and isinstance(stop, Exception):
            record.backend_info = backend.run_info()
            try:
                store.write_run(record)
            except OSError:
                pass  # a full disk: the caller records the stop where it can
        raise
    finally:
        release_backend(backend, kept)


@contextmanager
def quiet_loading(quiet: bool):
    """No progress bar of transformers or the hub (e.g. "Loading weights") while a local model loads, where
    run.progress=false asks for none."""
    if not quiet:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_was_off, transformers_was_on = are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled()
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not hub_was_off:
            enable_progress_bars()
        if transformers_was_on:
            transformers_logging.enable_progress_bar()


class WatchedAccountant(Accountant):
    """The accountant, telling the progress display of each call as it is recorded."""

    on_record = None

    def record(self, record) -> None:
        super().record(record)
        if self.on_record is not None:
            self.on_record()


def finish(plan: Plan, store: RunStore, record: RunRecord) -> RunRecord:
    """Phase 3: the summary of the latest line of every sample and repeat the run covers, into run.json."""
    ids = {s.id for s in plan.samples}
    latest = [r for (sid, repeat), r in store.latest().items() if sid in ids and repeat < plan.repeats]
    record.task_info = plan.task.run_info()  # as scoring left it (e.g. sandbox processes that had to be killed)
    summary = stats.summarize_records(latest)
    if not record.stop_reason and summary.errors and not summary.n:
        first = next(r.error for r in latest if r.failed)
        record.stop_reason = (f"every sample failed ({plural(summary.errors, 'sample')}), e.g. with: {first}; "
                              "fix that and run the same command again to retry them")
    record.status = "stopped" if record.stop_reason else "finished"
    record.finished = now_iso()
    record.summary = summary
    if warning := stats.capped_share_warning(record.summary):
        log.warning(warning)
    if plan.settings.run.max_cost_usd is not None:
        record.summary.cost_usd_spent = (sum(r.usage.cost_usd or 0.0 for r in store.all_records())
                                         + calibration_cost(record.method_info))
    store.write_run(record)
    print_summary(record, problem_rows(latest, set_aside=set_aside_lines(store.dir)))
    return record


def calibration_cost(method_info: dict | None) -> float:
    """What the method's calibration cost this run (nothing when it reused saved masks)."""
    calibration = (method_info or {}).get("calibration") or {}
    if calibration.get("performed") and "reused_from" not in calibration:
        return (calibration.get("usage") or {}).get("cost_usd") or 0.0
    return 0.0


def scored(task: Task, sample: Sample, output: MethodOutput, wall_time_s: float, records) -> SampleRecord:
    """The record of a sample the method answered: extracted, scored, with every call."""
    extraction = task.extract(output.final_text or "")
    return SampleRecord(
        id=sample.id, repeat=0, batch=None, target=sample.target, error=output.error, usage=Usage.of(records),
        agents=records, transcript=output.transcript, final_text=output.final_text,
        question_hash=short_hash(sample.question), target_hash=short_hash(sample.target),
        extracted_strict=extraction.strict, extracted_flexible=extraction.flexible,
        correct_strict=task.score(extraction.strict, sample.target),
        correct_flexible=task.score(extraction.flexible, sample.target),
        extractor_version=task.extractor_version, wall_time_s=wall_time_s, diagnostics=output.diagnostics,
        metadata=sample.metadata, score_details=task.score_details(extraction, sample.target))


def failed(sample: Sample, error: str, records, output: MethodOutput | None = None) -> SampleRecord:
    """A failed sample: kept with whatever the method produced, and run again on resume."""
    return SampleRecord(id=sample.id, repeat=0, batch=None, target=sample.target, error=error,
                        usage=Usage.of(records), agents=records,
                        transcript=output.transcript if output else [],
                        final_text=output.final_text if output else None)


class Batches:
    """Runs (repeat, sample) pairs one repeat at a time: batch by batch, or each sample as its own task with the
    backend's `sample_workers` at once. Each line records its repeat and the number of the batch (or task) it ran
    in, counting on across resumes."""

    def __init__(self, plan: Plan, method: Method, backend: ChatBackend, store: RunStore, accountant: Accountant,
                 budget: Budget | None, batch_size: int):
        self.plan, self.method, self.backend, self.store = plan, method, backend, store
        self.task, self.accountant, self.budget, self.batch_size = plan.task, accountant, budget, batch_size
        self.numbers = count(max((r.batch for r in store.all_records() if r.batch is not None), default=-1) + 1)

    def run(self, todo: list[tuple[int, Sample]]) -> str | None:
        settings = self.plan.settings
        already = len(self.plan.samples) * self.plan.repeats - len(todo)
        self.began, self.written, self.to_write, self.pace_told = time.perf_counter(), 0, len(todo), False
        with Progress(total=len(todo) + already, done=already, enabled=settings.run.progress) as self.progress:
            self.accountant.on_record = self.progress.call
            for repeat in sorted({r for r, _ in todo}):
                self.method.gen = settings.generation.for_repeat(repeat)  # every call's seed includes the repeat
                mine = [s for r, s in todo if r == repeat]  # a sample id appears once in a repeat's batches
                if settings.run.batch_size == "auto" and self.budget is None:
                    # longest first: rows of a batch pad less, and a batch too large for memory fails at once
                    # (a run its budget may stop keeps the task's order: no bias)
                    mine.sort(key=lambda s: len(s.question), reverse=True)
                stop = self.stream(repeat, mine) if self.backend.sample_workers else self.in_batches(repeat, mine)
                if stop:
                    return stop
        return None

    def in_batches(self, repeat: int, samples: list[Sample]) -> str | None:
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start:start + self.batch_size]
            if self.budget is not None and (reason := self.budget.stop_reason(batch)):
                log.warning("stopping: %s", reason)
                return reason
            self.write(repeat, batch, *self.answer(batch))
        return None

    def stream(self, repeat: int, samples: list[Sample]) -> str | None:
        """Each sample as its own task, `sample_workers` at a time, written as soon as it finishes: a slow request
        holds up its own sample only, never a whole batch. The budget is checked before each sample starts,
        counting what the samples still in flight may cost."""
        workers = self.backend.sample_workers
        pool = ThreadPoolExecutor(workers, thread_name_prefix="sample")
        in_flight, queue, stop = {}, iter(samples), None
        try:
            while True:
                while stop is None and len(in_flight) < workers and (sample := next(queue, None)) is not None:
                    if self.budget is not None and (stop := self.budget.stop_reason([*in_flight.values(), sample])):
                        log.warning("stopping: %s", stop)
                        break
                    in_flight[pool.submit(self.answer, [sample])] = sample
                if not in_flight:
                    return stop
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    self.write(repeat, [in_flight.pop(future)], *future.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def answer(self, batch: list[Sample]) -> tuple[list[MethodOutput] | None, str | None, float]:
        """The method's outputs for a batch (or None and why it failed), and each sample's share of the time."""
        began = time.perf_counter()
        try:
            outputs, failure = self.method.run(batch), None
        except UserError:
            raise
        except Exception as exc:  # one failed batch is recorded, not fatal: resume retries it
            log.exception("batch starting at %s failed", batch[0].id)
            outputs, failure = None, f"{type(exc).__name__}: {exc}"
        share = (time.perf_counter() - began) / len(batch)
        if outputs is not None:  # e.g. run a batch's programs in parallel now
            self.task.score_ahead([(o.final_text or "", s.target) for s, o in zip(batch, outputs) if not o.error])
        return outputs, failure, share

    def write(self, repeat: int, batch: list[Sample], outputs, failure, share: float) -> None:
        number = next(self.numbers)
        for i, sample in enumerate(batch):
            records = self.accountant.take(sample.id)
            if outputs is None:
                record = failed(sample, failure, records)
            elif outputs[i].error:
                record = failed(sample, outputs[i].error, records, outputs[i])
            else:
                record = scored(self.task, sample, outputs[i], share, records)
            record.repeat, record.batch = repeat, number
            self.store.append(record)
            if self.budget is not None:
                self.budget.add(record.usage.cost_usd or 0.0)
            self.progress.advance(record, self.plan.settings.run.primary_metric)
        self.written += len(batch)
        self.tell_pace()

    def tell_pace(self) -> None:
        """Once, after the first batch (or the first samples in flight): how long the rest may take at this pace,
        where that is long, with the knob that shortens it."""
        workers = self.backend.sample_workers or 1
        if self.pace_told or self.written < min(workers, self.to_write):
            return
        self.pace_told = True
        elapsed = time.perf_counter() - self.began
        left = elapsed / self.written * (self.to_write - self.written)
        if left > LONG_RUN_S:
            log.warning("the first %s took %s: at this pace the remaining %d take about %s; task.limit=N runs "
                        "only the first N (the same command later resumes and extends the run)",
                        plural(self.written, "sample"), duration(elapsed), self.to_write - self.written,
                        duration(left))
