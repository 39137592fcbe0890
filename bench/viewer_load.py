"""How fast view.html opens in headless Chromium: the smoke sweep, and a generated folder of 10,000 samples.

The smoke sweep is the one `make run` writes (all five methods, 8 arith questions, the embedded model).
The large folder has the same five runs scaled to --questions questions each (5 x 2,000 = 10,000 sample
lines by default): each line is one of the smoke sweep's lines with its own question, its own replies
(lengthened to --reply-chars characters per call, as a real model's are) and a seeded random verdict,
written through the runner's own store (results.RunStore), so that prompts.jsonl shares paragraphs as
in a real run.

For each folder: the time to write view.html (process CPU time of `view.write`), its size, then in one
Chromium (Debian's, through Playwright) --repeats fresh page loads from file://, each measuring, from the
start of navigation: the overview drawn (the page's own performance mark), the load event (the whole file
parsed), the question list shown, and a question page shown (its transcripts parsed on first use, the
last question so its data sits at the end of the file), and the longest task that blocked the page's
main thread while it opened. Medians; the machine is shared, so they are wall-clock times of a busy
machine.

    python bench/viewer_load.py [--smoke results/multirun/experiment_smoke-...] [--screenshots docs/]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mascompare import report
from mascompare.identity import short_hash
from mascompare.records import SampleRecord
from mascompare.store import PROMPTS_FILE, RUN_FILE, SAMPLES_FILE, RunStore, expand_messages, latest_records, read_texts
from mascompare.store import read_run as read_run_json
from mascompare.view import page
from mascompare.view.records import read_run

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LONGEST_TASK = """
window.__longestTask = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longestTask = Math.max(window.__longestTask, entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def generate(smoke: Path, out: Path, questions: int, reply_chars: int, seed: int = 0) -> Path:
    """The smoke sweep's runs, each answering `questions` generated questions."""
    rng = random.Random(seed)
    words = "the team worked out each step then checked the sum against the facts given in the problem".split()
    for run_json in sorted(smoke.glob(f"*/{RUN_FILE}")):
        source = run_json.parent
        target = out / source.name
        target.mkdir(parents=True)
        shutil.copy(run_json, target / RUN_FILE)
        for extra in ("masks.json",):
            if (source / extra).is_file():
                shutil.copy(source / extra, target / extra)
        texts = read_texts(source)
        templates = [record.to_json() for record in latest_records(source).values()]
        asked = [sample.question for sample in read_run(source, read_run_json(source)).samples]
        store = RunStore(target)
        for k in range(questions):
            template, old_question = templates[k % len(templates)], asked[k % len(templates)]
            numbers = random.Random(k)  # the same question k in every run, so that the runs pair up
            a, b = numbers.randint(2, 999), numbers.randint(2, 999)
            question = f"Problem {k}: Ana has {a} marbles and Ben gives her {b} more. How many marbles does she have?"

            def reply(text: str | None) -> str | None:
                if not text:
                    return text
                filler = " ".join(rng.choice(words) for _ in range(reply_chars // 5))
                return f"{text} ({k}) {filler}"[:max(reply_chars, len(text))]

            transcript = [{**turn, "text": reply(turn["text"])} for turn in template["transcript"]]
            calls = []
            for call in template["agents"]:
                messages = expand_messages(call["messages"], texts)
                if old_question:
                    messages = [{**m, "content": m["content"].replace(old_question, question)} for m in messages]
                calls.append({**call, "sample_id": f"gen-{k:05d}", "messages": messages})
            right = rng.random() < 0.4
            store.append(SampleRecord.from_json({
                **template, "id": f"gen-{k:05d}", "question_hash": short_hash(question), "target": str(a + b),
                "final_text": transcript[-1]["text"] if transcript else None,
                "extracted_flexible": str(a + b) if right else str(a + b + 1),
                "correct_flexible": right, "correct_strict": right and rng.random() < 0.5,
                "transcript": transcript, "agents": calls}))
    return out


def write_view(folder: Path) -> tuple[Path, float]:
    start = time.process_time()
    path = page.write(report.compare(report.collect([folder])), folder)
    return path, time.process_time() - start


def measure(browser, html: Path, questions: int, repeats: int, screenshots: Path | None) -> dict:
    results = []
    for k in range(repeats):
        context = browser.new_context(viewport={"width": 1500, "height": 1000})
        context.add_init_script(LONGEST_TASK)
        view = context.new_page()
        errors = []
        view.on("pageerror", lambda error: errors.append(str(error)))
        start = time.perf_counter()
        view.goto(html.resolve().as_uri(), wait_until="commit")
        view.wait_for_selector("#overview table.figures")
        overview_seen = time.perf_counter() - start
        view.wait_for_load_state("load")
        timing = view.evaluate("""() => ({
            overview: performance.getEntriesByName("mascompare:overview")[0].startTime,
            load: performance.getEntriesByType("navigation")[0].loadEventEnd })""")
        if screenshots and k == 0:
            view.screenshot(path=str(screenshots / "view-overview.png"), full_page=True)
        start = time.perf_counter()
        view.click("nav a[data-view='questions']")
        view.wait_for_selector("#questions tr.question-row")
        shown_list = time.perf_counter() - start
        count = view.text_content("#count")
        timings = {}
        for name, q in (("question_ms", 0), ("last_question_ms", questions - 1)):
            start = time.perf_counter()
            view.evaluate(f"() => {{ location.hash = '#question/{q}'; }}")
            view.wait_for_selector(f"#question[data-q='{q}'] .run-column li.call")
            timings[name] = 1000 * (time.perf_counter() - start)
        if screenshots and k == 0:
            view.evaluate("() => { location.hash = '#question/1'; }")
            view.wait_for_selector("#question[data-q='1'] .run-column li.call")
            view.screenshot(path=str(screenshots / "view-question.png"))
        results.append({"overview_ms": timing["overview"], "overview_seen_ms": 1000 * overview_seen,
                        "load_ms": timing["load"], "questions_ms": 1000 * shown_list, **timings,
                        "longest_task_ms": view.evaluate("() => window.__longestTask"), "errors": errors,
                        "count": count})
        context.close()
    return {key: statistics.median(r[key] for r in results) if key.endswith("_ms") else results[0][key]
            for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", type=Path, default=None, help="the smoke sweep (default: the newest "
                                                                  "results/multirun/experiment_smoke-*)")
    parser.add_argument("--questions", type=int, default=2000, help="questions per run in the large folder")
    parser.add_argument("--reply-chars", type=int, default=1000, help="characters per reply in the large folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="save the smoke sweep's overview and a question page here")
    args = parser.parse_args()
    smoke = args.smoke or max(Path("results/multirun").glob("experiment_smoke-*"), key=lambda p: p.stat().st_mtime,
                              default=None)
    if smoke is None or not any(smoke.glob(f"*/{RUN_FILE}")):
        parser.error("no smoke sweep: run `make run` first, or give --smoke PATH")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch:
        folders = {"smoke sweep": Path(scratch) / "smoke"}
        shutil.copytree(smoke, folders["smoke sweep"], ignore=shutil.ignore_patterns("view.html"))
        start = time.process_time()
        large = generate(smoke, Path(scratch) / "large", args.questions, args.reply_chars)
        generated_s = time.process_time() - start
        folders[f"{sum(1 for _ in large.rglob(SAMPLES_FILE)) * args.questions:,} samples"] = large
        print(f"smoke sweep: {smoke}; large folder generated in {generated_s:.0f} s CPU "
              f"({sum(p.stat().st_size for p in large.rglob('*.jsonl')) / 1e6:.1f} MB of samples.jsonl and "
              f"{PROMPTS_FILE})")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
        rows = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            print(f"Chromium {browser.version}, {args.repeats} loads each, medians")
            for name, folder in folders.items():
                html, write_s = write_view(folder)
                shots = args.screenshots if name == "smoke sweep" else None
                questions = len({record.id for run_json in folder.glob(f"*/{RUN_FILE}")
                                 for record in latest_records(run_json.parent).values()})
                rows[name] = {"write_s": write_s, "mb": html.stat().st_size / 1e6,
                              **measure(browser, html, questions, args.repeats, shots)}
            browser.close()
    names = list(rows)
    print(f"\n{'':34}" + "".join(f"{n:>16}" for n in names) + f"{'ratio':>10}")
    for key, label in (("write_s", "view.write, CPU s"), ("mb", "view.html, MB"),
                       ("overview_ms", "overview drawn, ms"), ("overview_seen_ms", "overview seen by the driver, ms"),
                       ("load_ms", "load event, ms"), ("longest_task_ms", "longest main-thread task, ms"),
                       ("questions_ms", "question list shown, ms"), ("question_ms", "first question's page, ms"),
                       ("last_question_ms", "last question's page, ms")):
        values = [rows[n][key] for n in names]
        ratio = values[1] / values[0] if values[0] else float("nan")
        print(f"{label:34}" + "".join(f"{v:>16,.1f}" for v in values) + f"{ratio:>9.1f}x")
    for name in names:
        print(f"{name}: list shows '{rows[name]['count']}'; page errors: {rows[name]['errors'] or 'none'}")
    print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
