"""The viewer's HTML file: one page, its script, style and data inline, that opens from a file.

The data is JSON in `<script type="application/json">` elements, which the browser never runs.
Every `<`, `>`, `&`, U+2028 and U+2029 in it is written as a \\u escape, so no text from a
record can end its element, open a comment or start markup; the script builds the page from
text nodes only, and a Content-Security-Policy lets the page run its own script and nothing else.

What the overview and the question list need (one entry per sample) is read when the page opens.
The transcripts go in chunks of about CHUNK_BYTES, each parsed the first time one of its samples is
shown, so that a folder of 10,000 samples opens as fast as a small one. A paragraph that several
samples share (role instructions, the question) is stored once for the page; one that repeats within
a sample (a reply handed to the next agent) once for that sample.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from mascompare import report
from mascompare.records import Summary
from mascompare.stats import capped_share_warning
from mascompare.view.records import RunRecords, Sample, SharedText, read_run

VIEW_FILE = "view.html"
CHUNK_BYTES = 1 << 20
LOCAL_TEXT_MIN_CHARS = 40  # shorter texts cost less inline than as a reference
PLACEHOLDER = re.compile(r"\{(csp|title|style|index|script|details)\}")
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
SAMPLE_COLUMNS = ("run", "q", "rep", "ok_s", "ok_f", "ans_s", "ans_f", "out", "inp", "lat", "calls", "t", "cut", "err")


def write(comparison: report.Comparison, out_dir: str | Path, pareto_png: bytes | None = None) -> Path:
    """view.html in out_dir (replaced whole); pareto_png: the plot already drawn, else it is drawn here.
    The transcripts are written out as they are encoded, into a scratch file that follows the page's head, so
    that the page is never held whole in memory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if pareto_png is None:
        pareto_png = _draw_pareto(comparison)
    path = out / VIEW_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tempfile.TemporaryFile("w+", encoding="utf-8", dir=out) as details:
            index = _page_data(comparison, out, pareto_png, _details_writer(details.write))
            details.seek(0)
            head, tail = _page_parts(comparison, out, index, DETAILS_MARK)
            with open(tmp, "w", encoding="utf-8") as page:
                page.write(head)
                shutil.copyfileobj(details, page)
                page.write(tail)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _draw_pareto(comparison: report.Comparison) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        report.plot_pareto(comparison, Path(tmp) / "pareto.png")
        return (Path(tmp) / "pareto.png").read_bytes()


DETAILS_MARK = "\0details\0"  # where the transcripts go in the page; no JSON or asset text holds a NUL


def render(comparison: report.Comparison, out_dir: Path, pareto_png: bytes | None) -> str:
    """The page's HTML (as `write` writes it)."""
    details: list[str] = []
    index = _page_data(comparison, out_dir, pareto_png, _details_writer(details.append))
    head, tail = _page_parts(comparison, out_dir, index, DETAILS_MARK)
    return head + "".join(details) + tail


def _page_parts(comparison: report.Comparison, out_dir: Path, index: dict, mark: str) -> tuple[str, str]:
    """The page before its transcripts and after them."""
    title = f"mascompare · {out_dir.resolve().name or out_dir.resolve()}"
    script = _asset("view.js")
    style = _asset("view.css")
    csp = (f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    values = {"csp": csp, "title": html.escape(title), "style": style, "index": script_json(index),
              "script": script, "details": mark}
    head, tail = PLACEHOLDER.sub(lambda match: values[match.group(1)], _asset("template.html")).split(mark)
    return head, tail


def _details_writer(write: Callable[[str], object]) -> Callable[[list[str]], None]:
    """Writes each chunk of transcripts as one of the page's script elements, a line apart."""
    count = 0

    def emit(chunk: list[str]) -> None:
        nonlocal count
        element = f'<script type="application/json" id="mascompare-details-{count}">{_chunk_json(chunk)}</script>'
        write(f"\n{element}" if count else element)
        count += 1

    return emit


def _chunk_json(chunk: list[str]) -> str:
    return script_safe("[" + ",".join(chunk) + "]")


def _asset(name: str) -> str:
    return resources.files("mascompare.view").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def script_json(value) -> str:
    """JSON that can sit inside a <script> element whatever its strings hold."""
    return script_safe(_dumps(value))


def script_safe(json_text: str) -> str:
    """JSON text with <, >, &, U+2028 and U+2029 (found only inside its strings) written as \\u escapes."""
    try:
        json_text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a "\\ud800" escape in a record) has no UTF-8 form
        json_text = json_text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return re.sub("[<>&\u2028\u2029]", lambda m: SCRIPT_ESCAPES[m.group(0)], json_text)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)  # one for every sample


