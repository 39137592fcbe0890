"""Many runs, one comparison: the tables, statistics and plots a paper needs.

`collect` reads `run.json` and `samples.jsonl` of every run under the given paths into one long
table (one row per run, sample and repeat). `compare` summarises each run and sets it against a
reference method on the samples both runs answered: accuracy difference with a paired bootstrap 95%
interval (a sample's repeats are pooled into its mean first), exact McNemar p-value (one answer per
sample only), decoded-token reduction and speed-up with a bootstrap interval over each run's
batches. It warns when the runs of one table differ in settings or in what they ran on. `write`
saves comparison.md, comparison.csv, comparison.tex and pareto.png. Nothing here writes into a run
directory.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from mascompare import environment, stats
from mascompare.errors import UserError
from mascompare.identity import run_identity
from mascompare.records import DamagedRecord, RunRecord
from mascompare.registry import suggest
from mascompare.stats import METRICS
from mascompare.store import (
    BOM,
    FAILURE_FILE,
    RUN_FILE,
    SAMPLES_FILE,
    DamagedLine,
    incomplete,
    plural,
    read_run,
    read_samples,
    set_aside_lines,
    side_file,
)

OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.tex", "pareto.png")
# Simplest first, as in the README; methods added later sort after these, by name.
METHOD_ORDER = ("baseline", "text_mas", "pruned_mas", "latent_mas", "pruned_latent_mas")
DEFAULT_REFERENCES = ("text_mas", "baseline")
# Config keys whose differences between compared runs break a like-for-like comparison.
MISMATCH_PREFIXES = {
    "generation.": "decoding settings differ",
    "model.": "model settings differ",
    "backend.": "backend settings differ",
    "task.": "task settings differ (paired statistics use only samples with the same id and question)",
}
TEXT_COLUMNS = ("method", "setting", "vs")  # left-aligned; every other column holds numbers


@dataclass
class Run:
    key: int
    dir: Path
    info: RunRecord  # run.json
    config: dict  # the resolved config, flattened to dotted keys
    identity: dict  # the part of it that decides results, flattened
    damaged: list[DamagedLine] = field(default_factory=list)  # samples.jsonl lines that are not records, left out
    set_aside: int = 0  # lines an earlier run set aside in samples.damaged.jsonl
    view_records: Any = None  # what the page shows of its samples (view.records.RunRecords), where collected

    @property
    def task(self) -> str:
        return str(self.info.task or self.config.get("task.name"))

    @property
    def model(self) -> str:
        return str(self.info.model or self.config.get("model.name"))

    @property
    def method(self) -> str:
        return str(self.info.method or self.config.get("method.name"))


@dataclass
class FailedJob:
    dir: Path
    overrides: list[str]
    error: str


@dataclass
class Collection:
    runs: list[Run]
    samples: pd.DataFrame  # the long table: one row per run and sample
    failures: list[FailedJob]
    roots: list[Path]


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per run: identity, summary, paired statistics against its reference
    collection: Collection
    metric: str
    by: list[str]
    reference: str | None
    warnings: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # per (task, model)
    notes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def groups(self):
        """(task, model, rows) per table, in the order the runs were sorted."""
        for (task, model), rows in self.table.groupby(["task", "model"], sort=False):
            yield task, model, rows


# ---------------------------------------------------------------- collecting


def flatten(node, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole (as JSON text, so that they compare and hash)."""
    flat: dict = {}
    _flatten_into(flat, node, prefix)
    return flat


