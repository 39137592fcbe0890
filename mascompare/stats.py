"""The statistics of runs, computed one way for the run summary (run.json, `show`) and for `compare`.

Everything starts from a run's latest sample records, laid out as a table (`sample_table`: one row per sample
and repeat). `summarize` gives a run's figures; `paired` sets a run against a reference run on the samples both
answered. Intervals are 95%: Wilson for accuracy with one answer per sample, else percentile bootstraps over
clusters (a sample with all its repeats; a batch, since a batch's samples share its wall time).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from mascompare.records import SampleRecord, Summary

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CHUNK = 1_000
MAX_NEW_TOKENS_WARN_SHARE = 0.10  # a run warns when more of its calls than this were cut off
METRICS = ("strict", "flexible")
USAGE_COLUMNS = ("input_tokens", "context_tokens", "output_tokens", "latent_steps", "calls", "decoding_calls",
                 "calls_at_max_new_tokens", "forward_passes")
SAMPLE_COLUMNS = ("id", "repeat", "batch", "pair", "error", "correct_strict", "correct_flexible", *USAGE_COLUMNS,
                  "time_s", "cost_usd", "extractor_version")
MEAN_COLUMNS = ("input_tokens", "context_tokens", "output_tokens", "latent_steps", "calls", "forward_passes")
SUMMARY_COLUMNS = ("id", "repeat", "pair", "batch", "correct_strict", "correct_flexible", *MEAN_COLUMNS, "time_s",
                   "cost_usd")  # what summarize reads of the answered samples


def sample_table(records: list[SampleRecord]) -> pd.DataFrame:
    """One row per record. `pair` matches a sample across runs: its id and its question, since ids alone can
    collide across task settings (arith seeds). `batch` is a string: records without a batch number (written
    before batches were numbered) are a batch each."""
    return pd.DataFrame.from_records(sample_rows(records), columns=list(SAMPLE_COLUMNS))


def sample_rows(records: list[SampleRecord]) -> list[dict]:
    """sample_table's rows, for a caller that lays out many runs' records as one table."""
    rows = []
    for k, record in enumerate(records):
        usage = record.usage
        rows.append({
            "id": record.id, "repeat": record.repeat,
            "batch": str(record.batch) if record.batch is not None else f"line {k}",
            "pair": f"{record.id}|{record.question_hash or ''}",
            "error": record.error or None,
            "correct_strict": bool(record.correct_strict), "correct_flexible": bool(record.correct_flexible),
            **{column: getattr(usage, column) for column in USAGE_COLUMNS},
            "time_s": usage.wall_time_s, "cost_usd": usage.cost_usd, "extractor_version": record.extractor_version,
        })
    return rows


class Columns:
    """A sample table as numpy arrays, a column each (converted when first asked for), with its row labels:
    what summarize and paired read. `split_by_run` cuts a table of many runs into these at once."""

    def __init__(self, columns: dict[str, np.ndarray] | pd.DataFrame, index, length: int):
        self.columns, self.index, self.length = columns, index, length
        self.arrays: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, table: "pd.DataFrame | Columns") -> "Columns":
        return table if isinstance(table, Columns) else cls(table, table.index, len(table))

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.arrays:
            self.arrays[column] = np.asarray(self.columns[column])
        return self.arrays[column]

    def __len__(self) -> int:
        return self.length

    @property
    def answered(self) -> np.ndarray:
        return pd.isna(self["error"])


def split_by_run(samples: pd.DataFrame) -> dict[int, Columns]:
    """A table of many runs (column `run`) as each run's Columns, every column converted once for all runs."""
    runs = samples.run.to_numpy()
    order = np.argsort(runs, kind="stable")  # each run's rows in their order in the table
    keys, starts = np.unique(runs[order], return_index=True)
    ends = [*starts[1:], len(order)]
    columns = {c: samples[c].to_numpy()[order] for c in samples.columns}
    index = samples.index.to_numpy()[order]
    return {int(key): Columns({c: values[start:end] for c, values in columns.items()}, index[start:end], end - start)
            for key, start, end in zip(keys.tolist(), starts.tolist(), ends)}


