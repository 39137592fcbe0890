"""view.html as a file: what it embeds and how, the commands that write it, and bad input."""

import json
import re

import pytest
from typer.testing import CliRunner

from mascompare import report
from mascompare.cli import app
from mascompare.view import page
from view_texts import HOSTILE_REPLY, latest_rows

runner = CliRunner()
SCRIPT_DATA = re.compile(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', re.S)


def embedded(html: str) -> dict[str, str]:
    return dict(SCRIPT_DATA.findall(html))


def test_embedded_json_holds_nothing_that_can_end_or_escape_its_element():
    hostile = ["</script><script>alert(1)</script>", "<!--<script>", "</SCRIPT >", "a\u2028b\u2029c", "&lt;x&gt;",
               "[a](javascript:alert(1))", "\ud800 lone surrogate", "\"quoted\" \\ back"]
    text = page.script_json({"texts": hostile})
    assert not set(text) & set("<>&\u2028\u2029")
    restored = json.loads(text)["texts"]
    assert restored[:6] == hostile[:6] and restored[7] == hostile[7]
    assert restored[6] == "\ufffd lone surrogate"  # no UTF-8 form: replaced, so the file can be written


def test_the_page_of_a_hostile_sweep_has_only_its_own_markup(hostile_sweep, tmp_path):
    html_path = page.write(report.compare(report.collect([hostile_sweep])), tmp_path)
    html = html_path.read_text(encoding="utf-8")
    data = embedded(html)
    assert set(data) == {"mascompare-index"} | {f"mascompare-details-{k}" for k in range(len(data) - 1)}
    assert html.lower().count("<script") == len(data) + 1 == html.lower().count("</script")  # + the page's script
    assert "<!--" not in html and "<img" not in html.lower() and "<b>" not in html
    index = json.loads(data["mascompare-index"])
    assert any("<img" in q["id"] for q in index["questions"])  # the ids came through, as data
    details = [d for key, chunk in data.items() if key != "mascompare-index" for d in json.loads(chunk)]

    def resolve(ref, own):
        return ref if not isinstance(ref, int) else index["texts"][ref] if ref >= 0 else own[-1 - ref]

    assert all(resolve(d["final"], d["texts"]) == HOSTILE_REPLY for d in details)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe" not in csp


def test_transcripts_are_split_into_chunks_and_shared_paragraphs_stored_once(tiny_sweep, monkeypatch):
    comparison = report.compare(report.collect([tiny_sweep]))
    monkeypatch.setattr(page, "CHUNK_BYTES", 2_000)
    index, chunks = page.page_data(comparison, tiny_sweep, None)
    samples = len(index["samples"]["run"])
    assert samples == len(comparison.collection.samples) == 5 * 4
    parsed = [json.loads(chunk) for chunk in chunks]
    assert len(parsed) > 3 and sum(map(len, parsed)) == samples
    assert index["chunks"] == [sum(map(len, parsed[:k])) for k in range(len(parsed))]
    runs = [comparison.collection.runs[key] for key in comparison.table.run]  # the page's order
    assert [len(d["calls"]) for chunk in parsed for d in chunk] == \
        [len(row["agents"]) for run in runs for row in latest_rows(run.dir / "samples.jsonl").values()]
    system = json.loads((tiny_sweep / "1" / "run.json").read_text())["config"]["method"]["roles"]["system"]
    html = page.render(comparison, tiny_sweep, None)
    assert html.count(system) == 1 and system in index["texts"]


def test_compare_writes_the_page_unless_told_not_to(tiny_sweep, tmp_path):
    result = runner.invoke(app, ["compare", str(tiny_sweep), "--out", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "with" / "view.html").is_file() and "view.html" in result.output
    result = runner.invoke(app, ["compare", str(tiny_sweep), "--out", str(tmp_path / "without"), "--no-html"])
    assert result.exit_code == 0 and not (tmp_path / "without" / "view.html").exists()
    assert (tmp_path / "without" / "comparison.md").is_file()
    result = runner.invoke(app, ["compare", str(tiny_sweep), "--json", "--out", str(tmp_path / "json")])
    assert [r["method"] for r in json.loads(result.stdout)][0] == "baseline"  # stdout holds the JSON alone


def test_view_writes_only_the_page_and_prints_its_path(tiny_sweep, tmp_path):
    assert (tiny_sweep / "view.html").is_file()  # the sweep's end wrote it
    result = runner.invoke(app, ["view", str(tiny_sweep), "--out", str(tmp_path), "--metric", "strict"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "view.html")
    assert [p.name for p in tmp_path.iterdir()] == ["view.html"]
    index = json.loads(embedded((tmp_path / "view.html").read_text())["mascompare-index"])
    assert index["metric"] == "strict" and [r["method"] for r in index["runs"]] == \
        ["baseline", "text_mas", "pruned_mas", "latent_mas", "pruned_latent_mas"]


@pytest.mark.parametrize("args, expected", [
    (["{empty}"], "No runs found in"),
    (["{missing}"], "does not exist"),
    (["{file}"], "is a file; view takes run directories"),
    (["{sweep}", "--metric", "loose"], "--metric must be strict or flexible"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tiny_sweep, tmp_path, args, expected):
    (tmp_path / "empty").mkdir()
    paths = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "file": tiny_sweep / "0" / "run.json",
             "sweep": tiny_sweep}
    result = runner.invoke(app, ["view", *(a.format(**paths) for a in args), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_wheel_carries_the_pages_template_script_and_style(tmp_path):
    """Built from a copy of the project's sources, so that the build leaves nothing in the checkout."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "mascompare", "conf"):
        if (root / name).is_dir():
            shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (root / name).is_file():
            shutil.copy(root / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("mascompare-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mascompare/view/{name}" for name in ("template.html", "view.js", "view.css")} <= names


def test_view_open_hands_the_file_to_the_browser(tiny_sweep, tmp_path, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    result = runner.invoke(app, ["view", str(tiny_sweep), "--out", str(tmp_path), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [(tmp_path / "view.html").as_uri()]


def test_the_page_written_in_pieces_is_the_page_rendered_whole(tiny_sweep, tmp_path, monkeypatch):
    from mascompare.cli import comparison_of

    monkeypatch.setattr(page, "CHUNK_BYTES", 2_000)  # several chunks of transcripts, each written as encoded
    kept = comparison_of("compare", [tiny_sweep], None, None, "flexible", for_view=True)  # records read once
    assert all(run.view_records is not None for run in kept.collection.runs)
    written = page.write(kept, tmp_path, b"png").read_text(encoding="utf-8")
    assert all(run.view_records is None for run in kept.collection.runs)  # let go once on the page
    whole = page.render(report.compare(report.collect([tiny_sweep])), tmp_path, b"png")
    generated = re.compile(r'"generated":"[^"]*"')
    assert generated.sub("", written) == generated.sub("", whole)
    assert written.count('id="mascompare-details-') > 3 and sorted(p.name for p in tmp_path.iterdir()) == ["view.html"]
