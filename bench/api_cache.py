"""Calls paid by a sweep run twice with run.cache=true, counted by the server itself.

A sweep (baseline and text_mas on arith questions, greedy) runs against a real llama.cpp server
(the embedded SmolLM2 GGUF); then the same sweep runs again into a new sweep folder, so every run
starts afresh and only the response cache can spare its calls; then a widened sweep (more
questions) runs. The server's access log counts the chat requests each pass made.

    python bench/api_cache.py
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from mascompare.backends import llama_server


def served_requests(server: llama_server.LlamaServer) -> int:
    """Chat requests the server has answered so far (uvicorn logs one line per request)."""
    return sum(log.read_text(errors="replace").count("POST /v1/chat/completions")
               for log in server.log_dir.glob("server-*.log"))


def sweep(base_url: str, root: Path, name: str, limit: int, max_new_tokens: int) -> list[dict]:
    """Run the sweep in a fresh process into root/name; returns its runs' run.json, by job."""
    command = [sys.executable, "-m", "mascompare.cli", "run", "-m", "model=smollm2-135m-server",
               f"backend.base_url={base_url}", "method=baseline,text_mas", "task=arith", f"task.limit={limit}",
               f"generation.max_new_tokens={max_new_tokens}", "run.cache=true", "run.progress=false",
               f"run.output_root={root}", f"hydra.sweep.dir={root / name}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(p.read_text()) for p in sorted((root / name).glob("*/run.json"))]


def rows(run: dict) -> list[dict]:
    return [json.loads(line) for line in (Path(run["run_dir"]) / "samples.jsonl").open()]


def answers(runs: list[dict]) -> list[dict]:
    return [{row["id"]: row["final_text"] for row in rows(run)} for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=6, help="questions in the first two passes")
    parser.add_argument("--widened", type=int, default=9, help="questions in the widened pass")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, llama_server.start(threads=1) as server:
        root = Path(scratch)
        passes = {}
        for name, limit in (("first", args.limit), ("repeated", args.limit), ("widened", args.widened)):
            before = served_requests(server)
            runs = sweep(server.base_url, root, name, limit, args.max_new_tokens)
            passes[name] = (served_requests(server) - before, runs)
        with sqlite3.connect(root / "response_cache.sqlite") as db:
            kept = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        print(f"sweep: method=baseline,text_mas on arith, greedy, max_new_tokens {args.max_new_tokens}, "
              "run.cache=true; each pass into a new sweep folder (every run starts afresh)")
        for name, (served, runs) in passes.items():
            agents = [a for run in runs for row in rows(run) for a in row["agents"]]
            cached = sum(a["usage_source"] == "cache" for a in agents)
            print(f"{name:9s} pass: {runs[0]['samples_total']} questions, {len(agents)} calls made by the methods, "
                  f"{cached} answered from the cache, {served} sent to the server")
        same = answers(passes["first"][1]) == answers(passes["repeated"][1])
        print(f"repeated pass gives the same answers as the first: {same}; responses kept in the cache: {kept}")


if __name__ == "__main__":
    main()