def summarize(table: "pd.DataFrame | Columns") -> Summary:
    """A run's figures from its sample table: accuracy (strict and flexible, with 95% intervals, per repeat when
    there are several), mean usage per answer, time per sample with its interval over batches, calls cut off at
    max_new_tokens, and cost (unknown when any answer's is). Computed on the table's columns as numpy arrays:
    `compare` summarises thousands of runs, and pandas' per-call cost would dominate."""
    table = Columns.of(table)
    answered = table.answered
    done = {column: table[column][answered] for column in SUMMARY_COLUMNS}
    n = int(answered.sum())
    repeats = sorted(set(done["repeat"].tolist()))
    summary = Summary(n=n, errors=len(table) - n, samples=len(set(done["id"].tolist())), repeats=len(repeats),
                      decoding_calls=int(table["decoding_calls"].sum()),
                      calls_at_max_new_tokens=int(table["calls_at_max_new_tokens"].sum()))
    for kind in METRICS:
        correct = done[f"correct_{kind}"].astype(bool)
        setattr(summary, f"accuracy_{kind}", float(correct.mean()) if n else None)
        by_pair: dict[str, list[bool]] = {}
        for pair, right in zip(done["pair"].tolist(), correct.tolist()):
            by_pair.setdefault(pair, []).append(right)
        interval = accuracy_interval({pair: by_pair[pair] for pair in sorted(by_pair)})
        setattr(summary, f"accuracy_{kind}_ci95", list(interval) if interval else None)
        if len(repeats) > 1:
            setattr(summary, f"accuracy_{kind}_per_repeat",
                    [float(correct[done["repeat"] == k].mean()) for k in repeats])
    for column in MEAN_COLUMNS:
        setattr(summary, f"mean_{column}", _mean(done[column]) if n else None)
    summary.mean_time_per_sample_s = _mean(done["time_s"]) if n else None
    estimates = batch_time_estimates(done["batch"], done["time_s"], seed=0)
    summary.time_per_sample_s_ci95 = list(percentile_interval(estimates)) if estimates is not None else None
    costs = done["cost_usd"]
    summary.cost_usd = None if not n or pd.isna(costs).any() else float(np.asarray(costs, dtype=float).sum())
    return summary


def _mean(values: np.ndarray) -> float:
    """A column's mean as pandas takes it (missing values left out; the sum over the others, in row order)."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    if missing.any():
        values = np.where(missing, 0.0, values)
    count = len(values) - int(missing.sum())
    return float(values.sum() / count) if count else float("nan")


def summarize_records(records: list[SampleRecord]) -> Summary:
    return summarize(sample_table(records))


def capped_share_warning(summary: Summary) -> str | None:
    """One line when more than MAX_NEW_TOKENS_WARN_SHARE of the calls that decode were cut off at max_new_tokens."""
    calls, capped = summary.decoding_calls or 0, summary.calls_at_max_new_tokens or 0
    if not calls or capped / calls <= MAX_NEW_TOKENS_WARN_SHARE:
        return None
    return (f"{capped} of {calls} decoding calls ({100 * capped / calls:.0f}%) stopped at "
            "generation.max_new_tokens: their answers may be cut off; raise generation.max_new_tokens")


# ---------------------------------------------------------------- intervals


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval: unlike the normal approximation it stays inside [0, 1] at small n."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cluster_bootstrap(totals, sizes, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap estimates of sum(totals) / sum(sizes), resampling clusters (not rows) with replacement.

    A cluster is whatever varies together: a sample with all its repeats (accuracy), or one batch
    (time per sample, since a batch's samples share its wall time). `sizes` None: every cluster is one row.
    """
    totals = np.asarray(totals, dtype=float)
    chunks = _resample_counts(len(totals), resamples, seed)
    if sizes is None:  # every cluster of size 1: a resample's size, a sum of whole numbers, is exactly n
        return np.concatenate([(counts @ totals) / len(totals) for counts in chunks])
    sizes = np.asarray(sizes, dtype=float)
    return np.concatenate([(counts @ totals) / (counts @ sizes) for counts in chunks])


CACHED_COUNTS_BYTES = 16 << 20  # a count matrix kept for reuse is at most this big (n <= 200 at 10,000 resamples)


