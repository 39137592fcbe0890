"""The statistics of runs (mascompare/stats.py): summaries, intervals checked against hand computations, and a
run set against a reference."""

import numpy as np
import pytest

from helpers import sample_record as record
from mascompare.stats import (
    accuracy_interval,
    batch_time_estimates,
    capped_share_warning,
    cluster_bootstrap,
    mcnemar_exact,
    paired,
    paired_bootstrap_interval,
    percentile_interval,
    sample_table,
    summarize_records,
    wilson_interval,
)

# ---------------------------------------------------------------- a run's summary


def test_summary_counts_errors_apart_and_means_per_sample():
    s = summarize_records([record("a"), record("b", correct=False), record("c", error="boom")])
    assert s.n == 2 and s.errors == 1 and s.samples == 2 and s.repeats == 1
    assert s.accuracy_flexible == 0.5 and s.accuracy(metric="flexible") == 0.5
    assert s.accuracy_flexible_ci95 == pytest.approx(list(wilson_interval(1, 2)))
    assert s.mean_input_tokens == 10 and s.mean_time_per_sample_s == 0.5
    assert s.cost_usd is None  # unknown price: unknown cost, never 0
    assert s.accuracy_flexible_per_repeat is None and "accuracy_flexible_per_repeat" not in s.to_json()


def test_cost_is_known_only_when_every_answer_has_one():
    assert summarize_records([record("a", cost_usd=0.25), record("b", cost_usd=0.5)]).cost_usd == 0.75
    assert summarize_records([record("a", cost_usd=0.25), record("b")]).cost_usd is None
    assert summarize_records([record("a", cost_usd=0.25), record("b", error="boom")]).cost_usd == 0.25


def test_an_empty_run_has_no_figures():
    s = summarize_records([])
    assert (s.n, s.errors, s.accuracy_flexible, s.accuracy_flexible_ci95, s.mean_time_per_sample_s) == \
        (0, 0, None, None, None)


def test_repeats_are_keyed_apart_and_summarised_per_repeat():
    rows = [record("a", True, repeat=0), record("a", False, repeat=1), record("b", True, repeat=0),
            record("b", True, repeat=1)]
    s = summarize_records(rows)
    assert s.n == 4 and s.samples == 2 and s.repeats == 2
    assert s.accuracy_flexible == 0.75 and s.accuracy_flexible_per_repeat == [1.0, 0.5]


def test_the_sample_table_pairs_by_id_and_question_and_gives_unnumbered_lines_a_batch_each():
    table = sample_table([record("a", question="q1", batch=3), record("a", question="q2"), record("b")])
    assert list(table.pair) == ["a|q1", "a|q2", "b|"]  # arith ids repeat across seeds: the question tells them apart
    assert list(table.batch) == ["3", "line 1", "line 2"]
    assert list(table.error) == [None, None, None] and table.output_tokens.tolist() == [5, 5, 5]


