"""view.html in a real headless Chromium (Debian's `chromium`, driven by Playwright through executable_path),
opened from file:// as a user would: the overview's figures, the question list's filters, a question's calls
in order with their recorded text, the record fields the viewer shows where present, and hostile text.

Without Chromium or Playwright these tests skip with the reason; in CI (CI set) they fail instead.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from mascompare import report
from mascompare.records import SampleRecord
from mascompare.store import RunStore, expand_messages, read_texts
from mascompare.view import page
from view_texts import BASELINE_RIGHT, HOSTILE_REPLY, QUESTIONS, latest_rows

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# A headless browser on a build machine: no sandbox (CI runs as root), nothing fetched in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_or_skip() -> str:
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "Playwright for Python (pip install playwright; it is in the dev extra)"
    executable = os.environ.get("MASCOMPARE_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if executable is None:
        missing = missing or "a Chromium browser (apt-get install chromium, or MASCOMPARE_CHROMIUM=path)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need {missing}; .ci/run installs it")
        pytest.skip(f"the browser tests need {missing}")
    return executable


@pytest.fixture(scope="session", autouse=True)  # first, so that a missing browser skips before any sweep runs
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):
    """Opens a view.html from file:// in a fresh page; JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    errors = []

    def open_(html_path: Path, route: str = ""):
        page_ = context.new_page()
        page_.on("pageerror", lambda error: errors.append(str(error)))
        page_.goto(html_path.resolve().as_uri() + route)
        page_.wait_for_selector("#app > section")
        return page_

    yield open_
    context.close()
    assert errors == []