def _resample_counts(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """The resamples-by-n count matrix of a bootstrap, a chunk at a time. It depends only on n, resamples and
    seed, so runs with as many clusters share one draw (the draw, not the arithmetic, is what takes the time)."""
    if resamples * n * 8 > CACHED_COUNTS_BYTES:
        return _draw_counts(n, resamples, seed)
    return _cached_counts(n, resamples, seed)


@functools.lru_cache(maxsize=6)  # enough for the sizes and seeds of runs alike (samples, batches; seeds 0-2)
def _cached_counts(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    return _draw_counts(n, resamples, seed)


def _draw_counts(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # float, as the product with totals would cast it each time; the counts are small integers, exact in float
    return [rng.multinomial(n, np.full(n, 1 / n), size=min(BOOTSTRAP_CHUNK, resamples - start)).astype(float)
            for start in range(0, resamples, BOOTSTRAP_CHUNK)]


def percentile_interval(estimates, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and 1 - (1 - level) / 2 quantiles of the estimates, to the bit as np.quantile's default
    (linear) method takes them: the two order statistics around (n - 1) q, and the same interpolation. compare
    takes thousands of these, and np.quantile's checks and dispatch cost more than its arithmetic. The values are
    sorted rather than partitioned: a bootstrap of few clusters repeats few values, which partitioning is slow at."""
    values = np.sort(np.asarray(estimates, dtype=float), axis=None)
    if np.isnan(values[-1]):  # a NaN sorts last, and makes every quantile NaN
        return float("nan"), float("nan")
    tail, last = (1 - level) / 2, len(values) - 1
    return _interpolated(values, last * tail), _interpolated(values, last * (1 - tail))


def _interpolated(ordered: np.ndarray, position: float) -> float:
    below = math.floor(position)
    low, high = float(ordered[below]), float(ordered[min(below + 1, len(ordered) - 1)])
    weight, step = position - below, high - low
    return high - step * (1 - weight) if weight >= 0.5 else low + step * weight  # from the nearer end, as numpy


def accuracy_interval(correct_by_sample: dict[str, list[bool]]) -> tuple[float, float] | None:
    """95% interval of the mean accuracy. One answer per sample: Wilson's. Several (run.repeats): a
    percentile bootstrap over samples, each drawn with all its repeats, so repeats of one question are
    not counted as independent evidence."""
    if not correct_by_sample:
        return None
    outcomes = list(correct_by_sample.values())
    if all(len(o) == 1 for o in outcomes):
        return wilson_interval(sum(o[0] for o in outcomes), len(outcomes))
    if len(outcomes) < 2:
        return None
    return percentile_interval(cluster_bootstrap([sum(o) for o in outcomes], [len(o) for o in outcomes]))


def batch_time_estimates(batches, times, seed: int) -> np.ndarray | None:
    """Bootstrap estimates of a run's mean time per sample from its rows' batches and times, resampling its
    batches (None with fewer than two)."""
    totals, counts = _batch_totals(batches, times)
    if len(totals) < 2:
        return None
    return cluster_bootstrap(totals, counts, seed=seed)


def _batch_totals(batches, times) -> tuple[list[float], list[int]]:
    """Each batch's total time and count of timed samples, batches in the order of their names as text.

    The sums are taken as pandas' grouped sum takes them, so that the figures match earlier versions, which
    grouped with pandas, to the last bit: rows already in batch order without a missing time are added in
    order (numpy's add.reduceat); otherwise each batch's sum is compensated (Kahan), missing times left out."""
    names = [str(batch) for batch in (batches.tolist() if hasattr(batches, "tolist") else batches)]
    times = np.asarray(times, dtype=float)
    keys = sorted(set(names))
    position = {key: k for k, key in enumerate(keys)}
    codes = [position[name] for name in names]
    if all(a <= b for a, b in zip(codes, codes[1:])) and not np.isnan(times).any():
        starts = [k for k in range(len(codes)) if k == 0 or codes[k] != codes[k - 1]]
        sums = np.add.reduceat(times, starts).tolist() if starts else []
        return sums, np.diff([*starts, len(codes)]).tolist()
    sums, compensations, counts = [0.0] * len(keys), [0.0] * len(keys), [0] * len(keys)
    for code, time in zip(codes, times.tolist()):
        if time != time:  # missing: neither summed nor counted
            continue
        y = time - compensations[code]
        t = sums[code] + y
        compensations[code] = t - sums[code] - y
        if compensations[code] != compensations[code]:  # an infinite time: the compensation is dropped
            compensations[code] = 0.0
        sums[code] = t
        counts[code] += 1
    return sums, counts


# ---------------------------------------------------------------- a run against a reference


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: b = only the first right, c = only the second.

    Under no difference each discordant pair goes either way with probability 1/2, so the test is a
    two-sided binomial test of min(b, c) in b + c trials.
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap_interval(x, y, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of mean(x - y) for paired outcomes (0/1, or each sample's mean over its repeats),
    resampling pairs with replacement."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(d) == 0:
        return None
    return percentile_interval(cluster_bootstrap(d, None, seed=seed), level)


def speedup_interval(ours, theirs, key, memo: dict | None) -> tuple[float, float] | None:
    """95% interval of (reference time per sample) / (this run's), from independent bootstraps of the two runs'
    batches (`ours`, `theirs`: each a run's (batches, times) arrays): it shows the spread between batches, not the
    load on the machine on the day. `memo` keeps the reference's bootstrap for the next run set against the same
    rows of it, which `key` names (the rows' labels in the caller's table)."""
    ours = batch_time_estimates(*ours, seed=1)
    if memo is None or key not in memo:
        estimates = batch_time_estimates(*theirs, seed=2)
        if memo is not None:
            memo[key] = estimates
    else:
        estimates = memo[key]
    if ours is None or estimates is None or (ours <= 0).any():
        return None
    return percentile_interval(estimates / ours)


PAIRED_COLUMNS = ("output_tokens", "input_tokens", "context_tokens")


def paired(ours: "pd.DataFrame | Columns", theirs: "pd.DataFrame | Columns", metric: str,
           memo: dict | None = None) -> dict:
    """A run's sample table against its reference's, on the samples both answered; each sample's repeats are
    pooled into its mean, so a sample counts once however often either run answered it. `memo`: see
    speedup_interval. Computed on numpy arrays, as summarize is."""
    columns = (f"correct_{metric}", *PAIRED_COLUMNS, "time_s", "batch")
    ours, theirs = Columns.of(ours), Columns.of(theirs)
    ours_done, theirs_done = ours.answered, theirs.answered
    our_pairs, their_pairs = ours["pair"][ours_done], theirs["pair"][theirs_done]
    shared = set(our_pairs.tolist()) & set(their_pairs.tolist())
    if not shared:
        return {"n_paired": 0}
    our_kept = np.array([p in shared for p in our_pairs.tolist()], dtype=bool)
    their_kept = np.array([p in shared for p in their_pairs.tolist()], dtype=bool)
    a = {c: ours[c][ours_done][our_kept] for c in columns}
    b = {c: theirs[c][theirs_done][their_kept] for c in columns}
    our_pairs, their_pairs = our_pairs[our_kept], their_pairs[their_kept]
    order = sorted(shared)  # the pairs as a grouping by pair orders them
    x, our_means = _pair_means(our_pairs, a, metric, order)
    y, their_means = _pair_means(their_pairs, b, metric, order)
    low, high = paired_bootstrap_interval(x, y)
    one_answer_each = len(set(our_pairs.tolist())) == len(our_pairs) and \
        len(set(their_pairs.tolist())) == len(their_pairs)
    run_time, ref_time = _mean(a["time_s"]), _mean(b["time_s"])
    speedup = float(ref_time / run_time) if run_time > 0 and ref_time > 0 else None
    ref_key = tuple(theirs.index[theirs_done][their_kept])
    interval = speedup_interval((a["batch"], a["time_s"]), (b["batch"], b["time_s"]), ref_key, memo) \
        if speedup is not None else None
    xb, yb = x.astype(bool), y.astype(bool)
    return {
        "n_paired": len(order),
        "accuracy_diff": float(x.mean() - y.mean()),
        "accuracy_diff_low": low, "accuracy_diff_high": high,
        # McNemar's test needs one right-or-wrong answer per sample and run
        "mcnemar_p": mcnemar_exact(int((xb & ~yb).sum()), int((~xb & yb).sum())) if one_answer_each else None,
        **{f"{kind}_token_reduction": _reduction(_mean(our_means[f"{kind}_tokens"]),
                                                 _mean(their_means[f"{kind}_tokens"]))
           for kind in ("output", "input", "context")},
        "speedup": speedup, "speedup_low": interval[0] if interval else None,
        "speedup_high": interval[1] if interval else None,
    }


def _pair_means(pairs: np.ndarray, columns: dict, metric: str, order: list[str]) -> tuple[np.ndarray, dict]:
    """Each pair's mean correctness and token counts over its rows, pairs in `order`. The values are whole
    numbers, so the sums are exact in any order."""
    position = {pair: k for k, pair in enumerate(order)}
    index = np.array([position[p] for p in pairs.tolist()], dtype=np.intp)
    counts = np.bincount(index, minlength=len(order)).astype(float)

    def means(values):
        return np.bincount(index, weights=np.asarray(values, dtype=float), minlength=len(order)) / counts

    return means(columns[f"correct_{metric}"]), {c: means(columns[c]) for c in PAIRED_COLUMNS}


def _reduction(value: float, ref: float) -> float | None:
    return float(1 - value / ref) if ref > 0 else None