def test_time_per_sample_interval_comes_from_the_spread_between_batches():
    def timed(rows):
        s = summarize_records(rows)
        return s.mean_time_per_sample_s, s.time_per_sample_s_ci95

    same = [record(f"s{i}", batch=i // 2, wall=0.25) for i in range(6)]
    assert timed(same) == (0.25, [0.25, 0.25])  # batches alike: no spread
    one_batch = [record(f"s{i}", batch=0, wall=0.1 * i) for i in range(4)]
    assert timed(one_batch)[1] is None  # one batch says nothing about the spread
    table = sample_table(one_batch)
    assert batch_time_estimates(table.batch.to_numpy(), table.time_s.to_numpy(), seed=0) is None
    mixed = [record("a", batch=0, wall=1.0), record("b", batch=0, wall=1.0), record("c", batch=1, wall=3.0)]
    mean, (low, high) = timed(mixed)
    # batches: (2 s, 2 samples) and (3 s, 1 sample); resamples give 4/4, 5/3 or 6/2 s per sample
    assert mean == pytest.approx(5 / 3) and (low, high) == pytest.approx((1.0, 3.0))


def test_a_run_warns_once_when_more_than_a_tenth_of_its_calls_hit_max_new_tokens():
    rows = [record(f"s{i}", capped=int(i < 2)) for i in range(10)]
    s = summarize_records(rows)
    assert s.decoding_calls == 10 and s.calls_at_max_new_tokens == 2
    assert capped_share_warning(s) == ("2 of 10 decoding calls (20%) stopped at generation.max_new_tokens: their "
                                       "answers may be cut off; raise generation.max_new_tokens")
    latent = [record(f"s{i}", capped=int(i < 2), calls=4, decoding_calls=1) for i in range(4)]
    assert capped_share_warning(summarize_records(latent)).startswith("2 of 4 decoding calls (50%)")  # thoughts don't
    assert capped_share_warning(summarize_records([record(f"s{i}", capped=int(i < 1)) for i in range(10)])) is None


# ---------------------------------------------------------------- intervals


def test_wilson_interval_matches_hand_computation():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_cluster_bootstrap_matches_hand_computed_distributions():
    # two equal clusters worth 0 and 1: a resample is {0,0}, {0,1} or {1,1} with probability 1/4, 1/2, 1/4
    estimates = cluster_bootstrap([0, 3], [3, 3], resamples=20_000)
    assert set(np.round(estimates, 9)) == {0.0, 0.5, 1.0}
    assert np.mean(estimates == 0.5) == pytest.approx(0.5, abs=0.02)
    assert np.mean(estimates == 0.0) == pytest.approx(0.25, abs=0.02)
    # unequal sizes: the estimate is a ratio of sums, (2+2)/(2+2)=1, (2+0)/(2+1)=2/3, 0/2=0
    estimates = cluster_bootstrap([2, 0], [2, 1], resamples=20_000)
    assert set(np.round(estimates, 9)) == {0.0, round(2 / 3, 9), 1.0}
    assert percentile_interval(np.arange(1001)) == pytest.approx((25.0, 975.0))


def test_accuracy_interval_treats_repeats_of_a_sample_as_one_cluster():
    rng = np.random.default_rng(1)
    once = {f"s{i}": [bool(rng.random() < 0.6)] for i in range(30)}
    thrice = {sid: outcome * 3 for sid, outcome in once.items()}  # repeats that always agree add nothing
    rows_as_samples = {f"{sid}/{k}": [v] for sid, outcome in thrice.items() for k, v in enumerate(outcome)}
    correct = sum(o[0] for o in once.values())
    assert accuracy_interval(once) == wilson_interval(correct, 30)  # one answer per sample: Wilson's
    low, high = accuracy_interval(thrice)
    naive = wilson_interval(3 * correct, 90)  # what counting the 90 answers as independent would claim
    assert high - low > 1.5 * (naive[1] - naive[0])
    assert low < correct / 30 < high
    assert accuracy_interval(rows_as_samples) == naive
    assert accuracy_interval({"a": [True, True], "b": [True, False]}) is not None
    assert accuracy_interval({}) is None


# ---------------------------------------------------------------- a run against a reference


def test_mcnemar_exact_matches_the_binomial_test_by_hand():
    # 1 vs 9 discordant pairs: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    # 3 vs 5: 2 * (1 + 8 + 28 + 56) / 256 = 186 / 256
    assert mcnemar_exact(3, 5) == pytest.approx(186 / 256)
    assert mcnemar_exact(4, 4) == 1.0  # the two-sided sum passes 1 at a tie
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 12) == pytest.approx(2 / 4096)
    assert 0 < mcnemar_exact(600, 500) < 1  # large tables stay exact


def test_paired_bootstrap_interval_contains_the_true_difference():
    rng = np.random.default_rng(7)
    n, p_x, p_y = 2000, 0.7, 0.5
    shared = rng.random(n)  # correlated outcomes, as for two methods on the same questions
    x, y = shared < p_x, shared < p_y
    flips = rng.random(n) < 0.1
    x = np.where(flips, ~x, x)
    true_difference = (p_x * 0.9 + (1 - p_x) * 0.1) - p_y
    low, high = paired_bootstrap_interval(x, y)
    assert low < true_difference < high
    assert high - low < 0.06
    assert low < x.mean() - y.mean() < high
    assert paired_bootstrap_interval([], []) is None
    assert paired_bootstrap_interval([1, 1], [1, 1]) == (0.0, 0.0)


def test_paired_figures_cover_the_shared_samples_only():
    ours = sample_table([record("a", True, question="q", output_tokens=2, wall=1.0),
                         record("b", False, question="q", output_tokens=2, wall=1.0),
                         record("c", True, question="q"), record("d", error="boom", question="q")])
    theirs = sample_table([record("a", False, question="q", output_tokens=8, wall=2.0),
                           record("b", False, question="q", output_tokens=8, wall=2.0),
                           record("d", True, question="q", output_tokens=8, wall=2.0)])
    figures = paired(ours, theirs, "flexible")
    assert figures["n_paired"] == 2  # c is theirs to miss, d failed in ours
    assert figures["accuracy_diff"] == 0.5 and figures["mcnemar_p"] == mcnemar_exact(1, 0)
    assert figures["output_token_reduction"] == pytest.approx(0.75) and figures["speedup"] == pytest.approx(2.0)
    assert paired(ours, sample_table([record("z")]), "flexible") == {"n_paired": 0}


# ---------------------------------------------------------------- many runs at once (compare)


def _many_runs_table(seed: int = 4):
    """Three runs' sample tables as one, with repeats, a failed sample, a missing time and uneven batches."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    tables = []
    for run in range(3):
        records = [record(f"q{k}", repeat=r, batch=(2 * k + r) // 3, correct=bool(rng.random() < 0.6),
                          error="boom" if (run, k, r) == (1, 2, 0) else None,
                          wall=float(rng.uniform(0.05, 4.0)))
                   for k in range(7 + run) for r in range(2)]
        table = sample_table(records)
        table.loc[3, "time_s"] = float("nan") if run == 2 else table.loc[3, "time_s"]
        table.insert(0, "run", run)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def test_runs_split_from_one_table_get_exactly_the_figures_they_get_alone():
    from mascompare.stats import split_by_run, summarize

    samples = _many_runs_table()
    alone = {run: rows for run, rows in samples.groupby("run")}
    split = split_by_run(samples)
    for run in alone:
        assert summarize(split[run]).to_json() == summarize(alone[run]).to_json()
    for metric in ("strict", "flexible"):
        assert paired(split[1], split[0], metric, {}) == paired(alone[1], alone[0], metric)
        assert paired(split[2], split[0], metric, {}) == paired(alone[2], alone[0], metric)


def test_a_bootstrap_drawn_once_for_many_runs_equals_a_fresh_draw():
    from mascompare.stats import BOOTSTRAP_CHUNK, BOOTSTRAP_RESAMPLES, _cached_counts

    _cached_counts.cache_clear()
    rng = np.random.default_rng(7)
    for totals in (rng.random(12), rng.random(12) * 100, rng.random(5)):
        draw = np.random.default_rng(3)  # the draw cluster_bootstrap makes, a chunk at a time
        expected = np.concatenate([(counts @ totals) / counts.sum(axis=1) for counts in
                                   (draw.multinomial(len(totals), np.full(len(totals), 1 / len(totals)),
                                                     size=BOOTSTRAP_CHUNK)
                                    for _ in range(BOOTSTRAP_RESAMPLES // BOOTSTRAP_CHUNK))])
        assert np.array_equal(cluster_bootstrap(totals, np.ones(len(totals)), seed=3), expected)
    assert _cached_counts.cache_info().hits == 1  # the second run of 12 clusters reused the first one's draw


def test_percentile_interval_gives_np_quantiles_figures_to_the_bit():
    rng = np.random.default_rng(11)
    samples = [rng.normal(size=n) * scale for n, scale in
               ((1, 1), (2, 1), (3, 1e-3), (41, 1e6), (162, 1), (10_000, 1), (10_000, 1e-9), (997, 7))]
    samples += [np.round(rng.normal(size=500), 1),  # ties
                np.array([1.0, np.inf, 2.0]), np.array([-np.inf, 1.0, 2.0, 3.0]), np.array([np.nan, 1.0, 2.0]),
                np.full(7, 0.1)]
    for level in (0.95, 0.9, 0.5):
        tail = (1 - level) / 2
        for values in samples:
            with np.errstate(invalid="ignore"):  # inf - inf: both warn alike
                expected = tuple(float(q) for q in np.quantile(values, [tail, 1 - tail]))
                got = percentile_interval(values.copy(), level)
            assert np.array_equal(got, expected, equal_nan=True), (len(values), level, got, expected)
    values = rng.random(100)
    kept = values.copy()
    percentile_interval(values)
    assert np.array_equal(values, kept)  # the caller's estimates are left as they were


def test_paired_bootstrap_interval_equals_the_cluster_bootstrap_of_single_samples():
    rng = np.random.default_rng(5)
    for n in (3, 20, 300):
        x, y = rng.random(n) < 0.6, (rng.random(n) < 0.4) * rng.random(n)
        d = x.astype(float) - y
        assert paired_bootstrap_interval(x, y, seed=4) == percentile_interval(cluster_bootstrap(d, np.ones(n), seed=4))
