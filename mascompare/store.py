"""A run directory: `samples.jsonl` (one flushed line per finished sample and repeat), `prompts.jsonl`
(the texts those lines' messages refer to, each once) and `run.json` (config, environment, summary).

A line is keyed by its sample id and repeat (`run.repeats`; 0 when there is one). Resume skips
keys already written without error. A line cut short by a kill is dropped when the file is
reopened, and a key written twice (an error, then a success on resume) counts once: the last
line wins.

Each agent call in a line keeps the messages it was sent. Their paragraphs (text between blank
lines) of SHARED_TEXT_MIN_CHARS or more (role instructions, the question, earlier agents' text)
are stored once per run in prompts.jsonl as {"hash", "text"} and referenced as {"ref": hash};
shorter ones stay inline. `expand_messages` restores the exact messages.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from mascompare.errors import UserError
from mascompare.identity import short_hash
from mascompare.records import RunRecord, SampleRecord

SAMPLES_FILE = "samples.jsonl"
PROMPTS_FILE = "prompts.jsonl"
RUN_FILE = "run.json"
FAILURE_FILE = "failed.json"  # a failed sweep job's error and overrides, in its directory (sweep.py, report.py)
MIN_FREE_BYTES = 1 << 20  # less than this on the results disk and the first samples could not be written
PARAGRAPH = "\n\n"
SHARED_TEXT_MIN_CHARS = 40  # shorter paragraphs cost less inline than as a reference


def compact_messages(messages: list[dict], texts: dict[str, str]) -> list[dict]:
    """Messages with long paragraphs replaced by references; the referenced texts are added to `texts`."""
    compact = []
    for message in messages:
        parts = []
        for paragraph in message["content"].split(PARAGRAPH):
            if len(paragraph) < SHARED_TEXT_MIN_CHARS:
                parts.append(paragraph)
                continue
            ref = short_hash(paragraph, 16)
            texts[ref] = paragraph
            parts.append({"ref": ref})
        compact.append({**message, "content": parts})
    return compact


def expand_messages(compact: list[dict], texts: dict[str, str]) -> list[dict]:
    """The exact messages a call was sent, from their compact form and the run's prompts.jsonl texts."""
    return [{**message, "content": PARAGRAPH.join(texts[p["ref"]] if isinstance(p, dict) else p
                                                  for p in message["content"])} for message in compact]


def read_texts(directory: str | Path) -> dict[str, str]:
    """prompts.jsonl of a run directory as {hash: text}."""
    return {row["hash"]: row["text"] for row in _read_lines(Path(directory) / PROMPTS_FILE, skip_cut=True)}


def latest_records(directory: str | Path) -> dict[tuple[str, int], SampleRecord]:
    """The latest line per (sample id, repeat) of a run directory, read without touching its files (dry runs,
    reports): a line cut short by a kill, or still being written by a running job, is skipped."""
    path = Path(directory) / SAMPLES_FILE
    return {r.key: r for r in (SampleRecord.from_json(raw, f"{path}") for raw in _read_lines(path, skip_cut=True))}


def read_run(directory: str | Path) -> RunRecord | None:
    """run.json of a run directory, or None where there is none."""
    path = Path(directory) / RUN_FILE
    if not path.exists():
        return None
    return RunRecord.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))


class RunStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / SAMPLES_FILE
        self.prompts_path = self.dir / PROMPTS_FILE
        self.run_path = self.dir / RUN_FILE
        for path in (self.samples_path, self.prompts_path):
            _drop_partial_last_line(path)
        self.stored_texts = set(read_texts(self.dir))

    def all_records(self) -> list[SampleRecord]:
        """Every line, in order: a sample retried after an error has a line per attempt."""
        return [SampleRecord.from_json(raw, str(self.samples_path)) for raw in _read_lines(self.samples_path)]

    def latest(self) -> dict[tuple[str, int], SampleRecord]:
        """The latest line for each (sample id, repeat)."""
        return {record.key: record for record in self.all_records()}

    def completed_keys(self) -> set[tuple[str, int]]:
        return {key for key, record in self.latest().items() if not record.failed}

    @staticmethod
    def completed_keys_in(directory: Path) -> set[tuple[str, int]]:
        """completed_keys() of a run directory, read without creating or repairing anything (dry runs)."""
        return {key for key, record in latest_records(directory).items() if not record.failed}

    def append(self, record: SampleRecord) -> None:
        """Write one line; the texts its messages refer to are on disk before it."""
        texts: dict[str, str] = {}
        line = record.to_json()
        line["agents"] = [{**call, "messages": compact_messages(call["messages"], texts)} if call.get("messages")
                          else call for call in line["agents"]]
        new = [{"hash": ref, "text": text} for ref, text in texts.items() if ref not in self.stored_texts]
        if new:
            _append_lines(self.prompts_path, new)
            self.stored_texts.update(t["hash"] for t in new)
        _append_lines(self.samples_path, [line])

    def reset(self) -> None:
        """Start afresh (run.resume=false): earlier samples are kept aside, not deleted."""
        if self.samples_path.exists():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.samples_path.rename(self.dir / f"samples.{stamp}.jsonl.bak")

    def read_run(self) -> RunRecord | None:
        return read_run(self.dir)

    def write_run(self, record: RunRecord) -> None:
        write_json(self.run_path, record.to_json())


def write_json(path: Path, data: dict) -> None:
    """Written aside and renamed: a reader never sees half a file, and a full disk leaves the old one whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _drop_partial_last_line(path: Path) -> None:
    """A kill can leave half a line at the end; cut the file back to its last complete line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _append_lines(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def _read_lines(path: Path, skip_cut: bool = False) -> list[dict]:
    """The file's JSON lines; with skip_cut, a line cut short (a kill, a job still writing) is skipped."""
    if not path.is_file():
        return []
    rows = []
    # "\n" only: str.splitlines would also split at U+2028 and the other separators JSON strings hold raw
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if not skip_cut:
                raise
    return rows


def check_output_root(root: str | Path) -> Path:
    """Refuse, before anything is written, an output root that is a file, cannot be written or sits on a full disk.

    Returns the closest folder of it that exists (the root itself, or a parent).
    """
    root = Path(root).expanduser()
    where = f"run.output_root={root}"
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == root else f"lies under {existing}, which is a file"
        raise UserError(f"{where} {what}; set run.output_root to a directory.")
    try:
        stats = os.statvfs(existing)
    except OSError as error:
        raise UserError(f"{where} cannot be used ({error.strerror}); set run.output_root to a writable directory.") \
            from None
    if stats.f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{where} is not writable ({existing} is read-only for this user); "
                        "set run.output_root to a writable directory.")
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise UserError(f"{where} is on a full disk (under 1 MB free at {existing}); free some space or set "
                        "run.output_root to another disk.")
    return existing
