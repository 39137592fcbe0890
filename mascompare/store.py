"""A run directory: `samples.jsonl` (one flushed line per finished sample and repeat), `prompts.jsonl`
(the texts those lines' messages refer to, each once) and `run.json` (config, environment, summary).

A line is keyed by its sample id and repeat (`run.repeats`; 0 when there is one). Resume skips
keys already written without error, and a key written twice (an error, then a success on resume)
counts once: the last line wins.

A line that is not a record (cut short by a kill, not UTF-8, not JSON, a field of the wrong type:
records.py judges) is never fatal. A run that opens its directory sets such lines aside, whole and
as they were, in samples.damaged.jsonl (prompts.damaged.jsonl), says which and why, and runs their
samples again; readers that must not change a run (compare, dry runs) leave them out and count them.
A run.json that is not a record is set aside as run.json.damaged when its run starts again.

Each agent call in a line keeps the messages it was sent. Their paragraphs (text between blank
lines) of SHARED_TEXT_MIN_CHARS or more (role instructions, the question, earlier agents' text)
are stored once per run in prompts.jsonl as {"hash", "text"} and referenced as {"ref": hash};
shorter ones stay inline. `expand_messages` restores the exact messages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mascompare.errors import EnvironmentFault, UserError
from mascompare.identity import short_hash
from mascompare.records import DamagedRecord, RunRecord, SampleRecord

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
PROMPTS_FILE = "prompts.jsonl"
RUN_FILE = "run.json"
FAILURE_FILE = "failed.json"  # a failed sweep job's error and overrides, in its directory (sweep.py, report.py)
MIN_FREE_BYTES = 1 << 20  # less than this on the results disk and the first samples could not be written
PARAGRAPH = "\n\n"
SHARED_TEXT_MIN_CHARS = 40  # shorter paragraphs cost less inline than as a reference
BOM = b"\xef\xbb\xbf"  # an editor's UTF-8 byte order mark at the start of a file: read as nothing
CUT_SHORT = "cut short (its run was stopped while writing it)"


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
    """prompts.jsonl of a run directory as {hash: text} (damaged lines left out)."""
    rows, _ = _scan(Path(directory) / PROMPTS_FILE, _text_row)
    return dict(rows)


@dataclass
class DamagedLine:
    number: int  # 1-based, as an editor counts
    reason: str  # what is wrong with it, e.g. "not valid JSON (Unterminated string at column 51)"
    data: bytes  # the line as it was

    def __str__(self) -> str:
        return f"line {self.number}: {self.reason}"


@dataclass
class SamplesFile:
    """samples.jsonl as read: every record in order (a retried sample has a line per attempt), and the lines
    that are not records."""

    records: list[SampleRecord]
    damaged: list[DamagedLine]

    @property
    def latest(self) -> dict[tuple[str, int], SampleRecord]:
        """The latest line for each (sample id, repeat)."""
        return {record.key: record for record in self.records}


def read_samples(directory: str | Path, running: bool = False) -> SamplesFile:
    """samples.jsonl of a run directory, read without touching its files (compare, dry runs, the viewer). Of a run
    still `running`, a last line cut short is the one being written, not damage."""
    path = Path(directory) / SAMPLES_FILE
    samples = SamplesFile(*_scan(path, lambda raw: SampleRecord.from_json(raw, str(path))))
    if running and samples.damaged and samples.damaged[-1].reason == CUT_SHORT:
        samples.damaged.pop()
    return samples


def latest_records(directory: str | Path) -> dict[tuple[str, int], SampleRecord]:
    """The latest line per (sample id, repeat) of a run directory, read without touching its files; damaged lines
    (e.g. one still being written by a running job) are left out."""
    return read_samples(directory).latest


def read_run(directory: str | Path) -> RunRecord | None:
    """run.json of a run directory, or None where there is none; raises DamagedRecord when it is not a record."""
    path = Path(directory) / RUN_FILE
    if not path.exists():
        return None
    return RunRecord.from_json(_json_document(path), str(path))


def incomplete(record: RunRecord) -> list[str]:
    """What a run record lacks that show and compare need."""
    missing = [key for key in ("status", "task", "method", "model") if not getattr(record, key)]
    if not record.config:
        missing.append("config")
    if record.status in ("finished", "stopped") and record.summary is None:
        missing.append("summary")
    return missing


def _json_document(path: Path):
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DamagedRecord("it is a directory, not a file") from None
    try:
        return json.loads(data.removeprefix(BOM).decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DamagedRecord(f"it is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") \
            from None
    except json.JSONDecodeError as error:
        raise DamagedRecord(f"it is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") \
            from None


def side_file(path: Path) -> Path:
    """Where a file's damaged lines are set aside: samples.jsonl -> samples.damaged.jsonl."""
    return path.with_name(f"{path.stem}.damaged{path.suffix}")