def _flatten_into(flat: dict, node, prefix: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten_into(flat, value, f"{prefix}{key}.")
    else:
        flat[prefix[:-1]] = json.dumps(node, sort_keys=True) if isinstance(node, list) else node


def _job_dirs(path: Path) -> set[Path]:
    """Directories below path that hold a run, or a sweep job that failed before its run began (failed.json)."""
    # one walk of the resolved folder, not a glob per file name; like rglob, it does not follow symlinks, so the
    # folders it finds are resolved paths already
    return {Path(folder) for folder, _, names in os.walk(path.resolve())
            if RUN_FILE in names or FAILURE_FILE in names}


def _overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def collect(paths: list[str | Path], read_view: Callable | None = None) -> Collection:
    """Every run under paths (run directories, a results root, multirun directories). A run whose run.json
    cannot be read is listed with the failed jobs, saying why, and the others are compared. read_view
    (view.records.read_run): keeps on each run what view.html shows of its samples, so that its samples.jsonl
    is read once."""
    roots, dirs = [], set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise UserError(f"{path} does not exist; give run directories, a results root or a multirun directory.")
        path = path.parent if path.is_file() else path
        roots.append(path)
        dirs |= _job_dirs(path)
    runs, failures = [], []
    for job_dir in sorted(dirs, key=_natural_key):
        run_file = job_dir / RUN_FILE
        if not run_file.is_file():  # a job refused before its run began: failed.json names its overrides
            failures.append(_failure(job_dir))
            continue
        try:
            info = read_run(job_dir)
        except DamagedRecord as problem:
            failures.append(FailedJob(job_dir, _overrides(job_dir), f"its run.json is not a complete record of a "
                                      f"run ({problem}); run its command again to rewrite it"))
            continue
        missing = incomplete(info)
        if missing:
            failures.append(FailedJob(job_dir, _overrides(job_dir), f"its run.json lacks {', '.join(missing)}, so "
                                      "it is not a complete record of a run; run its command again to rewrite it"))
            continue
        config = info.config or {}
        runs.append(Run(len(runs), job_dir, info, flatten(config), flatten(run_identity(config))))
    return Collection(runs, _long_table(runs, read_view), failures, roots)


def _failure(job_dir: Path) -> FailedJob:
    """A job's failed.json (written by the sweep: its error and overrides), or why it cannot be read."""
    try:
        failure = json.loads((job_dir / FAILURE_FILE).read_bytes().removeprefix(BOM).decode("utf-8"))
        if not isinstance(failure, dict) or not isinstance(failure.get("error"), str):
            raise ValueError("it is not an object with an error")
    except (ValueError, OSError) as problem:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = str(problem).splitlines()[0][:120]
        return FailedJob(job_dir, _overrides(job_dir), f"failed, and its {FAILURE_FILE} cannot be read ({reason})")
    overrides = failure.get("overrides")
    return FailedJob(job_dir, [str(o) for o in overrides] if isinstance(overrides, list) and overrides
                     else _overrides(job_dir), failure["error"])


def _natural_key(path: Path):
    """Sort job 10 after job 9."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def _long_table(runs: list[Run], read_view: Callable | None = None) -> pd.DataFrame:
    """Every run's sample table (stats.sample_table), with the run's key, task, model and method on each row.
    Lines that are not records are left out, and counted on their run. read_view: see collect."""
    rows = []
    for run in runs:
        samples = read_samples(run.dir, running=run.info.status == "running")
        run.damaged = samples.damaged
        run.set_aside = set_aside_lines(run.dir)
        extra = {"run": run.key, "task": run.task, "model": run.model, "method": run.method}
        latest = samples.latest
        for row in stats.sample_rows(list(latest.values())):
            row.update(extra)
            rows.append(row)
        if read_view is not None:
            run.view_records = read_view(run.dir, run.info, latest)
    return pd.DataFrame.from_records(rows, columns=["run", "task", "model", "method", *stats.SAMPLE_COLUMNS])


# ---------------------------------------------------------------- comparing


def compare(collection: Collection, reference: str | None = None, by: list[str] | tuple = (),
            metric: str = "flexible") -> Comparison:
    runs = collection.runs
    if not runs:
        where = ", ".join(str(p) for p in collection.roots)
        if collection.failures:  # jobs of ours that failed, or runs whose run.json cannot be read
            first = collection.failures[0]
            more = f" (and {plural(len(collection.failures) - 1, 'other job')})" if len(collection.failures) > 1 \
                else ""
            raise UserError(f"No run in {where} can be compared: {first.dir}: {first.error}{more}.")
        raise UserError(f"No runs found in {where}; give run directories (with run.json), "
                        "a results root or a multirun directory.")
    if metric not in METRICS:
        raise UserError(f"--metric must be strict or flexible, got {metric!r}.")
    by = [_resolve_key(key, runs, "--by") for key in by]
    table = _summaries(collection, by)
    reference = reference or next((m for m in DEFAULT_REFERENCES if m in set(table.method)), None)
    comparison = Comparison(table, collection, metric, by, reference)
    if reference:
        _set_references(comparison, _parse_reference(reference, runs))
    for task, model, rows in comparison.groups():
        group_runs = [runs[k] for k in rows.run]
        comparison.warnings[(task, model)] = _mismatches(group_runs, rows, collection.samples, by)
        comparison.notes[(task, model)] = _notes(group_runs, rows, collection.samples)
    return comparison


def _resolve_key(key: str, runs: list[Run], option: str) -> str:
    known = set().union(*(r.config for r in runs))
    if key in known:
        return key
    if f"{key}.name" in known:  # `--by model` means model.name
        return f"{key}.name"
    hint = suggest(key, sorted(known))
    raise UserError(f"{option} {key}: no run has the config key '{key}'.{hint} "
                    "Keys are dotted paths such as method.latent_steps or generation.max_new_tokens.")


def _summaries(collection: Collection, by: list[str]) -> pd.DataFrame:
    tables = stats.split_by_run(collection.samples)
    rows = []
    for run in collection.runs:
        summary = stats.summarize(tables.get(run.key, collection.samples.iloc[:0]))
        row = {"task": run.task, "model": run.model, "method": run.method, "run": run.key,
               "run_dir": str(run.dir), "status": run.info.status,
               **{k: getattr(summary, k) for k in ("n", "errors", "samples", "repeats")}}
        for kind in METRICS:
            low, high = getattr(summary, f"accuracy_{kind}_ci95") or (None, None)
            row.update({f"accuracy_{kind}": getattr(summary, f"accuracy_{kind}"), f"accuracy_{kind}_low": low,
                        f"accuracy_{kind}_high": high})
        for column in stats.MEAN_COLUMNS:
            row[f"mean_{column}"] = getattr(summary, f"mean_{column}")
        row["decoding_calls"] = summary.decoding_calls
        row["calls_at_max_new_tokens"] = summary.calls_at_max_new_tokens
        row["mean_time_per_sample_s"] = summary.mean_time_per_sample_s
        row["time_per_sample_s_low"], row["time_per_sample_s_high"] = summary.time_per_sample_s_ci95 or (None, None)
        row["cost_usd"] = summary.cost_usd
        rows.append(row)
    table = pd.DataFrame(rows)
    for key in by:  # as given: pandas would turn integers with a missing value into floats
        table[key] = pd.Series([run.config.get(key) for run in collection.runs], dtype=object)
    table["setting"] = _settings(collection.runs, by)
    records = table.to_dict("records")
    table["label"] = [_label(row, by) for row in records]
    clash = table.duplicated(["task", "model", "label"], keep=False)  # same settings, other folders
    if clash.any():
        common = os.path.commonpath(list(table.run_dir))
        table.loc[clash, "label"] += [f" [{os.path.relpath(d, common)}]" for d in table.run_dir[clash]]
    order = sorted(range(len(table)), key=lambda i: _sort_key(records[i], by))
    return table.iloc[order].reset_index(drop=True)


def _label(row: dict, by: list[str]) -> str:
    """The method and whatever tells this run apart from the others of its method: axes, then settings."""
    parts = [f"{_short(k)}={_show(row[k])}" for k in by if not _na(row[k])] + [row["setting"]] * bool(row["setting"])
    return f"{row['method']} ({' '.join(parts)})" if parts else row["method"]


def _method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _sort_key(row, by: list[str]):
    axes = tuple((row[k] is None, str(type(row[k])), row[k]) for k in by)  # numbers sort as numbers
    return (row["task"], row["model"], _method_rank(row["method"]), axes, row["run"])


def _settings(runs: list[Run], by: list[str]) -> list[str]:
    """What tells apart runs of one method on one task and model: the identity keys whose values differ."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.model, run.method), []).append(run)
    settings = {}
    for members in groups.values():
        keys = [k for k in _differing(members) if k not in by and k != "method.name"]
        for run in members:
            settings[run.key] = " ".join(f"{_short(k)}={_show(run.identity.get(k))}" for k in keys)
    return [settings[run.key] for run in runs]


def _differing(runs: list[Run]) -> list[str]:
    """The identity keys whose values are not the same in all of runs."""
    keys = set().union(*(r.identity for r in runs))
    return sorted(k for k in keys if len({_show(value) for value in _distinct(r.identity.get(k) for r in runs)}) > 1)


def _distinct(values) -> list:
    """The values, each once (those of one type that are equal are shown alike, but for 0.0 and -0.0): thousands
    of runs share a few values, and showing each is what takes the time."""
    values = list(values)
    try:
        return list({(type(v), repr(v) if type(v) is float else v): v for v in values}.values())
    except TypeError:  # a value that cannot be hashed: each shown
        return values


def _short(key: str) -> str:
    return key.removeprefix("method.")


def _show(value, width: int = 24) -> str:
    text = "—" if _na(value) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _parse_reference(spec: str, runs: list[Run]) -> tuple[str, dict]:
    """`text_mas`, or a method narrowed by config values: `pruned_mas:method.prune_rate=0,method.rounds=2`."""
    method, _, where = spec.partition(":")
    methods = sorted({r.method for r in runs})
    if method not in methods:
        raise UserError(f"--reference {spec}: no run uses method '{method}'.{suggest(method, methods)} "
                        f"Methods here: {', '.join(methods)}.")
    conditions = {}
    for item in filter(None, where.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--reference {spec}: '{item}' is not key=value; "
                            "write e.g. pruned_mas:method.prune_rate=0.")
        conditions[_resolve_key(key.strip(), runs, "--reference")] = yaml.safe_load(value)
    if not any(_is_reference(r, method, conditions) for r in runs):
        raise UserError(f"--reference {spec}: no run of method '{method}' has those settings.")
    return method, conditions


def _is_reference(run: Run, method: str, conditions: dict) -> bool:
    return run.method == method and all(run.config.get(k) == v for k, v in conditions.items())


def _set_references(comparison: Comparison, selector: tuple[str, dict]) -> None:
    """Each run is compared with the reference run of its table that shares the most of its settings."""
    runs, table = comparison.collection.runs, comparison.table
    tables, empty = stats.split_by_run(comparison.collection.samples), comparison.collection.samples.iloc[:0]
    labels = dict(zip(table.run, table.label))
    memo: dict = {}  # a reference's bootstrap, shared by the runs set against it
    results = {}
    for _, _, rows in comparison.groups():
        candidates = [runs[k] for k in rows.run if _is_reference(runs[k], *selector)]
        if not candidates:
            continue
        varying = sorted(set(_differing(candidates)) | set(comparison.by))
        exact: dict = {}  # a candidate by its values of the varying keys: the first such is the one max() picks
        for c in candidates:
            exact.setdefault(tuple(_hashable(c.config.get(k)) for k in varying), c)
        candidate_keys = {c.key for c in candidates}
        for key in rows.run:
            run = runs[key]
            if key in candidate_keys:
                results[key] = {"reference": "(reference)"}
                continue
            ref = exact.get(tuple(_hashable(run.config.get(k)) for k in varying)) or \
                max(candidates, key=lambda c: sum(c.config.get(k) == run.config.get(k) for k in varying))
            results[key] = {"reference": labels[ref.key], "reference_run": ref.key,
                            **stats.paired(tables.get(key, empty), tables.get(ref.key, empty), comparison.metric,
                                           memo)}
    for column in ("reference", "reference_run", "n_paired", "accuracy_diff", "accuracy_diff_low",
                   "accuracy_diff_high", "mcnemar_p", "output_token_reduction", "input_token_reduction",
                   "context_token_reduction", "speedup", "speedup_low", "speedup_high"):
        values = [results.get(k, {}).get(column) for k in table.run]
        # counts stay integers next to the blanks of runs without a reference
        table[column] = pd.array(values, dtype="Int64") if column in ("reference_run", "n_paired") else values


def _hashable(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _mismatches(runs: list[Run], rows: pd.DataFrame, samples: pd.DataFrame, by: list[str]) -> list[str]:
    """One line per kind of setting that differs among the runs of one table (sweep axes excepted)."""
    labels = dict(zip(rows.run, rows.label))
    differing = [k for k in _differing(runs) if k not in by and k != "model.name"]
    lines = []
    for prefix, what in MISMATCH_PREFIXES.items():
        keys = [k for k in differing if k.startswith(prefix)]
        if keys:
            lines.append(f"{what}: " + "; ".join(f"{k}: {_who_has(runs, k, labels)}" for k in keys))
    scored = samples[samples.run.isin(rows.run) & samples.extractor_version.notna()]
    versions = scored.groupby("run").extractor_version.unique()
    if scored.extractor_version.nunique() > 1:
        lines.append("answer extractor versions differ: " + ", ".join(
            f"{labels[k]}: {'/'.join(sorted(versions[k]))}" for k in rows.run if k in versions))
    differences = environment.differences({labels[run.key]: run.info.environment for run in runs})
    if differences:
        lines.append("the runs ran in different environments: " + " | ".join(differences))
    return lines


WHO_HAS_NAMES = 5  # runs named per value in a warning line before "and N more"


def _who_has(runs: list[Run], key: str, labels: dict) -> str:
    """'64 (baseline, text_mas), 128 (latent_mas)'."""
    holders: dict[str, list[str]] = {}
    for run in runs:
        holders.setdefault(_show(run.identity.get(key)), []).append(labels[run.key])
    return ", ".join(f"{value} ({', '.join(names[:WHO_HAS_NAMES])}"
                     + (f" and {len(names) - WHO_HAS_NAMES} more" if len(names) > WHO_HAS_NAMES else "") + ")"
                     for value, names in holders.items())


def _notes(runs: list[Run], rows: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    labels = dict(zip(rows.run, rows.label))
    failed = samples[samples.run.isin(rows.run) & samples.error.notna()]
    reasons = {int(key): errors.value_counts() for key, errors in failed.groupby("run").error}
    notes = []
    for run in runs:
        status, why = run.info.status, run.info.stop_reason  # e.g. a budget cap
        if status != "finished":
            state = f"stopped early ({why})" if why else f"has not finished (status {status})"
            notes.append(f"{labels[run.key]} {state}: its figures cover the samples written so far.")
        if run.key in reasons:
            counts = reasons[run.key]
            shown = "; ".join(f"{_clipped(error)} ({count})" for error, count in counts.head(3).items())
            more = f"; and {plural(len(counts) - 3, 'other error')}" if len(counts) > 3 else ""
            notes.append(f"{labels[run.key]}: {plural(int(counts.sum()), 'sample')} failed (not in its figures; the "
                         f"same command runs them again): {shown}{more}.")
        if run.damaged:
            shown = "; ".join(map(str, run.damaged[:3])) + (f"; and {len(run.damaged) - 3} more"
                                                            if len(run.damaged) > 3 else "")
            notes.append(f"{labels[run.key]}: {plural(len(run.damaged), 'damaged line')} of its {SAMPLES_FILE} left "
                         f"out ({shown}); running its command again sets them aside and runs their samples again.")
        if run.set_aside:
            notes.append(f"{labels[run.key]}: {plural(run.set_aside, 'damaged line')} of its {SAMPLES_FILE} "
                         f"{'was' if run.set_aside == 1 else 'were'} set aside in {side_file(Path(SAMPLES_FILE))} "
                         "and their samples run again.")
        calibration = (run.info.method_info or {}).get("calibration") or {}
        if calibration.get("performed"):
            usage = calibration.get("usage") or {}
            notes.append(
                f"{labels[run.key]} calibrated its graph before evaluation (not in the figures): "
                f"{plural(calibration.get('questions') or 0, 'question')}, {plural(usage.get('calls') or 0, 'call')}, "
                f"{usage.get('input_tokens', 0):,} input + {usage.get('output_tokens', 0):,} decoded tokens, "
                f"{calibration.get('elapsed_s', 0):.1f} s, cost {_money(usage.get('cost_usd'))}.")
    return notes


# ---------------------------------------------------------------- formatting


def _clipped(text: str, width: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _na(value) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _pct(value) -> str:
    return "—" if _na(value) else f"{100 * value:.1f}%"


def _money(value) -> str:
    return "—" if _na(value) else f"${value:.4f}"


def _amount(value) -> str:
    if _na(value):
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _seconds(value) -> str:
    return "—" if _na(value) else f"{value:.2f}"


def _accuracy(row, kind: str) -> str:
    value, low, high = row[f"accuracy_{kind}"], row[f"accuracy_{kind}_low"], row[f"accuracy_{kind}_high"]
    return _pct(value) if _na(low) else f"{_pct(value)} [{100 * low:.1f}, {100 * high:.1f}]"


def _difference(row) -> str:
    if row.get("reference") == "(reference)":
        return "reference"
    value = row.get("accuracy_diff")
    if _na(value):
        return "—"
    return f"{100 * value:+.1f} [{100 * row['accuracy_diff_low']:+.1f}, {100 * row['accuracy_diff_high']:+.1f}]"


def _p_value(value) -> str:
    return "—" if _na(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _n(row) -> str:
    repeats = f" ({row['samples']} x {row['repeats']} repeats)" if row["repeats"] > 1 else ""
    return f"{row['n']}{repeats}" + (f" (+{row['errors']} failed)" if row["errors"] else "")


def _capped(row) -> str:
    """Calls cut off at max_new_tokens, of the calls that decode."""
    return f"{row['calls_at_max_new_tokens']}/{row['decoding_calls']}" if row["decoding_calls"] else "—"


def _time(row) -> str:
    """Seconds per sample, with the interval from the spread between batches where there are several."""
    value, low, high = row["mean_time_per_sample_s"], row["time_per_sample_s_low"], row["time_per_sample_s_high"]
    return _seconds(value) if _na(low) else f"{_seconds(value)} [{low:.2f}, {high:.2f}]"


def _speedup(row) -> str:
    """'1.74× [0.90, 3.10] n.s.': not significant when the interval includes 1."""
    value, low, high = row["speedup"], row.get("speedup_low"), row.get("speedup_high")
    if _na(value):
        return "—"
    if _na(low):
        return f"{value:.2f}× (no interval: one batch)"
    return f"{value:.2f}× [{low:.2f}, {high:.2f}]" + (" n.s." if low <= 1 <= high else "")


def columns(rows: pd.DataFrame, by: list[str], metric: str, part: str = "all") -> list[tuple[str, Callable]]:
    """(header, cell) for one table; Markdown and LaTeX take them all, the terminal the runs' own figures
    (part="runs") and the paired statistics (part="paired") as two narrower tables."""
    spec = [("method", lambda r: r["method"])]
    if rows.setting.any():
        spec.append(("setting", lambda r: r["setting"]))
    spec += [(k, lambda r, k=k: _show(r[k])) for k in by]
    if part in ("all", "runs"):
        spec += [
            ("n", _n),
            ("strict acc [95% CI]", lambda r: _accuracy(r, "strict")),
            ("flexible acc [95% CI]", lambda r: _accuracy(r, "flexible")),
            ("decoded tok", lambda r: _amount(r["mean_output_tokens"])),
            ("input tok processed", lambda r: _amount(r["mean_input_tokens"])),
            ("context tok seen", lambda r: _amount(r["mean_context_tokens"])),
            ("latent steps", lambda r: _amount(r["mean_latent_steps"])),
            ("calls", lambda r: _amount(r["mean_calls"])),
            ("at max tok", _capped),
            ("s / sample [95% CI]", _time),
            ("cost", lambda r: _money(r["cost_usd"])),
        ]
    if part in ("all", "paired") and has_reference(rows):
        if rows.reference_run.dropna().nunique() > 1:
            spec.append(("vs", lambda r: "" if _na(r["reference_run"]) else r["reference"]))
        spec += [
            (f"Δ {metric} acc, points [95% CI]", _difference),
            ("McNemar p", lambda r: _p_value(r["mcnemar_p"])),
            ("paired n", lambda r: "—" if _na(r["n_paired"]) else str(int(r["n_paired"]))),
            ("decoded tok −%", lambda r: _pct(r["output_token_reduction"])),
            ("input tok −%", lambda r: _pct(r["input_token_reduction"])),
            ("speed-up [95% CI]", _speedup),
        ]
    return spec


def has_reference(rows: pd.DataFrame) -> bool:
    return "reference_run" in rows and rows.reference_run.notna().any()


def _cells(rows: pd.DataFrame, spec) -> list[list[str]]:
    return [[cell(row) for _, cell in spec] for row in rows.to_dict("records")]


def _caption(comparison: Comparison, rows: pd.DataFrame) -> str:
    if not has_reference(rows):
        return "no reference run in this table, so no paired statistics"
    refs = rows.reference_run.dropna().unique()
    ref = rows.reference[rows.reference_run == refs[0]].iloc[0] if len(refs) == 1 else "the reference run in column vs"
    return (f"Δ, McNemar p, token reduction and speed-up: each run against {ref}, on the samples both "
            f"answered (paired n); accuracy = {comparison.metric}")


TERMINAL_RUNS = 30  # a table of more runs is summarised per method on the terminal; the files list every run
TERMINAL_LINES = 10  # notes, and failed jobs, shown on the terminal before "and N more"


def render(comparison: Comparison, console: Console | None = None) -> None:
    """The comparison on the terminal: per task and model the runs, then the paired statistics, warnings and notes;
    a table of many runs as a summary per method instead (comparison.md and .csv have every run)."""
    console = console or Console()
    for task, model, rows in comparison.groups():
        if len(rows) > TERMINAL_RUNS:
            console.print(_method_summary(comparison, f"{task} · {model}", rows))
        else:
            for table in _fitted(console, f"{task} · {model}", rows,
                                 columns(rows, comparison.by, comparison.metric, "runs"), comparison.by):
                console.print(table)
            if has_reference(rows):
                for table in _fitted(console, f"{task} · {model}: paired statistics", rows,
                                     columns(rows, comparison.by, comparison.metric, "paired"), comparison.by,
                                     caption=_caption(comparison, rows)):
                    console.print(table)
        for line in comparison.warnings[(task, model)]:
            console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
        notes = comparison.notes[(task, model)]
        for line in notes[:TERMINAL_LINES]:
            console.print(f"note: {line}", highlight=False)
        if len(notes) > TERMINAL_LINES:
            console.print(f"note: … and {plural(len(notes) - TERMINAL_LINES, 'more note')} in comparison.md",
                          highlight=False)
    failures = comparison.collection.failures
    for failure in failures[:TERMINAL_LINES]:
        console.print(f"[bold red]failed:[/] {_failure_line(failure)}", highlight=False)
    if len(failures) > TERMINAL_LINES:
        console.print(f"[bold red]failed:[/] … and {plural(len(failures) - TERMINAL_LINES, 'more job')}, listed in "
                      "comparison.md", highlight=False)


def _method_summary(comparison: Comparison, title: str, rows: pd.DataFrame) -> Table:
    """Per method: how many runs, the best by accuracy (with its interval and its difference to the reference),
    the median and worst accuracy, and median tokens and time."""
    metric = comparison.metric
    accuracy = f"accuracy_{metric}"
    table = Table(title=f"{title}: {len(rows)} runs, summarised per method (every run is in comparison.md and "
                        "comparison.csv)", title_justify="left",
                  caption=f"accuracy = {metric}; best: the run of the method with the highest accuracy",
                  caption_justify="left")
    for header in ("method", "runs", "best run", f"best {metric} acc [95% CI]", "Δ vs reference", "median acc",
                   "worst acc", "median decoded tok", "median s / sample", "failed samples"):
        table.add_column(header, justify="left" if header in ("method", "best run") else "right",
                         no_wrap=header == "method", overflow="fold")
    for method, mine in rows.groupby("method", sort=False):
        scored = mine[mine[accuracy].notna()]
        best = scored.loc[scored[accuracy].idxmax()] if len(scored) else None
        table.add_row(
            method, str(len(mine)), "—" if best is None else best["label"],
            "—" if best is None else _accuracy(best, metric), "—" if best is None else _difference(best),
            _pct(scored[accuracy].median() if len(scored) else None),
            _pct(scored[accuracy].min() if len(scored) else None),
            _amount(mine.mean_output_tokens.median()), _seconds(mine.mean_time_per_sample_s.median()),
            str(int(mine.errors.sum())))
    return table


def _fitted(console: Console, title: str, rows: pd.DataFrame, spec, by, caption: str | None = None) -> list[Table]:
    """One table, or, where it is wider than the terminal, its figures in as many tables as fit, each
    repeating the label columns (method, setting, ...), so that no cell is cut short."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(10**6)

    def width(part):  # the table's natural width, every cell on one line
        return Measurement.get(console, unbounded, _rich_table(title, rows, part)).maximum

    labels = [c for c in spec if c[0] in TEXT_COLUMNS or c[0] in by]
    figures = [c for c in spec if c not in labels]
    parts: list[list] = [[]]
    for column in figures:
        if parts[-1] and width(labels + parts[-1] + [column]) > console.width:
            parts.append([])
        parts[-1].append(column)
    return [_rich_table(title if i == 0 else f"{title} (continued)", rows, labels + part,
                        caption if i == len(parts) - 1 else None) for i, part in enumerate(parts)]


def _rich_table(title: str, rows: pd.DataFrame, spec, caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for header, _ in spec:
        text = header in TEXT_COLUMNS
        table.add_column(header, justify="left" if text else "right", no_wrap=text)
    for cells in _cells(rows, spec):
        table.add_row(*cells)
    return table


def _failure_line(failure: FailedJob) -> str:
    overrides = f" ({' '.join(failure.overrides)})" if failure.overrides else ""
    return f"{failure.dir}{overrides}: {failure.error}"


# ---------------------------------------------------------------- files


def write(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """comparison.md, comparison.csv, comparison.tex and pareto.png in out_dir (each replaced whole)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {"comparison.md": to_markdown(comparison, out), "comparison.csv": to_csv(comparison),
             "comparison.tex": to_latex(comparison)}
    for name, text in texts.items():
        _replace(out / name, text.encode("utf-8"))
    plot_pareto(comparison, out / "pareto.png")
    return [out / name for name in OUTPUT_FILES]


def _replace(path: Path, data: bytes) -> None:
    """Write then rename, so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def to_csv(comparison: Comparison) -> str:
    return comparison.table.to_csv(index=False)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown(comparison: Comparison, out_dir: Path | None = None) -> str:
    lines = ["# Comparison", ""]
    reference = comparison.reference or "none"
    lines += [f"{plural(len(comparison.table), 'run')} · reference: {reference} · paired statistics on the "
              f"{comparison.metric} accuracy · 95% intervals: Wilson for accuracy (with repeats: a bootstrap over "
              "samples), paired bootstrap for Δ, bootstrap over batches for the speed-up (n.s.: it includes 1)", ""]
    for task, model, rows in comparison.groups():
        spec = columns(rows, comparison.by, comparison.metric)
        lines += [f"## {task} · {model}", "", _md_row([h for h, _ in spec]),
                  _md_row(["---"] * len(spec))]
        lines += [_md_row(cells) for cells in _cells(rows, spec)]
        lines += ["", f"{_caption(comparison, rows)}.", ""]
        lines += [f"> **warning:** {line}" for line in comparison.warnings[(task, model)]]
        lines += [f"- {line}" for line in comparison.notes[(task, model)]]
        lines += ["", "Runs: " + ", ".join(f"{label} `{_relative(d, out_dir)}`"
                                          for label, d in zip(rows.label, rows.run_dir)), ""]
    if comparison.collection.failures:
        lines += ["## Failed jobs", ""]
        lines += [f"- `{_relative(f.dir, out_dir)}`" + (f" ({' '.join(f.overrides)})" if f.overrides else "")
                  + f": {f.error}" for f in comparison.collection.failures]
        lines.append("")
    lines += ["![accuracy against decoded tokens and time per sample](pareto.png)", ""]
    return "\n".join(lines)


def _relative(path, base: Path | None) -> str:
    if base is None:
        return str(path)
    try:
        return os.path.relpath(path, base.resolve())
    except ValueError:  # another drive
        return str(path)


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "Δ": r"$\Delta$", "×": r"$\times$", "−": r"$-$", "—": "---", "…": r"\dots{}", "·": r"$\cdot$"}


def _tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(comparison: Comparison) -> str:
    lines = ["% mascompare comparison: one tabular per task and model; needs \\usepackage{booktabs}", ""]
    for task, model, rows in comparison.groups():
        spec = columns(rows, comparison.by, comparison.metric)
        align = "".join("l" if header in TEXT_COLUMNS else "r" for header, _ in spec)
        lines += [f"% {_tex(task)} · {_tex(model)}: {_tex(_caption(comparison, rows))}",
                  f"\\begin{{tabular}}{{{align}}}", r"\toprule",
                  " & ".join(_tex(h) for h, _ in spec) + r" \\", r"\midrule"]
        lines += [" & ".join(_tex(c) for c in cells) + r" \\" for cells in _cells(rows, spec)]
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- Pareto plot


def pareto_front(xs, ys) -> list[int]:
    """Indices of the points no other point beats: none has lower-or-equal x and higher-or-equal y, one strictly.

    In one pass over the points sorted by x: a point is on the front when its y is the highest at its x (points
    that coincide do not beat each other) and higher than every y at a lower x.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    order = np.lexsort((-ys, xs))  # by x, the highest y first at each x
    front, best_before, k = [], -np.inf, 0
    while k < len(order):
        x, top = xs[order[k]], ys[order[k]]
        same_x = k
        while same_x < len(order) and xs[order[same_x]] == x:
            if ys[order[same_x]] == top and top > best_before:
                front.append(int(order[same_x]))
            same_x += 1
        best_before, k = max(best_before, top), same_x
    return sorted(front)


def plot_pareto(comparison: Comparison, path: Path) -> None:
    """Accuracy against decoded tokens and against time per sample: one point per run, front drawn, labelled
    where the labels fit (the front first)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in workers

    groups = list(comparison.groups())
    metric = comparison.metric
    axes_spec = (("mean_output_tokens", "decoded tokens per sample"), ("mean_time_per_sample_s", "seconds per sample"))
    fig = Figure(figsize=(13, 5.2 * len(groups)), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 2, squeeze=False)
    methods = sorted(set(comparison.table.method), key=_method_rank)
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    labels = []
    for (task, model, rows), row_axes in zip(groups, axes):
        rows = rows[rows[f"accuracy_{metric}"].notna()]
        for ax, (column, xlabel) in zip(row_axes, axes_spec):
            labels.append((ax, _plot_panel(ax, rows, column, metric, colours)))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"accuracy ({metric}) %, 95% CI")
            ax.set_title(f"{task} · {model}", loc="left", fontsize=11)
    handles = [axes[0][0].scatter([], [], color=colours[m], label=m, s=60) for m in methods]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(methods) + 1, frameon=False)
    fig.draw_without_rendering()  # lay out first: labels are placed where they will be drawn
    for ax, points in labels:
        _place_labels(ax, points, canvas.get_renderer())
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    _replace(path, image.getvalue())


def _plot_panel(ax, rows: pd.DataFrame, column: str, metric: str, colours: dict) -> list[tuple]:
    """Points, intervals and front of one panel (one artist per method, however many runs); returns
    (x, y, label, on the front) for each point, to be labelled later."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = rows[rows[column].notna()]
    if rows.empty:
        ax.text(0.5, 0.5, "no finished samples", ha="center", va="center", transform=ax.transAxes)
        return []
    xs = rows[column].to_numpy(dtype=float)
    ys = 100 * rows[f"accuracy_{metric}"].to_numpy(dtype=float)
    lows = 100 * rows[f"accuracy_{metric}_low"].to_numpy(dtype=float)
    highs = 100 * rows[f"accuracy_{metric}_high"].to_numpy(dtype=float)
    front = pareto_front(xs, ys)
    on_front = np.zeros(len(xs), dtype=bool)
    on_front[front] = True
    methods = rows.method.to_numpy()
    for method in dict.fromkeys(methods):
        mine = methods == method
        # clamped: at 100% the interval's upper end can fall a rounding error short of the point; no interval: none
        below = np.nan_to_num(np.maximum(ys[mine] - lows[mine], 0))
        above = np.nan_to_num(np.maximum(highs[mine] - ys[mine], 0))
        ax.errorbar(xs[mine], ys[mine], yerr=[below, above], fmt="none", color=colours[method], alpha=0.35,
                    capsize=3)
        ax.scatter(xs[mine], ys[mine], s=np.where(on_front[mine], 90, 55), color=colours[method],
                   edgecolors=np.where(on_front[mine], "black", "none"), zorder=3)
    order = sorted(front, key=lambda i: xs[i])
    ax.plot(xs[order], ys[order], drawstyle="steps-post", color="grey", linestyle="--", linewidth=1.2,
            label="Pareto front (black rims)", zorder=2)
    ax.margins(x=0.3, y=0.15)
    if xs.min() > 0 and xs.max() / xs.min() >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlim(left=0)  # tokens and seconds: the margin would run below zero
    ax.set_ylim(max(-5, ax.get_ylim()[0]), min(105, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return list(zip(xs, ys, rows.label, on_front))


# Where a label may go relative to its point (offset in points, alignment), tried in this order.
LABEL_SPOTS = ((7, 5, "left"), (7, -14, "left"), (-7, 5, "right"), (-7, -14, "right"),
               (7, 17, "left"), (7, -26, "left"), (-7, 17, "right"), (-7, -26, "right"))
MAX_LABELS = 30  # per panel: more are not read; comparison.md names every run
MAX_LABEL_TRIES = 120  # points tried per panel once the front is labelled: a crowded plot has room for few more
POINT_BOX = 6  # half the side of the box a point's marker covers, in pixels


def _place_labels(ax, points: list[tuple], renderer) -> None:
    """Label the points where a label fits: at the first spot that overlaps no point and no earlier label and
    stays inside the axes. The front comes first (a front point gets its first spot even where it overlaps,
    up to MAX_LABELS); the others only where a label fits, as long as MAX_LABEL_TRIES allows. A panel that
    could not label every point says how many it did."""
    if not points:
        return
    pixels = ax.transData.transform([(x, y) for x, y, _, _ in points])
    taken = np.column_stack([pixels - POINT_BOX, pixels + POINT_BOX])  # x0, y0, x1, y1 of every marker
    bounds = ax.bbox
    scale = ax.figure.dpi / 72  # offset points to pixels
    order = sorted(range(len(points)), key=lambda i: (not points[i][3], points[i][0], -points[i][1]))
    placed = tries = 0
    for i in order:
        x, y, label, front = points[i]
        if placed >= MAX_LABELS or (not front and tries >= MAX_LABEL_TRIES):
            break
        tries += not front
        width, height, descent = _text_size(ax, label, renderer)
        px, py = pixels[i]
        chosen = None
        for dx, dy, align in LABEL_SPOTS:
            x0 = px + dx * scale - (width if align == "right" else 0)
            y0 = py + dy * scale - descent
            box = (x0, y0, x0 + width, y0 + height)
            inside = bounds.x0 <= box[0] and box[2] <= bounds.x1 and bounds.y0 <= box[1] and box[3] <= bounds.y1
            if inside and not np.any((box[0] < taken[:, 2]) & (box[2] > taken[:, 0]) & (box[1] < taken[:, 3])
                                     & (box[3] > taken[:, 1])):
                chosen = (dx, dy, align, box)
                break
        if chosen is None and front:  # the front is the point of the plot: its label goes on, overlapping
            dx, dy, align = LABEL_SPOTS[0]
            chosen = (dx, dy, align, (px, py, px + width, py + height))
        if chosen is None:
            continue
        dx, dy, align, box = chosen
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=align, fontsize=9)
        taken = np.vstack([taken, box])
        placed += 1
    if placed < len(points):
        ax.text(0.01, 0.99, f"{placed} of {len(points)} points labelled (the Pareto front first); comparison.md "
                            "names every run", transform=ax.transAxes, ha="left", va="top", fontsize=8, color="0.35")


def _text_size(ax, label: str, renderer) -> tuple[float, float, float]:
    """A label's width, height and depth below its baseline, in pixels."""
    text = ax.annotate(label, (0, 0), xycoords="axes pixels", fontsize=9)
    box = text.get_window_extent(renderer)
    baseline = ax.transAxes.transform((0, 0))[1]
    text.remove()
    return box.width, box.height, baseline - box.y0
