"""Fault class 7, first feedback and noise: the bar advances per sample (and per agent call within a batch) with an
estimate of the time left; a long run on a CPU says so at the start with the knob that shortens it; no loading bar
with run.progress=false, no "HTTP Request" line per request, no Hydra "Error executing job" line; counts in words
agree in number."""

from __future__ import annotations

from faults import cli, error_line, run_dir_of, scripted_args, scripted_run, says

from mascompare import runner
from mascompare.display import Progress
from mascompare.store import plural


def test_the_bar_advances_per_sample_as_each_is_written_and_counts_calls(tmp_path, monkeypatch):
    root = tmp_path / "results"
    seen = []
    advance = Progress.advance

    def watched(self, record, metric):
        advance(self, record, metric)
        written = (run_dir_of(root) / "samples.jsonl").read_text().count("\n")
        seen.append((self._bar.tasks[0].completed, written, self.calls))

    monkeypatch.setattr(Progress, "advance", watched)
    script = {"default": {"text": "The answer is 0.", "delay_s": 0.05}}
    assert scripted_run(root, "backend.max_concurrency=1", "run.progress=true", script=script, limit=4).exit_code == 0
    assert [completed for completed, _, _ in seen] == [1, 2, 3, 4]  # one step per sample, not per batch
    assert all(written == completed for completed, written, _ in seen)  # each step once its sample is on disk
    assert [calls for _, _, calls in seen] == [1, 2, 3, 4]  # baseline: one agent call per sample


def test_the_bar_shows_the_time_left_and_calls_within_a_batch():
    progress = Progress(total=10, done=2, enabled=False)
    columns = [type(column).__name__ for column in progress._bar.columns]
    assert "TimeRemainingColumn" in columns and "MofNCompleteColumn" in columns
    progress.call()
    progress.call()
    assert progress._bar.tasks[0].completed == 2 and "2 calls" in progress._bar.tasks[0].fields["stats"]


def test_a_long_cpu_run_says_so_at_the_start_and_loads_without_a_bar(tiny_model_dir, tmp_path):
    root = tmp_path / "results"
    status, output = cli("run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
                         "generation.max_new_tokens=1", "run.progress=false", f"run.output_root={root}",
                         f"task.limit={runner.CPU_MANY_SAMPLES + 1}", "run.batch_size=64")
    assert status == 0, output
    assert says(output, f"{runner.CPU_MANY_SAMPLES + 1} samples to run on a CPU, which answers a few questions a "
                "minute with a small model and far fewer with a large one: this may take hours; task.limit=N runs "
                "only the first N (the same command later resumes and extends the run)")
    assert "Loading weights" not in output and "it/s]" not in output and "%|" not in output


def test_an_api_run_logs_no_line_per_request(tmp_path):
    root = tmp_path / "results"
    status, output = cli(*scripted_args(root, limit=3))
    assert status == 0, output
    assert "HTTP Request" not in output
    assert "HTTP Request" not in (run_dir_of(root) / "run.log").read_text()


def test_a_refusal_inside_the_run_has_no_hydra_banner(tmp_path):
    status, output = cli("run", "task=arith", "task.limit=1", "model.path=/nonexistent/model", "model.name=x",
                         "run.progress=false", f"run.output_root={tmp_path / 'results'}")
    assert status == 2
    assert error_line(output) == "model.path /nonexistent/model does not exist; point it at a local model directory or a hub id."
    assert "HYDRA_FULL_ERROR" not in output and "Error executing job" not in output


def test_counts_agree_in_number(tmp_path):
    assert (plural(1, "sample"), plural(2, "sample"), plural(0, "failed job")) == ("1 sample", "2 samples", "0 failed jobs")
    result = scripted_run(tmp_path / "results", limit=1)
    assert result.exit_code == 0 and says(result.output, "arith: 1 sample x 1 repeat, 0 already done, 1 to run")