def set_aside_lines(directory: str | Path) -> int:
    """How many damaged lines of a run's samples.jsonl its runs have set aside so far."""
    aside = side_file(Path(directory) / SAMPLES_FILE)
    return aside.read_bytes().count(b"\n") if aside.is_file() else 0


class RunStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / SAMPLES_FILE
        self.prompts_path = self.dir / PROMPTS_FILE
        self.run_path = self.dir / RUN_FILE
        # lines that are not records go to a side file, so that what follows reads and appends whole lines only
        self.set_aside = {self.samples_path.name: _set_aside(self.samples_path, self._record, "their samples run again"),
                          self.prompts_path.name: _set_aside(self.prompts_path, _text_row,
                                                             "their texts are stored again when next sent")}
        self.stored_texts = set(read_texts(self.dir))

    def _record(self, raw) -> SampleRecord:
        return SampleRecord.from_json(raw, str(self.samples_path))

    def all_records(self) -> list[SampleRecord]:
        """Every line, in order: a sample retried after an error has a line per attempt."""
        records, _ = _scan(self.samples_path, self._record)
        return records

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
        """The run.json an earlier run left, or None; one that is not a record is set aside as run.json.damaged
        (the run writes its own), with a warning."""
        try:
            return read_run(self.dir)
        except DamagedRecord as problem:
            aside = self.run_path.with_name(f"{RUN_FILE}.damaged")
            self.run_path.replace(aside)
            log.warning("%s is damaged (%s); set aside as %s, and this run writes it afresh", self.run_path, problem,
                        aside.name)
            return None

    def write_run(self, record: RunRecord) -> None:
        write_json(self.run_path, record.to_json())


