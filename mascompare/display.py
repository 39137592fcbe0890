"""What a run shows on the terminal: a progress bar while it works and a summary table at the end."""

from __future__ import annotations

import logging
from collections import Counter

from rich import progress as rp
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from mascompare.records import RunRecord, SampleRecord, Summary
from mascompare.store import plural

console = Console(stderr=True)


def log_handler() -> logging.Handler:
    """Console log handler (named in conf/hydra/job_logging/rich.yaml)."""
    return RichHandler(console=console, show_path=False, show_time=False)


class Progress:
    """Samples done, running accuracy and tokens, and the time left at the pace so far; silent when disabled.

    A batch's samples finish together, so within a batch the bar counts the agent calls done instead: a long
    first batch shows that work goes on before its first sample is written.
    """

    def __init__(self, total: int, done: int, enabled: bool = True):
        self.enabled = enabled
        self.correct = self.scored = self.errors = self.tokens = self.calls = 0
        self._bar = rp.Progress(
            rp.SpinnerColumn(), rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[stats]}"), rp.TimeElapsedColumn(), rp.TextColumn("left"),
            rp.TimeRemainingColumn(), console=console, disable=not enabled,
        )
        self._task = self._bar.add_task("samples", total=total, completed=done, stats=self._stats())

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def call(self) -> None:
        """One agent call of one sample done (its sample is written when all of its batch's calls are)."""
        self.calls += 1
        self._bar.update(self._task, stats=self._stats())

    def advance(self, record: SampleRecord, metric: str) -> None:
        self.tokens += record.usage.input_tokens + record.usage.output_tokens
        if record.failed:
            self.errors += 1
        else:
            self.scored += 1
            self.correct += record.correct(metric)
        self._bar.update(self._task, advance=1, stats=self._stats())

    def _stats(self) -> str:
        accuracy = f"acc {self.correct}/{self.scored}" if self.scored else "acc -"
        errors = f" · errors {self.errors}" if self.errors else ""
        return f"{accuracy} · {self.calls:,} calls · {self.tokens:,} tok{errors}"  # column heads: no plural


def duration(seconds: float) -> str:
    """'2 h 25 min', '14 min', '40 s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _cost(value) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _num(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def summary_table(run: RunRecord, problems: list[tuple[str, str]] = ()) -> Table:
    """run.json's essentials; `problems` (problem_rows) say why samples failed and which lines were damaged."""
    s = (run.summary or Summary()).to_json()
    title = f"{run.method} · {run.task} · {run.model}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long values wrap at 80 columns instead of being cut
    table.add_row("status", str(run.status))
    if run.stop_reason:
        table.add_row("stopped early", f"[yellow]{escape(run.stop_reason)}[/]")
    repeats = s.get("repeats", 1)
    scored = f"{s.get('n', 0)} scored" + (f" ({plural(s.get('samples') or 0, 'sample')} x {repeats} repeats)"
                                          if repeats > 1 else "")
    table.add_row("samples", f"{scored}, {s.get('errors', 0)} failed")
    for label, value in problems:
        table.add_row(label, f"[yellow]{escape(value)}[/]")
    for kind in ("strict", "flexible"):
        per_repeat = s.get(f"accuracy_{kind}_per_repeat")
        table.add_row(f"accuracy ({kind})", _pct(s.get(f"accuracy_{kind}")) + _interval(s.get(f"accuracy_{kind}_ci95"))
                      + (f"; per repeat {', '.join(_pct(a) for a in per_repeat)}" if per_repeat else ""))
    table.add_row("input tokens processed / sample", _num(s.get("mean_input_tokens")))
    if s.get("mean_context_tokens") is not None and s.get("mean_context_tokens") != s.get("mean_input_tokens"):
        table.add_row("context tokens seen / sample",
                      _num(s.get("mean_context_tokens")) + " (input + KV positions received)")
    table.add_row("output tokens / sample", _num(s.get("mean_output_tokens")))
    if s.get("mean_latent_steps"):
        table.add_row("latent steps / sample", _num(s.get("mean_latent_steps")))
    table.add_row("calls / sample", _num(s.get("mean_calls")))
    if s.get("decoding_calls"):
        capped, calls = s.get("calls_at_max_new_tokens", 0), s["decoding_calls"]
        table.add_row("calls at max_new_tokens", f"{'[yellow]' if capped > 0.1 * calls else ''}{capped} of {calls} "
                                                 f"decoding calls ({100 * capped / calls:.0f}%)")
    time_ci = s.get("time_per_sample_s_ci95")
    table.add_row("time / sample", _num(s.get("mean_time_per_sample_s"), "{:.2f} s")
                  + (f" [{time_ci[0]:.2f}, {time_ci[1]:.2f}] across batches" if time_ci else "")
                  + " (model load excluded)")
    table.add_row("cost", _cost(s.get("cost_usd")))
    calibration = (run.method_info or {}).get("calibration") or {}
    if calibration.get("performed"):  # work done before evaluation, kept out of the per-sample figures
        usage = calibration["usage"]
        table.add_row("calibration (separate)",
                      f"{plural(calibration['questions'], 'question')}, {plural(usage['calls'], 'call')}, "
                      f"{usage['input_tokens']:,} input + "
                      f"{usage['output_tokens']:,} output tokens, {calibration['elapsed_s']:.1f} s, "
                      f"cost {_cost(usage['cost_usd'])}")
    sandbox = (run.task_info or {}).get("sandbox")
    if sandbox:  # how model-written code was isolated while it was scored
        table.add_row("code sandbox", f"{sandbox['isolation']}, {sandbox['workers']} workers")
    for label, value in environment_rows(run.environment):
        table.add_row(label, value)
    return table


