"""The Hydra application's guarantees: refused commands write nothing, one run per directory at a time,
faults recorded in run.json, secrets masked in every file, sweeps resume in place, and a sweep's jobs in
this process load the model once."""

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from mascompare import app as application
from mascompare import store
from mascompare.backends import KeptBackend
from mascompare.backends.hf import HFBackend
from mascompare.cli import app

runner = CliRunner()
SECRET = "sk-do-not-leak-0123456789"


def run(tiny_model_dir, root, *extra, multirun=False):
    args = ["run", "method=baseline", "task=arith", f"model.path={tiny_model_dir}", "model.name=tiny",
            "generation.max_new_tokens=2", "run.progress=false", f"run.output_root={root}", "task.limit=2", *extra]
    return runner.invoke(app, args + (["-m"] if multirun else []))


def only_run_dir(root):
    (run_dir,) = [p.parent for p in root.rglob("run.json")]
    return run_dir


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_refused_command_writes_nothing(tiny_model_dir, tmp_path):
    root = tmp_path / "results"
    # refused by the config check, by the task (inside the run) and by the method's own check
    for bad in (["generation.seed=abc"], ["task=custom", "task.path=/nonexistent.jsonl"],
                ["method=text_mas", "method.structure=tree"]):
        result = run(tiny_model_dir, root, *bad)
        assert result.exit_code == 2, result.output
        assert not root.exists(), files_under(root)


def test_a_refused_command_leaves_an_earlier_runs_records_alone(tiny_model_dir, tmp_path):
    assert run(tiny_model_dir, tmp_path).exit_code == 0
    run_dir = only_run_dir(tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert (run_dir / ".hydra" / "config.yaml") in before
    # the same run (run.max_cost_usd is not part of its identity), refused inside the runner: no price
    result = run(tiny_model_dir, tmp_path, "run.max_cost_usd=1")
    assert result.exit_code == 2 and "price" in result.output
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_second_identical_run_stops_or_waits_while_the_first_holds_the_lock(tiny_model_dir, tmp_path):
    assert run(tiny_model_dir, tmp_path).exit_code == 0
    run_dir = only_run_dir(tmp_path)
    fd = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running process would hold it
    try:
        result = run(tiny_model_dir, tmp_path, "task.limit=3")
        assert result.exit_code == 2
        assert "Another mascompare process is running this configuration" in result.output
        assert "run.on_busy=wait" in result.output
        assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2  # nothing done twice

        threading.Timer(1.0, lambda: os.close(fd)).start()
        started = time.monotonic()
        result = run(tiny_model_dir, tmp_path, "task.limit=3", "run.on_busy=wait")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started >= 0.9
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    info = json.loads((run_dir / "run.json").read_text())
    assert info["samples_resumed"] == 2 and info["summary"]["n"] == 3


def test_a_crashed_runs_lock_does_not_block(tiny_model_dir, tmp_path):
    assert run(tiny_model_dir, tmp_path).exit_code == 0
    run_dir = only_run_dir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); "
                               "time.sleep(60)", str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # a crash: no cleanup runs
    holder.wait()
    assert run(tiny_model_dir, tmp_path, "task.limit=3").exit_code == 0


def test_a_full_disk_mid_run_is_one_sentence_exit_1_and_recorded(tiny_model_dir, tmp_path, monkeypatch):
    appended = []

    def append(self, row):
        if appended:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.samples_path))
        appended.append(row)
        original(self, row)

    original = store.RunStore.append
    monkeypatch.setattr(store.RunStore, "append", append)
    result = run(tiny_model_dir, tmp_path, "run.batch_size=1")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "No space left on device" in errors[0] and "run.output_root=" in errors[0]
    info = json.loads((only_run_dir(tmp_path) / "run.json").read_text())
    assert info["status"] == "stopped" and "No space left on device" in info["stop_reason"]


def test_secrets_reach_no_file_and_no_message(tiny_model_dir, tmp_path):
    # a secret-looking key added with + where a section takes any keys (the chat template's own arguments)
    result = run(tiny_model_dir, tmp_path, f"+model.chat_template_kwargs.api_token={SECRET}")
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert json.loads((run_dir / "run.json").read_text())["config"]["model"]["chat_template_kwargs"] == \
        {"api_token": "***"}
    assert SECRET not in result.output

    # one added where nothing reads it is refused, and the refusal does not show it either
    unread = run(tiny_model_dir, tmp_path / "unread", f"+backend.apikey={SECRET}")
    assert unread.exit_code == 2 and SECRET not in unread.output and not (tmp_path / "unread").exists()
    assert "+backend.apikey adds a key that backend does not read" in unread.output

    mapping = runner.invoke(app, ["run", f"backend={{name: openai, api_key: {SECRET}}}",
                                  f"run.output_root={tmp_path / 'other'}"])
    assert mapping.exit_code == 2 and SECRET not in mapping.output
    assert "takes the name of a preset" in mapping.output


