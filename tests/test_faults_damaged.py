"""Fault class 1, damaged run files: a cut, non-UTF-8 or wrongly typed line of samples.jsonl is set aside (kept in
samples.damaged.jsonl, counted, named) and its sample run again; show and compare name such lines without
touching the files; a run.json or failed.json that is not a record is one sentence, not a traceback."""

from __future__ import annotations

import json

from faults import error_line, files, invoke, keys_once, run_dir_of, run_json, says, scripted_run

from mascompare.cli import app
from mascompare.store import read_samples

EXPECTED = [("arith-L1-0000", 0), ("arith-L2-0000", 0), ("arith-L3-0000", 0), ("arith-L4-0000", 0)]


def damage(run_dir, how: dict[int, bytes]) -> list[bytes]:
    """Replace lines of samples.jsonl (0-based index -> new bytes); returns the damaged lines as written."""
    path = run_dir / "samples.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    for index, new in how.items():
        lines[index] = new
    path.write_bytes(b"".join(lines))
    return [how[i] for i in sorted(how)]


def test_cut_non_utf8_and_wrongly_typed_lines_are_set_aside_and_their_samples_run_again(tmp_path):
    root = tmp_path / "results"
    assert scripted_run(root, limit=4).exit_code == 0
    run_dir = run_dir_of(root)
    lines = (run_dir / "samples.jsonl").read_bytes().splitlines(keepends=True)
    typed = json.loads(lines[2])
    typed["usage"]["output_tokens"] = "many"
    bad = damage(run_dir, {0: lines[0][:50] + b"\n", 1: b"\xff" + lines[1][1:],
                           2: json.dumps(typed).encode() + b"\n"})

    # show and compare name the damage and leave every file as it was
    before = files(root)
    shown = invoke(app, ["show", str(run_dir)])
    assert shown.exit_code == 0 and "Traceback" not in shown.output
    assert says(shown.output, "3 lines of samples.jsonl left out")
    compared = invoke(app, ["compare", str(run_dir), "--json"])
    assert compared.exit_code == 0 and "Traceback" not in compared.output
    (row,) = json.loads(compared.stdout)
    assert row["n"] == 1  # the one whole line
    assert files(root) == before

    resumed = scripted_run(root, limit=4)
    assert resumed.exit_code == 0, resumed.output
    told = resumed.output
    assert says(told, f"{run_dir / 'samples.jsonl'}: 3 damaged lines set aside in samples.damaged.jsonl (line 1: not "
                "valid JSON")
    assert says(told, "line 2: not UTF-8 text (byte 0xff at column 1)") and says(told, "line 3:")
    assert "output_tokens" in told
    assert (run_dir / "samples.damaged.jsonl").read_bytes() == b"".join(bad)  # kept as they were, in order
    assert keys_once(run_dir) == EXPECTED  # nothing lost, nothing twice
    info = run_json(run_dir)
    assert info["status"] == "finished" and info["summary"]["n"] == 4


def test_a_cut_last_line_of_a_finished_run_is_damage_and_resume_runs_its_sample_again(tmp_path):
    root = tmp_path / "results"
    assert scripted_run(root, limit=4).exit_code == 0
    run_dir = run_dir_of(root)
    last = (run_dir / "samples.jsonl").read_bytes().splitlines(keepends=True)[-1]
    damage(run_dir, {3: last[: len(last) // 2]})  # the end of the file, without its newline
    resumed = scripted_run(root, limit=4)
    assert resumed.exit_code == 0 and says(resumed.output, "1 damaged line set aside in samples.damaged.jsonl")
    assert keys_once(run_dir) == EXPECTED
    assert (run_dir / "samples.damaged.jsonl").read_bytes() == last[: len(last) // 2] + b"\n"


def test_a_run_json_that_is_not_a_record_is_one_sentence_for_show_and_compare_and_resume_rewrites_it(tmp_path):
    root = tmp_path / "results"
    assert scripted_run(root).exit_code == 0
    run_dir = run_dir_of(root)
    (run_dir / "run.json").write_text('{"status": "finished", "summary": 3', encoding="utf-8")
    before = files(root)
    shown = invoke(app, ["show", str(run_dir)])
    assert shown.exit_code == 2
    assert error_line(shown.output) == (
        f"{run_dir / 'run.json'} is not a complete record of a run (it is not valid JSON (Expecting ',' delimiter at "
        "line 1, column 36)); run its command again to rewrite it.")
    compared = invoke(app, ["compare", str(run_dir)])
    assert compared.exit_code == 2 and "its run.json is not a complete record of a run" in error_line(compared.output)
    assert files(root) == before

    (run_dir / "run.json").write_text('{"status": 7, "summary": []}', encoding="utf-8")  # JSON of the wrong types
    shown = invoke(app, ["show", str(run_dir)])
    assert shown.exit_code == 2 and "is not a complete record of a run" in error_line(shown.output)

    resumed = scripted_run(root)
    assert resumed.exit_code == 0, resumed.output
    assert run_json(run_dir)["status"] == "finished" and run_json(run_dir)["summary"]["n"] == 3
    assert keys_once(run_dir) == EXPECTED[:3]


def test_a_failed_json_that_is_not_json_is_listed_not_fatal(tmp_path):
    root = tmp_path / "results"
    assert scripted_run(root).exit_code == 0
    job = tmp_path / "results" / "broken-job"
    job.mkdir()
    (job / "failed.json").write_bytes(b"{not json\xff")
    compared = invoke(app, ["compare", str(root), "--no-html", "--out", str(tmp_path / "out")])
    assert compared.exit_code == 0 and "Traceback" not in compared.output, compared.output
    assert "failed.json" in compared.output


def test_run_files_an_editor_saved_with_a_byte_order_mark_read_as_they_were(tmp_path):
    root = tmp_path / "results"
    assert scripted_run(root).exit_code == 0
    run_dir = run_dir_of(root)
    plain = invoke(app, ["compare", str(run_dir), "--json"])
    for name in ("run.json", "samples.jsonl", "prompts.jsonl"):
        path = run_dir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    job = root / "broken-job"
    job.mkdir()
    (job / "failed.json").write_bytes(b'\xef\xbb\xbf{"error": "refused: model.path is missing", "overrides": ["x=1"]}')
    before = files(root)
    shown = invoke(app, ["show", str(run_dir)])
    assert shown.exit_code == 0 and "utf-8-sig" not in shown.output and "left out" not in shown.output, shown.output
    compared = invoke(app, ["compare", str(run_dir), "--json"])
    assert compared.exit_code == 0 and json.loads(compared.stdout) == json.loads(plain.stdout)
    listed = invoke(app, ["compare", str(root), "--no-html", "--out", str(tmp_path / "out")])
    assert listed.exit_code == 0 and "refused: model.path is missing" in listed.output, listed.output
    assert files(root) == before
    resumed = scripted_run(root)
    assert resumed.exit_code == 0 and "damaged" not in resumed.output, resumed.output
    samples = read_samples(run_dir)  # the mark stays at the head of the file, read as nothing
    assert sorted(record.key for record in samples.records) == EXPECTED[:3] and not samples.damaged