def screenshots_dir(tmp_path: Path) -> Path:
    """Where the screenshots go: $MASCOMPARE_SCREENSHOTS (to keep them), else the test's own folder."""
    folder = Path(os.environ.get("MASCOMPARE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def expect(locator):
    from playwright.sync_api import expect as playwright_expect  # (the page's CSP rules out wait_for_function)

    return playwright_expect(locator)


def table_text(page_, selector: str) -> list[list[str]]:
    return page_.eval_on_selector_all(selector, "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def shown_ids(page_) -> list[str]:
    return page_.eval_on_selector_all("#questions td.qid", "cells => cells.map(c => c.textContent)")


def write_view(folder: Path, out: Path, **compare) -> Path:
    return page.write(report.compare(report.collect([folder]), **compare), out)


def test_the_overview_shows_each_methods_numbers(tiny_sweep, open_page, tmp_path):
    comparison = report.compare(report.collect([tiny_sweep]))
    ((_, _, rows),) = comparison.groups()
    view = open_page(page.write(comparison, tmp_path))
    for part, position in (("runs", 1), ("paired", 2)):
        spec = report.columns(rows, [], comparison.metric, part)
        selector = f"#overview section.group table.figures:nth-of-type({position})"
        assert table_text(view, f"{selector} thead tr") == [[header for header, _ in spec]]
        assert table_text(view, f"{selector} tbody tr") == [[cell(r) for _, cell in spec]
                                                            for r in rows.to_dict("records")]
    assert [row[0] for row in table_text(view, "#overview section.group table.figures:nth-of-type(1) tbody tr")] == \
        ["baseline", "text_mas", "pruned_mas", "latent_mas", "pruned_latent_mas"]
    assert view.eval_on_selector("img.pareto", "image => image.complete && image.naturalWidth") > 500
    warnings = view.eval_on_selector_all("#overview ul.warnings li", "items => items.map(i => i.textContent)")
    assert any("stopped at generation.max_new_tokens" in w for w in warnings)  # 6 new tokens cut most calls off
    graphs = view.eval_on_selector_all(".runs svg.graph title", "titles => titles.map(t => t.textContent)")
    assert len(graphs) == 2 and all(title.startswith("who reads whom: ") for title in graphs)
    view.screenshot(path=str(screenshots_dir(tmp_path) / "view-overview.png"), full_page=True)


def expected_ids(sweep: Path, keep) -> list[str]:
    """The question ids (in task order) for which keep(answers by method) holds."""
    by_method = {}
    for run_json in sorted(sweep.glob("*/run.json")):
        method = json.loads(run_json.read_text())["method"]
        by_method[method] = {row["id"]: row for row in latest_rows(run_json.parent / "samples.jsonl").values()}
    ids = list(by_method["baseline"])
    return [i for i in ids if keep({method: rows[i] for method, rows in by_method.items()})]


def test_filters_and_search_narrow_the_question_list(tiny_sweep, open_page, tmp_path):
    view = open_page(write_view(tiny_sweep, tmp_path), "#questions")
    every = expected_ids(tiny_sweep, lambda rows: True)
    assert shown_ids(view) == every and len(every) == 4
    view.select_option("#filter", "ab")
    view.select_option("#filter-a", label="baseline")
    view.select_option("#filter-b", label="text_mas")
    right_wrong = expected_ids(tiny_sweep, lambda r: r["baseline"]["correct_flexible"]
                               and not r["text_mas"]["correct_flexible"])
    assert shown_ids(view) == right_wrong and set(right_wrong) <= set(BASELINE_RIGHT) and right_wrong
    view.select_option("#filter-a", label="text_mas")
    view.select_option("#filter-b", label="baseline")
    assert shown_ids(view) == expected_ids(tiny_sweep, lambda r: r["text_mas"]["correct_flexible"]
                                           and not r["baseline"]["correct_flexible"])
    view.select_option("#filter", "all-wrong")
    all_wrong = expected_ids(tiny_sweep, lambda r: not any(row["correct_flexible"] for row in r.values()))
    assert shown_ids(view) == all_wrong and len(all_wrong) < 4
    view.select_option("#filter", "all")
    view.fill("#search", "PLAIN")
    expect(view.locator("#questions td.qid")).to_have_count(2)  # the search waits for a pause in typing
    assert shown_ids(view) == ["plain-0", "plain-2"]
    view.fill("#search", "")
    expect(view.locator("#questions td.qid")).to_have_count(4)
    view.click("th[data-sort='id']")
    view.click("th[data-sort='id']")
    assert shown_ids(view) == sorted(every, key=str.lower, reverse=True)


def test_a_question_shows_every_call_in_order_with_its_recorded_text(tiny_sweep, open_page, tmp_path, monkeypatch):
    monkeypatch.setattr(page, "CHUNK_BYTES", 3_000)  # transcripts in several chunks, read as they are needed
    comparison = report.compare(report.collect([tiny_sweep]))
    html = page.write(comparison, tmp_path)
    assert html.read_text().count('id="mascompare-details-') > 3
    view = open_page(html, "#questions")
    view.click("#questions tr.question-row:has(td.qid:text-is('plain-0'))")
    view.wait_for_selector("#question .run-column .call")
    assert view.text_content("#question h2") == "plain-0"
    assert "What is 2 plus 3?" in view.text_content("#question .question-text")
    runs = [comparison.collection.runs[key] for key in comparison.table.run]
    for r, run in enumerate(runs):
        row = latest_rows(run.dir / "samples.jsonl")[("plain-0", 0)]
        texts = read_texts(run.dir)
        column = f"#question .run-column[data-run='{r}']"
        calls = view.eval_on_selector_all(f"{column} li.call", """calls => calls.map(call => ({
            agent: call.dataset.agent, round: +call.dataset.round,
            messages: [...call.querySelectorAll('details.message')]
                .map(m => [m.dataset.role, m.querySelector('pre').textContent]),
            reply: call.querySelector('pre.reply-text') ? call.querySelector('pre.reply-text').textContent : null,
            latent: call.querySelector('.latent') !== null }))""")
        in_order = [(a["agent"], a["round"]) for a in row["agents"]]
        assert [(c["agent"], c["round"]) for c in calls] == in_order, run.method
        for call, record, turn in zip(calls, row["agents"], row["transcript"]):
            assert call["messages"] == [[m["role"], m["content"]] for m in expand_messages(record["messages"], texts)]
            if record["latent_steps"] and not turn["text"]:
                assert call["latent"] and call["reply"] is None
            else:
                assert call["reply"] == turn["text"]
        answer = view.text_content(f"{column} code.answer-flexible")
        assert answer == (row["extracted_flexible"] or "none extracted")
    graph = view.eval_on_selector(".run-column[data-run='2'] svg.graph title", "t => t.textContent")
    masks = json.loads((runs[2].dir / "masks.json").read_text())
    assert graph.count("→") == sum(map(sum, masks["evaluated"]["spatial"])) + len(masks["agents"])  # + the decider's
    view.screenshot(path=str(screenshots_dir(tmp_path) / "view-question.png"))
    view.click("#next")
    expect(view.locator("#question h2")).not_to_have_text("plain-0")


def test_fields_the_records_add_are_shown(tiny_sweep, open_page, tmp_path):
    """KV positions received and from whom (latent agents), and a program's output in the sandbox."""
    source = tiny_sweep / "2"  # latent_mas
    run_dir = tmp_path / "runs" / "latent"
    run_dir.mkdir(parents=True)
    shutil.copy(source / "run.json", run_dir / "run.json")
    texts, store = read_texts(source), RunStore(run_dir)
    for row in latest_rows(source / "samples.jsonl").values():
        calls = [{**call, "messages": expand_messages(call["messages"], texts)} for call in row["agents"]]
        calls[-1]["kv_received_from"] = {"planner": 81, "critic": 1089}
        sandbox = {"ending": "failed", "status": "exited with status 1", "seconds": 0.05,
                   "stdout": "partial output\n", "stderr": "Traceback (most recent call last):\nNameError: x"}
        store.append(SampleRecord.from_json({**row, "agents": calls,
                                             "score_details": {"sandbox": {"strict": None, "flexible": sandbox}}}))
    view = open_page(write_view(tmp_path / "runs", tmp_path), "#question/0")
    view.wait_for_selector("#question li.call")
    assert "KV from planner (81 positions), critic (1,089 positions)" in view.text_content("li.call:last-child")
    assert view.text_content(".sandbox-run[data-kind='flexible'] pre.stdout") == "partial output\n"
    assert "NameError: x" in view.text_content(".sandbox-run[data-kind='flexible'] pre.stderr")
    assert "exited with status 1" in view.text_content(".sandbox")


def test_hostile_text_stays_text(hostile_sweep, open_page, tmp_path):
    folder = tmp_path / "sweep"
    shutil.copytree(hostile_sweep, folder)
    # a reply with line and paragraph separators, escaped in the record as JSON allows
    lines = (folder / "1" / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["final_text"] += "\u2028after a line separator\u2029</script>"
        row["transcript"][-1]["text"] = row["final_text"]
    (folder / "1" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    html = write_view(folder, tmp_path)
    view = open_page(html)
    scripts = view.eval_on_selector_all("script", "nodes => nodes.length")

    def no_harm(where: str):
        view.eval_on_selector_all("details", "nodes => nodes.forEach(d => { d.open = true; })")
        view.eval_on_selector_all("button.unfold", "buttons => buttons.forEach(b => b.click())")
        assert view.evaluate("window.__pwned") is None, where
        assert view.eval_on_selector_all("a[href^='javascript'], [onerror]", "nodes => nodes.length") == 0, where
        bold = "nodes => nodes.filter(b => /^(bold|nine)$/.test(b.textContent)).length"
        assert view.eval_on_selector_all("b", bold) == 0, where
        assert view.eval_on_selector_all("script", "nodes => nodes.length") == scripts, where
        assert view.eval_on_selector_all("#app img:not(.pareto)", "nodes => nodes.length") == 0, where

    no_harm("overview")
    view.goto(html.resolve().as_uri() + "#questions")
    view.wait_for_selector("#questions td.qid")
    no_harm("questions")
    assert "L1<img src=x onerror=\"window.__pwned='id'\">" in shown_ids(view)
    hostile_question_seen = False
    for q in range(4):
        view.goto(html.resolve().as_uri() + f"#question/{q}")
        view.wait_for_selector(f"#question[data-q='{q}'] li.call")
        no_harm(f"question {q}")
        body = view.text_content("#question")
        assert HOSTILE_REPLY in body  # shown, as text
        assert "\u2028after a line separator\u2029</script>" in body
        if view.text_content("#question h2") == QUESTIONS[1][0]:  # (answers come back in any order from a server)
            assert QUESTIONS[1][1] in view.text_content(".question-text")
            hostile_question_seen = True
    assert hostile_question_seen


def test_each_repeat_is_shown_on_its_own(tiny_model_dir, open_page, tmp_path):
    from typer.testing import CliRunner

    from mascompare.cli import app

    result = CliRunner().invoke(app, ["run", "method=baseline", "task=arith", "task.limit=2",
                                      f"model.path={tiny_model_dir}", "model.name=tiny", "generation.max_new_tokens=6",
                                      "generation.temperature=1.0", "run.repeats=2", "run.progress=false",
                                      f"run.output_root={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    (samples,) = (tmp_path / "runs").rglob("samples.jsonl")
    rows = latest_rows(samples)
    view = open_page(write_view(tmp_path / "runs", tmp_path), "#questions")
    first = view.text_content("#questions tr.question-row td.qid")
    right = sum(rows[(first, k)]["correct_flexible"] for k in (0, 1))
    assert view.text_content("#questions tr.question-row td.verdict") == f"{right}/2 ✓"
    view.click("#questions tr.question-row")
    for k in (0, 1):
        view.select_option("#repeat", str(k))
        view.wait_for_selector(f"#question .sample[data-repeat='{k}']")
        assert view.text_content("#question pre.reply-text") == rows[(first, k)]["final_text"]
    assert rows[(first, 0)]["final_text"] != rows[(first, 1)]["final_text"]  # sampled with their own seeds
