"""Helpers of the fault suite (tests/test_faults_*.py): a run against the scripted server through the command
line, the one error sentence a command printed, and a folder's files, to compare before and after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mascompare.cli import app

invoke = CliRunner().invoke


def scripted_args(root: Path, *extra: str, script: dict | None = None, limit: int = 3) -> list[str]:
    """`mascompare run` of baseline on `limit` arith questions against the scripted server, quick retries."""
    args = ["run", "backend=scripted", "method=baseline", "task=arith", f"task.limit={limit}", "run.progress=false",
            f"run.output_root={root}", "backend.backoff_s=0.01", "backend.max_backoff_s=0.02", "backend.max_retries=1"]
    if script is not None:
        path = root.parent / f"{root.name}-script.yaml"
        path.write_text(yaml.safe_dump(script), encoding="utf-8")
        args.append(f"backend.script={path}")
    return args + list(extra)


def scripted_run(root: Path, *extra: str, script: dict | None = None, limit: int = 3):
    return invoke(app, scripted_args(root, *extra, script=script, limit=limit))


def run_dir_of(root: Path) -> Path:
    (run_dir,) = [p.parent for p in root.rglob("run.json")]
    return run_dir


def error_line(output: str) -> str:
    """The command's one `error:` sentence (and no traceback around it)."""
    assert "Traceback" not in output, output
    assert "Error executing job" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0].removeprefix("error: ")


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes); {} when it does not exist."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def sample_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def keys_once(run_dir: Path) -> list[tuple[str, int]]:
    """(id, repeat) of every line of samples.jsonl, sorted: each sample once when nothing is lost or duplicated."""
    return sorted((line["id"], line["repeat"]) for line in sample_lines(run_dir))


def cli_process(*args: str, root_mount: str = "", **popen) -> subprocess.Popen:
    """`mascompare ARGS` in a fresh process of this checkout; `root_mount`, if given, is a shell line run first in a
    private mount namespace (unshare -m), e.g. a small tmpfs or a read-only bind mount that nothing else sees."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    command = [sys.executable, "-c", "import sys; from mascompare.cli import app; app(sys.argv[1:])", *args]
    if root_mount:
        command = ["unshare", "-m", "sh", "-c", root_mount + ' && exec "$@"', "sh", *command]
    # Ctrl-C as from a terminal, even where the tests run in the background (a shell has its children ignore it)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def cli(*args: str, root_mount: str = "", timeout: float = 120) -> tuple[int, str]:
    process = cli_process(*args, root_mount=root_mount)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def says(output: str, sentence: str) -> bool:
    """Whether `output` holds `sentence`, however the terminal wrapped it, in a table's cell or not (whitespace and
    box-drawing characters ignored)."""
    def flat(text: str) -> str:
        return "".join(c for c in "".join(text.split()) if not "\u2500" <= c <= "\u257f")

    return flat(sentence) in flat(output)