def write_json(path: Path, data: dict) -> None:
    """Written aside and renamed: a reader never sees half a file, and a full disk leaves the old one whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None  # the file, for the message


def overwrite_json(path: Path, data: dict) -> None:
    """Written over the file in place, for a disk too full for write_json's copy: the old file's space is reused, and
    a file cut short by a crash meanwhile is set aside by the next run."""
    with open(path, "r+b") as f:
        f.write((json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def _append_lines(path: Path, rows: list[dict]) -> None:
    """Whole lines or nothing: a write that fails (a full disk) is cut back to where the file ended, which also gives
    back the space its part took, for the record of the stop. Unbuffered, so that closing the file writes nothing."""
    data = memoryview("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    with open(path, "ab", buffering=0) as f:
        end = f.tell()
        try:
            while data:
                data = data[f.write(data):]
            os.fsync(f.fileno())
        except OSError as error:
            try:
                f.truncate(end)
            except OSError:
                pass  # a line cut short is set aside by the next run
            raise OSError(error.errno, error.strerror, str(path)) from None  # the file, for the message


def _text_row(raw) -> tuple[str, str]:
    if not isinstance(raw, dict) or not isinstance(raw.get("hash"), str) or not isinstance(raw.get("text"), str):
        raise DamagedRecord("it is not a {\"hash\", \"text\"} object of two strings")
    return raw["hash"], raw["text"]


def _scan(path: Path, parse) -> tuple[list, list[DamagedLine]]:
    """parse(row) of each JSON line of the file, and the lines that are not rows (see _parse_lines)."""
    return _parse_lines(path.read_bytes(), parse) if path.is_file() else ([], [])


def _parse_lines(data: bytes, parse) -> tuple[list, list[DamagedLine]]:
    """parse(row) of each JSON line of a file's bytes, and the lines that are not rows: not UTF-8, not JSON, or
    refused by parse (DamagedRecord). A last line without its newline was cut short unless it is whole."""
    pieces = data.removeprefix(BOM).split(b"\n")
    rows, damaged = [], []
    for number, piece in enumerate(pieces, 1):
        if not piece.strip():
            continue
        try:
            # "\n" only: str.splitlines would also split at U+2028 and the other separators JSON strings hold raw
            rows.append(parse(json.loads(piece.decode("utf-8"))))
        except UnicodeDecodeError as error:
            damaged.append(DamagedLine(number, f"not UTF-8 text (byte 0x{piece[error.start]:02x} at column "
                                               f"{error.start + 1})", piece))
        except json.JSONDecodeError as error:
            reason = CUT_SHORT if number == len(pieces) else f"not valid JSON ({error.msg} at column {error.colno})"
            damaged.append(DamagedLine(number, reason, piece))
        except DamagedRecord as error:
            damaged.append(DamagedLine(number, str(error), piece))
    return rows, damaged


def _set_aside(path: Path, parse, consequence: str) -> list[DamagedLine]:
    """Move the file's damaged lines, as they were, to its side file and keep the rest; returns them. A whole last
    line that lacks its newline gets one, so that the next line is appended after it."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    _, damaged = _parse_lines(data, parse)
    if not damaged:
        if data.strip() and not data.endswith(b"\n"):
            with open(path, "ab") as f:
                f.write(b"\n")
        return damaged
    with open(side_file(path), "ab") as f:
        f.write(b"".join(line.data + b"\n" for line in damaged))
        f.flush()
        os.fsync(f.fileno())
    bad = {line.number for line in damaged}
    kept = [piece for number, piece in enumerate(data.removeprefix(BOM).split(b"\n"), 1)
            if piece.strip() and number not in bad]
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(piece + b"\n" for piece in kept))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    shown = "; ".join(map(str, damaged[:3])) + (f"; and {len(damaged) - 3} more" if len(damaged) > 3 else "")
    log.warning("%s: %s set aside in %s (%s); %s", path, plural(len(damaged), "damaged line"),
                side_file(path).name, shown, consequence)
    return damaged


def plural(count: int, noun: str) -> str:
    """'1 sample', '2 samples'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_output_root(root: str | Path) -> Path:
    """Refuse, before anything is written, an output root that is a file, cannot be written or sits on a full disk.

    Returns the closest folder of it that exists (the root itself, or a parent).
    """
    return check_writable(root, "run.output_root")


def check_writable(folder: str | Path, setting: str, purpose: str = "") -> Path:
    """Refuse a folder that `setting` names (a config key or an environment variable) when it is a file, cannot be
    written or sits on a full disk; `purpose` says what goes there. Returns its closest folder that exists."""
    root = Path(folder).expanduser()
    where = f"{setting}={root}{f' ({purpose})' if purpose else ''}"
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == root else f"lies under {existing}, which is a file"
        raise UserError(f"{where} {what}; set {setting} to a directory.")
    try:
        stats = os.statvfs(existing)
    except OSError as error:
        raise UserError(f"{where} cannot be used ({error.strerror}); set {setting} to a writable directory.") \
            from None
    if stats.f_flag & os.ST_RDONLY:
        raise UserError(f"{where} is not writable ({existing} is on a read-only file system); "
                        f"set {setting} to a writable directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{where} is not writable ({existing} is read-only for this user); "
                        f"set {setting} to a writable directory.")
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise EnvironmentFault(f"{where} is on a full disk (under 1 MB free at {existing}); free some space or "
                               f"set {setting} to another disk.")
    return existing
