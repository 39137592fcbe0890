"""Results folders for the viewer's tests, written by the real `mascompare run`.

`tiny_sweep`: the smoke experiment's five arms on the tiny random model over a custom task whose ids,
questions and targets carry markup, with targets chosen so that baseline is right on two questions.
`hostile_sweep`: baseline and text_mas whose model is a local OpenAI-compatible server answering
every call with markup, a comment, Markdown and `javascript:` links.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mascompare.cli import app
from view_texts import BASELINE_RIGHT, CALIBRATION, HOSTILE_REPLY, HOSTILE_TARGET, QUESTIONS

runner = CliRunner()


def invoke(*args, env=None):
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def write_task(path: Path, targets: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": qid, "question": q, "answer": targets.get(qid, "0")}) + "\n"
                            for qid, q in QUESTIONS + CALIBRATION), encoding="utf-8")
    return path


def custom_task(path: Path) -> list[str]:
    return ["task=custom", f"task.path={path}", "task.scoring=exact", f"task.limit={len(QUESTIONS)}"]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("view-tiny")
    task = write_task(root / "questions.jsonl", {})
    model = [f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=6", "run.progress=false"]
    # a first baseline run shows what the tiny model answers (greedy, so the sweep's baseline answers the same)
    invoke("run", "method=baseline", *custom_task(task), *model, f"run.output_root={root / 'probe'}")
    (probe,) = (root / "probe").rglob("samples.jsonl")
    answers = {row["id"]: row["extracted_flexible"] for row in map(json.loads, probe.read_text().splitlines())}
    assert all(answers[qid] for qid in BASELINE_RIGHT), answers
    targets = {**{qid: answers[qid] for qid in BASELINE_RIGHT}, QUESTIONS[1][0]: HOSTILE_TARGET}
    write_task(task, targets)
    sweep = root / "sweep"
    invoke("run", "-m", "+experiment/smoke_arm=baseline,text_mas,latent_mas,pruned_mas,pruned_latent_mas",
           *custom_task(task), *model, f"run.output_root={root}", f"hydra.sweep.dir={sweep}")
    return sweep


class HostileModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers every request with HOSTILE_REPLY."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({
            "id": "hostile", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": HOSTILE_REPLY}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def hostile_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("view-hostile")
    task = write_task(root / "questions.jsonl", {QUESTIONS[1][0]: HOSTILE_TARGET})
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sweep = root / "sweep"
        invoke("run", "-m", "method=baseline,text_mas", "backend=openai", "model.name=hostile",
               "+model.api_model=hostile", f"backend.base_url=http://127.0.0.1:{server.server_address[1]}/v1",
               *custom_task(task), "run.progress=false", f"run.output_root={root}", f"hydra.sweep.dir={sweep}",
               env={"OPENAI_API_KEY": "sk-test"})
    finally:
        server.shutdown()
        thread.join()
    return sweep
