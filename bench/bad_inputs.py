"""Bad inputs and faults through the real command line, one fresh process each: exit status, whether the
answer is one sentence without a traceback, what was left on disk, whether a secret leaked, and time.

    python bench/bad_inputs.py                   # this checkout
    python bench/bad_inputs.py --tree /tmp/orig  # another checkout (e.g. an older commit, as a git worktree)

Each command runs with PYTHONPATH=<tree> in an empty temporary directory, on the embedded model with two
arith questions, so that a command wrongly accepted costs seconds. An immutable directory (chattr +i)
stands for a read-only output root. The 10 MB question is skipped with --skip-huge (code that does not
guard the context window grows until the kernel kills it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECRET = "sk-bench-secret-7f3a9c1e"
BASE = ["task=arith", "task.limit=2", "generation.max_new_tokens=4", "run.progress=false"]


def cases(work: Path) -> list[tuple[str, list[str]]]:
    """(label, arguments after `mascompare`); {root} is the run's output root."""
    afile = work / "a_file"
    afile.write_text("not a directory\n")
    partial = work / "partial_run"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"status": "finished", "method": "baseline"}))
    huge = work / "huge.jsonl"
    huge.write_text(json.dumps({"question": "Count: " + "one two three " * 750_000, "answer": 3}) + "\n")
    run = ["run", *BASE, "run.output_root={root}"]
    return [
        ("generation.seed=abc", [*run, "generation.seed=abc"]),
        ("generation.seed=-1", [*run, "generation.seed=-1"]),
        ("generation.temperature=abc", [*run, "generation.temperature=abc"]),
        ("generation.top_p=2", [*run, "generation.top_p=2"]),
        ("generation.max_new_tokens=0", [*run, "generation.max_new_tokens=0"]),
        ("+model.price={input: abc, output: 1}", [*run, "+model.price={input: abc, output: 1}"]),
        ("+model.price={input: -1, output: 1}", [*run, "+model.price={input: -1, output: 1}"]),
        ("run.resume=maybe", [*run, "run.resume=maybe"]),
        ("run.progress=maybe", [*run, "run.progress=maybe"]),
        ("run.batch_size=0", [*run, "run.batch_size=0"]),
        ("run.max_cost_usd=-1", [*run, "run.max_cost_usd=-1"]),
        ("run.primary_metric=exact", [*run, "run.primary_metric=exact"]),
        ("backend.device=gpu", [*run, "backend.device=gpu"]),
        ("run.output_root=<a file>", ["run", *BASE, f"run.output_root={afile}"]),
        ("run.output_root=<read-only dir>", ["run", *BASE, f"run.output_root={work / 'readonly' / 'results'}"]),
        ("limit=4 (unknown key)", [*run, "limit=4"]),
        ("task.limt=3", [*run, "task.limt=3"]),
        ("method=baselin", [*run, "method=baselin"]),
        ("task=custom task.path=<missing>", [*run, "task=custom", "task.path=/nonexistent/q.jsonl"]),
        ("task=svamp (hub only, offline)", ["run", "task=svamp", "run.output_root={root}"]),
        ("backend={name: openai, api_key: SECRET}", [*run, f"backend={{name: openai, api_key: {SECRET}}}"]),
        ("+backend.apikey=SECRET (unknown key)", [*run, f"+backend.apikey={SECRET}"]),
        ("task=custom, one 10 MB question", [*run, "task=custom", f"task.path={huge}"]),
        ("compare <run.json file>", ["compare", str(partial / "run.json")]),
        ("show <incomplete run.json>", ["show", str(partial)]),
        ("compare <incomplete run.json>", ["compare", str(partial)]),
    ]


# inputs a run accepts: the huge question must fail only its own sample (a key a section does not read, such as
# +backend.apikey, is refused: its secret must then show in neither the sentence nor any file)
ACCEPTED = ("task=custom, one 10 MB question",)


def as_expected(row: dict, accepted: bool) -> bool:
    if accepted:
        return row["exit"] == 0 and not row["secret_leaked"]
    return row["exit"] == 2 and row["one_sentence"] and not row["left_on_disk"] and not row["secret_leaked"]


def files_in(path: Path) -> set[str]:
    return {str(p) for p in path.rglob("*")} if path.exists() else set()


def leaked(path: Path) -> bool:
    for p in path.rglob("*"):
        if p.is_file() and SECRET in p.read_text(errors="replace"):
            return True
    return False


def run_case(tree: Path, label: str, args: list[str], work: Path, timeout: int) -> dict:
    root = work / "results"
    shutil.rmtree(root, ignore_errors=True)
    args = [a.replace("{root}", str(root)) for a in args]
    before = files_in(work)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "COLUMNS": "100",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # an unreachable hub, however this machine is connected
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "mascompare.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=timeout)
        status, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        status, out, err = "timeout", expired.stdout or "", expired.stderr or ""
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x for x in (out, err))
    seconds = time.monotonic() - started
    errors = [line for line in err.splitlines() if line.strip().startswith("error:")]
    written = sorted(files_in(work) - before)
    return {
        "case": label, "exit": status, "seconds": round(seconds, 1),
        "one_sentence": len(errors) == 1 and "Traceback" not in err + out,
        "traceback": "Traceback" in err + out or "╭─" in err,
        "left_on_disk": len(written),
        "secret_leaked": SECRET in out + err or leaked(work),
        "message": (errors[0] if errors else (err.strip().splitlines() or out.strip().splitlines() or [""])[-1])[:110],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]),
                        help="the checkout whose mascompare package runs")
    parser.add_argument("--skip-huge", action="store_true", help="leave out the 10 MB question")
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--json", help="also write the rows to this file")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        readonly = work / "readonly"
        readonly.mkdir()
        immutable = subprocess.run(["chattr", "+i", str(readonly)], capture_output=True).returncode == 0
        try:
            for label, args in cases(work):
                if options.skip_huge and "10 MB" in label:
                    continue
                if "read-only" in label and not immutable:
                    continue
                row = run_case(Path(options.tree), label, args, work, options.timeout)
                row["ok"] = as_expected(row, accepted=label in ACCEPTED)
                rows.append(row)
                print(f"{'ok ' if row['ok'] else 'BAD'} {row['case'][:40]:40} exit={row['exit']!s:7} "
                      f"1-sentence={'yes' if row['one_sentence'] else 'no':3} "
                      f"traceback={'yes' if row['traceback'] else 'no':3} left={row['left_on_disk']:<3} "
                      f"leak={'YES' if row['secret_leaked'] else 'no':3} {row['seconds']:6.1f}s  {row['message']}",
                      flush=True)
        finally:
            if immutable:
                subprocess.run(["chattr", "-i", str(readonly)])
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} as they should be: a bad input ends with one sentence, "
          "exit 2, nothing left on disk, no secret shown; an accepted run ends with exit 0 and no secret in any file")
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