def environment_rows(env: dict | None) -> list[tuple[str, str]]:
    """The essentials of run.json's environment block: where, with what software, on which weights and data."""
    if not env:
        return []
    gpu, torch = env.get("gpu") or {}, env.get("torch") or {}
    hardware = " · ".join(filter(None, [env.get("device"), env.get("dtype"),
                                        f"{gpu['count']} x {gpu['name']}" if gpu.get("count") else None]))
    packages = env.get("packages") or {}
    software = ", ".join(filter(None, [
        f"torch {torch['version']} (CUDA {torch.get('cuda') or 'none'}, {torch['threads']} threads)" if torch else None,
        f"transformers {packages['transformers']}" if packages.get("transformers") else None,
        f"Python {env.get('python')}"]))
    model, data, git = env.get("model") or {}, env.get("data") or {}, env.get("git") or {}
    weights = model.get("revision") or model.get("weights_index_sha256")
    rows = [("ran on", hardware), ("software", software)]
    if weights:
        rows.append(("model weights", f"{'revision' if model.get('revision') else 'index sha256'} {weights}"))
    if data:
        rows.append(("questions",
                     f"{data.get('questions')} ({data.get('source')}), sha256 {data.get('questions_sha256')}"))
    if git.get("sha"):
        dirty = " [yellow]with uncommitted changes[/]" if git.get("dirty") else ""
        rows.append(("code", f"git {git['sha'][:10]}{dirty}"))
    return rows


def problem_rows(records: list[SampleRecord], damaged: list = (), set_aside: int = 0) -> list[tuple[str, str]]:
    """Why a run's latest records failed (the commonest errors first), and its lines that are not records."""
    rows = []
    errors = Counter(" ".join(r.error.split()) for r in records if r.failed)
    if errors:
        shown = [f"{error if len(error) <= 160 else error[:159] + '…'} ({count})"
                 for error, count in errors.most_common(3)]
        more = f"; and {plural(len(errors) - 3, 'other error')}" if len(errors) > 3 else ""
        rows.append(("why they failed", "; ".join(shown) + more + " (the same command runs them again)"))
    if damaged:
        rows.append(("damaged lines", f"{plural(len(damaged), 'line')} of samples.jsonl left out: "
                     + "; ".join(map(str, damaged[:3])) + (f"; and {len(damaged) - 3} more" if len(damaged) > 3 else "")
                     + " (the same command sets them aside and runs their samples again)"))
    if set_aside:
        rows.append(("set aside", f"{plural(set_aside, 'damaged line')} in samples.damaged.jsonl (their samples ran "
                                  "again)"))
    return rows


def print_summary(run: RunRecord, problems: list[tuple[str, str]] = ()) -> None:
    """The table, then the run directory on a line of its own, whole, so that it can be copied at any width."""
    out = Console()
    out.print(summary_table(run, problems))
    out.print(f"run dir: {run.run_dir}", soft_wrap=True, highlight=False, markup=False)