def _dumps(value) -> str:
    return _ENCODER.encode(value)


# ---------------------------------------------------------------- the data


def page_data(comparison: report.Comparison, out_dir: Path, pareto_png: bytes | None) -> tuple[dict, list[str]]:
    """The data the page opens with, and its transcripts as JSON chunks."""
    chunks: list[str] = []
    index = _page_data(comparison, out_dir, pareto_png, lambda chunk: chunks.append(_chunk_json(chunk)))
    return index, chunks


def _page_data(comparison: report.Comparison, out_dir: Path, pareto_png: bytes | None,
               emit: Callable[[list[str]], object]) -> dict:
    """The data the page opens with; its transcripts go to `emit` a chunk (a list of JSON texts) at a time.
    Each run's samples are let go once encoded (the runs keep what collect read for the page only until here)."""
    table, runs = comparison.table, comparison.collection.runs
    records = {int(key): _records_of(runs[int(key)]) for key in table.run}
    graphs = {key: run_records.graph for key, run_records in records.items()}
    order = {int(key): position for position, key in enumerate(table.run)}  # the page's run numbers
    shared = _shared_texts(records.values())
    texts = TextTable(shared)
    questions: list[dict] = []
    columns: dict[str, list] = {name: [] for name in SAMPLE_COLUMNS}
    current, current_bytes, starts = [], 0, []
    groups = []
    for task, model, rows in comparison.groups():
        group = len(groups)
        question_of: dict[str, int] = {}
        for key in rows.run:
            for sample in records.pop(int(key)).samples:
                q = question_of.get(sample.pair)
                if q is None:
                    q = question_of[sample.pair] = len(questions)
                    questions.append({"id": sample.id, "text": None, "target": sample.target, "group": group})
                if questions[q]["text"] is None and sample.question is not None:
                    questions[q]["text"] = texts.ref(sample.question)
                _add_sample(columns, order[int(key)], q, sample)
                encoded = _dumps(_detail(sample, texts))
                if not current:
                    starts.append(len(columns["run"]) - 1)
                current.append(encoded)
                current_bytes += len(encoded)
                if current_bytes >= CHUNK_BYTES:
                    emit(current)
                    current, current_bytes = [], 0
        groups.append(_group(comparison, task, model, rows, order, list(question_of.values())))
    if current:
        emit(current)
    return {
        "description": _description(comparison),
        "metric": comparison.metric,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "groups": groups,
        "runs": [_run(runs[int(key)], row, graphs[int(key)], out_dir) for key, row in
                 zip(table.run, table.to_dict("records"))],
        "questions": questions,
        "samples": columns,
        "texts": texts.texts,
        "chunks": starts,
        "failures": [report._failure_line(f) for f in comparison.collection.failures],
        "pareto": "data:image/png;base64," + base64.b64encode(pareto_png).decode("ascii") if pareto_png else None,
    }


def _records_of(run: report.Run) -> RunRecords:
    """What collect kept of the run for the page (handed over once), else its folder read now."""
    records, run.view_records = run.view_records, None
    return records if records is not None else read_run(run.dir, run.info)


class TextTable:
    """The page's shared texts: each stored once, referred to by its position."""

    def __init__(self, shared: set[str]):
        self.shared = shared
        self.texts: list[str] = []
        self.position: dict[str, int] = {}

    def ref(self, text: str):
        """The text's position if several samples use it, else the text itself."""
        if text not in self.shared:
            return text
        if text not in self.position:
            self.position[text] = len(self.texts)
            self.texts.append(text)
        return self.position[text]


def _shared_texts(all_records) -> set[str]:
    """The paragraphs that more than one sample sends, and every question's text."""
    used = Counter()
    questions = set()
    for records in all_records:
        for sample in records.samples:
            used.update({part for call in sample.agent_calls for message in call["messages"]
                         for part in message["content"] if isinstance(part, SharedText)})
            if sample.question is not None:
                questions.add(sample.question)
    return {text for text, count in used.items() if count > 1} | questions


def _add_sample(columns: dict[str, list], run: int, q: int, sample: Sample) -> None:
    values = (run, q, sample.repeat, int(sample.correct_strict), int(sample.correct_flexible), sample.answer_strict,
              sample.answer_flexible, sample.output_tokens, sample.input_tokens, sample.latent_steps, sample.calls,
              _number(sample.time_s), sample.calls_cut_off, sample.error)
    for name, value in zip(SAMPLE_COLUMNS, values):
        columns[name].append(value)