def test_rerunning_a_sweep_resumes_it(tiny_model_dir, tmp_path):
    first = run(tiny_model_dir, tmp_path, "generation.max_new_tokens=2,3", multirun=True)
    assert first.exit_code == 0, first.output
    (sweep,) = (tmp_path / "multirun").iterdir()
    assert sweep.name.startswith("method_baseline__task_arith__")
    assert "comparison.md, .csv, .tex and the plot pareto.png are in" in first.output
    again = run(tiny_model_dir, tmp_path, "generation.max_new_tokens=2,3", multirun=True)
    assert again.exit_code == 0, again.output
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == [sweep.name]
    for job in ("0", "1"):
        info = json.loads((sweep / job / "run.json").read_text())
        assert info["samples_resumed"] == 2
        assert len((sweep / job / "samples.jsonl").read_text().splitlines()) == 2


def test_a_ten_megabyte_question_fails_its_sample_without_exhausting_memory(tiny_model_dir, tmp_path):
    import resource

    data = tmp_path / "questions.jsonl"
    lines = [{"id": "short", "question": "What is 2 + 2?", "answer": 4},
             {"id": "huge", "question": "Count these: " + "one two three " * 750_000, "answer": 3}]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert data.stat().st_size > 10_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(tiny_model_dir, tmp_path / "out", "task=custom", f"task.path={data}")
    assert result.exit_code == 0, result.output
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    rows = {key[0]: record for key, record in store.latest_records(only_run_dir(tmp_path / "out")).items()}
    assert rows["short"].error is None and not rows["short"].failed
    assert rows["huge"].failed and rows["huge"].error.startswith("ContextWindowExceeded: the prompt has 10,")
    assert "context window of 4,096 positions" in rows["huge"].error
    assert grown_mb < 500  # reading and parsing the file itself; the model never saw it


def count_loads(monkeypatch) -> list:
    loads = []
    load = HFBackend.__init__

    def counted(self, *args, **kwargs):
        loads.append(args[1].name)
        load(self, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "__init__", counted)
    monkeypatch.setattr(application, "SWEEP_BACKEND", KeptBackend())  # nothing kept from earlier tests
    return loads


def final_texts(run_dir) -> dict:
    return {row["id"]: row["final_text"] for row in map(json.loads, (run_dir / "samples.jsonl").open())}


def test_a_sweep_loads_its_model_once_and_reuse_changes_no_result(tiny_model_dir, tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    common = ["task=arith", "task.limit=2", f"model.path={tiny_model_dir}", "model.name=tiny", "run.progress=false"]
    sweep = tmp_path / "sweep"
    result = runner.invoke(app, ["run", "-m", *common, "method=baseline,text_mas", "generation.max_new_tokens=3,4",
                                 f"run.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert loads == ["tiny"]  # four jobs, one load
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))]
    assert len(runs) == 4 and sorted(r["backend_reused"] for r in runs) == [False, True, True, True]

    # the last job, run on its own with a fresh model, writes the same texts
    last = max(runs, key=lambda r: r["started"])
    alone = tmp_path / "alone"
    result = runner.invoke(app, ["run", *common, f"method={last['method']}",
                                 f"generation.max_new_tokens={last['config']['generation']['max_new_tokens']}",
                                 f"run.output_root={alone}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(loads) == 2
    assert final_texts(next(alone.rglob("run.json")).parent) == final_texts(Path(last["run_dir"]))


def test_a_sweep_over_models_loads_each_once_in_turn(tiny_model_dir, tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    result = runner.invoke(app, ["run", "-m", "task=arith", "task.limit=1", f"model.path={tiny_model_dir}",
                                 "model.name=tiny,tiny_too", "generation.max_new_tokens=2,3", "run.progress=false",
                                 f"run.output_root={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(loads) == ["tiny", "tiny_too"]  # Hydra runs each model's jobs together
