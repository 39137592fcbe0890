"""A run directory: `samples.jsonl` (one flushed line per finished sample) and `run.json` (config + summary).

Resume skips sample ids already written without error. A line cut short by a kill is
dropped when the file is reopened, and a sample written twice (an error, then a success on
resume) counts once: the last line for an id wins.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"
FAILURE_FILE = "failed.json"  # a failed sweep job's error and overrides, in its directory (sweep.py, report.py)
# Packages whose versions can change results; recorded in run.json.
TRACKED_PACKAGES = ("mascompare", "torch", "transformers", "hydra-core", "datasets", "openai")


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


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / SAMPLES_FILE
        self.run_path = self.dir / RUN_FILE
        self._drop_partial_last_line()

    def _drop_partial_last_line(self) -> None:
        """A kill can leave half a line at the end; cut the file back to its last complete line."""
        if not self.samples_path.exists():
            return
        data = self.samples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.samples_path, "r+b") as f:
                f.truncate(keep)

    def all_rows(self) -> list[dict]:
        """Every line, in order: a sample retried after an error has a line per attempt."""
        return _read_rows(self.samples_path)

    def records(self) -> dict[str, dict]:
        """The latest line for each sample id."""
        return {row["id"]: row for row in self.all_rows()}

    def completed_ids(self) -> set[str]:
        return {sid for sid, row in self.records().items() if not row.get("error")}

    @staticmethod
    def completed_ids_in(directory: Path) -> set[str]:
        """completed_ids() of a run directory, read without creating or repairing anything (dry runs)."""
        return {sid for sid, row in latest_rows(Path(directory) / SAMPLES_FILE).items() if not row.get("error")}

    def append(self, row: dict) -> None:
        with open(self.samples_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

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


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def latest_rows(path: Path) -> dict[str, dict]:
    """The latest line per sample id, read without touching the file (dry runs, reports): a line cut
    short by a kill, or still being written by a running job, is skipped."""
    latest: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[row["id"]] = row
    return latest


def summarize(rows: list[dict]) -> dict:
    """Accuracy (strict and flexible, with 95% intervals) and mean usage per sample over finished samples."""
    done = [r for r in rows if not r.get("error")]
    n = len(done)
    summary: dict = {"n": n, "errors": len(rows) - n}
    for kind in ("strict", "flexible"):
        correct = sum(bool(r[f"correct_{kind}"]) for r in done)
        summary[f"accuracy_{kind}"] = correct / n if n else None
        summary[f"accuracy_{kind}_ci95"] = wilson_interval(correct, n)
    for key in ("input_tokens", "output_tokens", "latent_steps", "calls", "forward_passes", "wall_time_s"):
        summary[f"mean_{key}"] = sum(r["usage"][key] for r in done) / n if n else None
    summary["mean_time_per_sample_s"] = summary.pop("mean_wall_time_s")
    costs = [r["usage"]["cost_usd"] for r in done]
    summary["cost_usd"] = sum(costs) if costs and all(c is not None for c in costs) else None
    return summary