def _number(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


CALL_TEXTS_AND_FIGURES = frozenset(("messages", "reply", "time_s", "cost_usd"))  # what _detail writes its own way


def _detail(sample: Sample, texts: TextTable) -> dict:
    """A sample's transcript: each text inline, or a position in the page's table (>= 0) or the sample's own (< 0)."""
    shared = texts.shared
    repeated: dict[str, int] = {}
    for call in sample.agent_calls:
        for message in call["messages"]:
            for part in message["content"]:
                if len(part) >= LOCAL_TEXT_MIN_CHARS and part not in shared:
                    repeated[part] = repeated.get(part, 0) + 1
        reply = call["reply"]
        if reply and len(reply) >= LOCAL_TEXT_MIN_CHARS:
            repeated[reply] = repeated.get(reply, 0) + 1
    if sample.final_text and len(sample.final_text) >= LOCAL_TEXT_MIN_CHARS:
        repeated[sample.final_text] = repeated.get(sample.final_text, 0) + 1
    own = [text for text, count in repeated.items() if count > 1]
    own_position = {text: -1 - k for k, text in enumerate(own)}

    def ref(text):
        if text is None:
            return None
        if text in own_position:
            return own_position[text]
        return texts.ref(text)

    calls = []
    for call in sample.agent_calls:
        written = {k: v for k, v in call.items() if k not in CALL_TEXTS_AND_FIGURES}
        written["time_s"], written["cost_usd"] = _number(call["time_s"]), _number(call["cost_usd"])
        written["messages"] = [[m["role"], [ref(p) for p in m["content"]]] for m in call["messages"]]
        written["reply"] = ref(call["reply"])
        calls.append(written)
    detail = {"calls": calls, "final": ref(sample.final_text), "texts": own}
    if sample.sandbox:
        detail["sandbox"] = sample.sandbox
    if sample.metadata:
        detail["metadata"] = sample.metadata
    return detail


def _run(run: report.Run, row: dict, graph: dict | None, out_dir: Path) -> dict:
    environment = report.flatten(run.info.environment or {})
    return {
        "label": row["label"], "method": row["method"], "status": row.get("status"),
        "dir": _relative(run.dir, out_dir),
        "environment": {key: _plain(value) for key, value in environment.items()},
        "graph": graph,
    }


def _plain(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base.resolve())
    except ValueError:  # another drive
        return str(path)


def _group(comparison: report.Comparison, task: str, model: str, rows, order: dict[int, int],
           questions: list[int]) -> dict:
    """A task and model's tables as comparison.md has them, its warnings and notes, its runs and questions."""
    by, metric = comparison.by, comparison.metric
    runs_spec = report.columns(rows, by, metric, "runs")
    labels = sum(1 for header, _ in runs_spec if header in report.TEXT_COLUMNS or header in by)
    records = rows.to_dict("records")
    runs = [order[int(key)] for key in rows.run]

    def part(spec):
        return {"header": [header for header, _ in spec], "rows": [[cell(r) for _, cell in spec] for r in records],
                "runs": runs}

    paired = report.columns(rows, by, metric, "paired") if report.has_reference(rows) else None
    warnings = list(comparison.warnings.get((task, model), []))
    warnings += [f"{row['label']}: {line}" for row in records if (line := _capped_warning(row))]
    return {
        "task": str(task), "model": str(model), "runs": runs, "questions": questions,
        "runs_table": part(runs_spec), "label_columns": labels,
        "paired_table": part(paired) if paired else None,
        "caption": report._caption(comparison, rows) if paired else None,
        "warnings": warnings, "notes": list(comparison.notes.get((task, model), [])),
    }


def _capped_warning(row: dict) -> str | None:
    return capped_share_warning(Summary(decoding_calls=int(row["decoding_calls"]),
                                        calls_at_max_new_tokens=int(row["calls_at_max_new_tokens"])))


def _description(comparison: report.Comparison) -> str:
    runs, samples = len(comparison.table), len(comparison.collection.samples)
    reference = comparison.reference or "none"
    return (f"{runs} run{'s' if runs != 1 else ''}, {samples:,} answers · reference: {reference} · paired statistics "
            f"on the {comparison.metric} accuracy · 95% intervals as in comparison.md")
