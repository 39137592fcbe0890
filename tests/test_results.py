"""Run directories: append, resume, partial lines, summaries."""

import json

import numpy as np
import pytest

from mascompare.results import (
    RunStore,
    accuracy_interval,
    capped_share_warning,
    cluster_bootstrap,
    expand_messages,
    latest_rows,
    read_texts,
    summarize,
    time_per_sample,
    wilson_interval,
)


def row(sid, correct=True, error=None, repeat=0, batch=None, wall=0.5, capped=0):
    usage = {"input_tokens": 10, "output_tokens": 5, "latent_steps": 0, "calls": 1, "forward_passes": 5,
             "wall_time_s": wall, "cost_usd": None, "kv_positions_received": 0, "calls_at_max_new_tokens": capped}
    line = {"id": sid, "repeat": repeat, "correct_strict": correct, "correct_flexible": correct, "error": error,
            "usage": usage}
    return line if batch is None else {**line, "batch": batch}


def test_partial_last_line_is_dropped_on_reopen(tmp_path):
    store = RunStore(tmp_path)
    store.append(row("a"))
    with open(store.samples_path, "a") as f:
        f.write('{"id": "b", "corr')  # a kill in the middle of a write
    reopened = RunStore(tmp_path)
    assert set(reopened.records()) == {("a", 0)}
    reopened.append(row("b"))
    assert [json.loads(x)["id"] for x in reopened.samples_path.read_text().splitlines()] == ["a", "b"]


def test_failed_samples_are_not_completed_and_last_line_wins(tmp_path):
    store = RunStore(tmp_path)
    store.append(row("a", error="timeout"))
    assert store.completed_keys() == set()
    store.append(row("a"))
    assert store.completed_keys() == {("a", 0)} and store.records()[("a", 0)]["error"] is None


def test_reset_keeps_old_samples_aside(tmp_path):
    store = RunStore(tmp_path)
    store.append(row("a"))
    store.reset()
    assert store.completed_keys() == set()
    assert len(list(tmp_path.glob("samples.*.jsonl.bak"))) == 1


def test_summary_counts_errors_apart_and_means_per_sample():
    s = summarize([row("a"), row("b", correct=False), row("c", error="boom")])
    assert s["n"] == 2 and s["errors"] == 1
    assert s["accuracy_flexible"] == 0.5
    assert s["mean_input_tokens"] == 10 and s["mean_time_per_sample_s"] == 0.5
    assert s["cost_usd"] is None


def test_wilson_interval_matches_hand_computation():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_read_only_reading_skips_a_cut_last_line_and_the_latest_line_per_id_wins(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a", "error": "x"}\n{"id": "a", "error": null}\n{"id": "b", "err')
    assert latest_rows(path) == {("a", 0): {"id": "a", "error": None}}
    assert RunStore.completed_keys_in(tmp_path) == {("a", 0)}
    assert path.read_text().endswith('"err')  # nothing repaired


def test_messages_are_stored_with_shared_paragraphs_once_and_expand_exactly(tmp_path):
    system = "You are one member of a careful team of problem solvers."
    question = "Problem:\nTom has 3 apples and buys 4 more. How many apples does he have now?"
    calls = [{"agent": agent, "messages": [{"role": "system", "content": system},
                                           {"role": "user", "content": f"Plan.\n\n{question}\n\n\nAnswer it."}]}
             for agent in ("planner", "judger")]
    store = RunStore(tmp_path)
    store.append({"id": "a", "agents": calls})
    store.append({"id": "b", "agents": calls})
    texts = read_texts(tmp_path)
    assert sorted(texts.values()) == sorted([system, question])  # each long paragraph once, for both lines
    for line in store.all_rows():
        for call, original in zip(line["agents"], calls):
            assert {"ref": next(h for h, t in texts.items() if t == question)} in call["messages"][1]["content"]
            assert expand_messages(call["messages"], texts) == original["messages"]
    assert calls[0]["messages"][0]["content"] == system  # the caller's row is left as it was


def test_repeats_are_keyed_apart_and_summarised_per_repeat():
    rows = [row("a", True, repeat=0), row("a", False, repeat=1), row("b", True, repeat=0), row("b", True, repeat=1)]
    s = summarize(rows)
    assert s["n"] == 4 and s["samples"] == 2 and s["repeats"] == 2
    assert s["accuracy_flexible"] == 0.75 and s["accuracy_flexible_per_repeat"] == [1.0, 0.5]


def test_cluster_bootstrap_matches_hand_computed_distributions():
    # two equal clusters worth 0 and 1: a resample is {0,0}, {0,1} or {1,1} with probability 1/4, 1/2, 1/4
    estimates = cluster_bootstrap([0, 3], [3, 3], resamples=20_000)
    assert set(np.round(estimates, 9)) == {0.0, 0.5, 1.0}
    assert np.mean(estimates == 0.5) == pytest.approx(0.5, abs=0.02)
    assert np.mean(estimates == 0.0) == pytest.approx(0.25, abs=0.02)
    # unequal sizes: the estimate is a ratio of sums, (2+2)/(2+2)=1, (2+0)/(2+1)=2/3, 0/2=0
    estimates = cluster_bootstrap([2, 0], [2, 1], resamples=20_000)
    assert set(np.round(estimates, 9)) == {0.0, round(2 / 3, 9), 1.0}


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


def test_time_per_sample_interval_comes_from_the_spread_between_batches():
    same = [row(f"s{i}", batch=i // 2, wall=0.25) for i in range(6)]
    assert time_per_sample(same) == (0.25, (0.25, 0.25))  # batches alike: no spread
    one_batch = [row(f"s{i}", batch=0, wall=0.1 * i) for i in range(4)]
    assert time_per_sample(one_batch)[1] is None  # one batch says nothing about the spread
    mixed = [row("a", batch=0, wall=1.0), row("b", batch=0, wall=1.0), row("c", batch=1, wall=3.0)]
    mean, (low, high) = time_per_sample(mixed)
    # batches: (2 s, 2 samples) and (3 s, 1 sample); resamples give 4/4, 5/3 or 6/2 s per sample
    assert mean == pytest.approx(5 / 3) and (low, high) == pytest.approx((1.0, 3.0))


def test_a_run_warns_once_when_more_than_a_tenth_of_its_calls_hit_max_new_tokens():
    rows = [row(f"s{i}", capped=int(i < 2)) for i in range(10)]
    s = summarize(rows)
    assert s["decoding_calls"] == 10 and s["calls_at_max_new_tokens"] == 2
    assert capped_share_warning(s) == ("2 of 10 decoding calls (20%) stopped at generation.max_new_tokens: their "
                                       "answers may be cut off; raise generation.max_new_tokens")
    latent = [{**r, "usage": {**r["usage"], "calls": 4, "decoding_calls": 1}} for r in rows[:4]]
    assert capped_share_warning(summarize(latent)).startswith("2 of 4 decoding calls (50%)")  # thoughts don't count
    assert capped_share_warning(summarize([row(f"s{i}", capped=int(i < 1)) for i in range(10)])) is None  # 10%
