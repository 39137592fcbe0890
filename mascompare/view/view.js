// The viewer's page: Overview, Questions, and one question across methods.
// Every text from the records reaches the page as a text node or an attribute value, never as markup:
// nothing here assigns innerHTML, and the only links are the page's own "#..." routes.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("mascompare-index").textContent);
  const TEXTS = DATA.texts;
  const S = DATA.samples; // one array per field, one entry per sample line (run, question, repeat)
  const RUNS = DATA.runs;
  const GROUPS = DATA.groups;
  const QUESTIONS = DATA.questions;
  const PAGE_SIZE = 100;
  const FOLD_CHARS = 1200;
  const FOLD_LINES = 16;
  const KEPT_CHUNKS = 24;
  const app = document.getElementById("app");

  // ---------------------------------------------------------------- building the page from text

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    append(node, ...children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setProps(node, attrs);
    append(node, ...children);
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "href") {
        if (!String(value).startsWith("#")) throw new Error("the page links only to its own views");
        node.setAttribute("href", value);
      } else node.setAttribute(key === "className" ? "class" : key, value === true ? "" : String(value));
    }
  }

  function append(node, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function text(ref, local) {
    // A text as stored in the page's data: inline, or an index into the shared (>= 0) or the sample's own table
    if (typeof ref !== "number") return ref;
    return ref >= 0 ? TEXTS[ref] : local[-1 - ref];
  }

  function lines(value) {
    let count = 1;
    for (let i = value.indexOf("\n"); i >= 0; i = value.indexOf("\n", i + 1)) count++;
    return count;
  }

  function folded(value, className) {
    // Long texts start folded, with a button to show them whole
    const block = h("pre", { className: "text " + (className || "") }, value);
    if (value.length <= FOLD_CHARS && lines(value) <= FOLD_LINES) return block;
    block.classList.add("folded");
    const button = h("button", { type: "button", className: "unfold" },
      `show all (${lines(value).toLocaleString()} lines, ${value.length.toLocaleString()} characters)`);
    button.addEventListener("click", () => {
      const open = block.classList.toggle("folded");
      button.textContent = open ? `show all (${lines(value).toLocaleString()} lines)` : "fold";
    });
    return h("div", { className: "foldable" }, block, button);
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number") return String(value);
    if (digits !== undefined) return value.toFixed(digits);
    return Math.abs(value) >= 100 ? Math.round(value).toLocaleString() : String(Math.round(value * 10) / 10);
  }

  function plural(n, word) {
    return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
  }

  // ---------------------------------------------------------------- the samples of a question

  const byQuestion = QUESTIONS.map(() => new Map()); // question -> run -> sample indices, by repeat
  for (let s = 0; s < S.run.length; s++) {
    const cell = byQuestion[S.q[s]];
    if (!cell.has(S.run[s])) cell.set(S.run[s], []);
    cell.get(S.run[s]).push(s);
  }
  for (const cell of byQuestion) for (const list of cell.values()) list.sort((a, b) => S.rep[a] - S.rep[b]);

  function verdict(q, run, metric) {
    // {n answered, right, failed} over a question's repeats in one run; null where the run lacks the question
    const list = byQuestion[q].get(run);
    if (!list) return null;
    const right = metric === "strict" ? S.ok_s : S.ok_f;
    const result = { n: 0, right: 0, failed: 0, samples: list };
    for (const s of list) {
      if (S.err[s] !== null) result.failed++;
      else { result.n++; result.right += right[s]; }
    }
    return result;
  }

  const isRight = (v) => v && v.n > 0 && v.right === v.n;
  const isWrong = (v) => v && v.n > 0 && v.right === 0;

  function verdictText(v) {
    if (!v) return "—";
    if (v.n === 0) return "failed";
    if (v.samples.length === 1) return v.right ? "✓" : "✗";
    return `${v.right}/${v.n} ✓` + (v.failed ? ` +${v.failed} failed` : "");
  }

  function verdictClass(v) {
    if (!v || v.n === 0) return v ? "failed" : "missing";
    return v.right === v.n ? "right" : v.right === 0 ? "wrong" : "mixed";
  }

  function mean(list, column) {
    if (!list || !list.length) return null;
    let total = 0;
    for (const s of list) total += column[s];
    return total / list.length;
  }

  // ---------------------------------------------------------------- transcripts, parsed when first shown

  const chunks = new Map();

  function chunkOf(sample) {
    let low = 0, high = DATA.chunks.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (DATA.chunks[mid] <= sample) low = mid; else high = mid - 1;
    }
    return low;
  }

  function detail(sample) {
    // The sample's transcript, or undefined while the page is still reading the part of the file that holds it
    const k = chunkOf(sample);
    if (!chunks.has(k)) {
      const node = document.getElementById("mascompare-details-" + k);
      if (!node) return undefined;
      chunks.set(k, JSON.parse(node.textContent));
      if (chunks.size > KEPT_CHUNKS) chunks.delete(chunks.keys().next().value);
    }
    return chunks.get(k)[sample - DATA.chunks[k]];
  }

  // ---------------------------------------------------------------- the views and what they show

  const state = {
    group: 0, metric: DATA.metric, filter: "all", a: null, b: null, search: "",
    sort: { key: "order", descending: false }, page: 0, repeat: 0, shown: null,
  };

  function groupRuns() {
    return GROUPS[state.group].runs;
  }

  function route() {
    const hash = decodeURIComponent(location.hash.slice(1));
    const parts = hash.split("/");
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.view === parts[0]);
    window.scrollTo(0, 0);
    if (parts[0] === "questions") return show(questionsView());
    if (parts[0] === "question" && /^\d+$/.test(parts[1] || "") && +parts[1] < QUESTIONS.length) {
      return show(questionView(+parts[1]));
    }
    document.querySelector('nav a[data-view="overview"]').classList.add("current");
    show(overviewView());
    performance.mark("mascompare:overview");
  }

  function show(view) {
    app.replaceChildren(view);
  }

  // ---------------------------------------------------------------- Overview

  function labelledTable(part, labelColumns) {
    // report.py's figures: the label columns left-aligned, the numbers right-aligned
    return h("table", { className: "figures" },
      h("thead", null, h("tr", null, part.header.map((cell, i) => h("th", { className: i < labelColumns ? "label" : "" }, cell)))),
      h("tbody", null, part.rows.map((row, r) => h("tr", { "data-run": part.runs[r] },
        row.map((cell, i) => h("td", { className: i < labelColumns ? "label" : "" }, cell))))));
  }

  function overviewView() {
    const view = h("section", { id: "overview" });
    append(view, h("h2", null, "Overview"), h("p", { className: "lede" }, DATA.description));
    GROUPS.forEach((group, g) => {
      const section = h("section", { className: "group", "data-group": g },
        h("h3", null, `${group.task} · ${group.model}`),
        labelledTable(group.runs_table, group.label_columns));
      if (group.paired_table) {
        append(section, h("h4", null, "Paired statistics"), labelledTable(group.paired_table, group.label_columns),
          h("p", { className: "caption" }, group.caption));
      }
      if (group.warnings.length) append(section, h("ul", { className: "warnings" }, group.warnings.map((w) => h("li", null, h("b", null, "warning: "), w))));
      if (group.notes.length) append(section, h("ul", { className: "notes" }, group.notes.map((n) => h("li", null, n))));
      append(section, h("p", null, h("a", { href: "#questions", onclick: () => { state.group = g; state.page = 0; } },
        `${plural(group.questions.length, "question")}, each method's answers →`)));
      view.append(section);
    });
    if (DATA.failures.length) {
      append(view, h("h3", null, "Failed jobs"), h("ul", { className: "warnings" }, DATA.failures.map((f) => h("li", null, f))));
    }
    if (DATA.pareto && DATA.pareto.startsWith("data:image/png;base64,")) {
      append(view, h("h3", null, "Accuracy against cost"),
        h("img", { className: "pareto", src: DATA.pareto, alt: "accuracy against decoded tokens and seconds per sample, one point per run, the Pareto front dashed" }));
    }
    append(view, h("h3", null, "Runs"), runsList(), h("h3", null, "Environment"), environmentTable());
    return view;
  }

  function runsList() {
    return h("div", { className: "runs" }, RUNS.map((run, r) => h("div", { className: "run", "data-run": r },
      h("div", { className: "run-label" }, run.label),
      h("div", { className: "muted" }, `${run.status || "status unknown"} · ${run.dir}`),
      run.warning ? h("div", { className: "warning" }, run.warning) : null,
      run.graph ? graphView(run.graph) : null)));
  }

  function environmentTable() {
    // One row per environment key, one column per run: the keys whose values differ, then the rest folded
    const keys = new Set();
    for (const run of RUNS) for (const key of Object.keys(run.environment || {})) keys.add(key);
    const value = (run, key) => (run.environment || {})[key] ?? "—";
    const differs = (key) => new Set(RUNS.map((run) => value(run, key))).size > 1;
    const sorted = [...keys].sort();
    const differing = sorted.filter(differs), same = sorted.filter((key) => !differs(key));
    const envTable = (list, className) => h("div", { className: "scroll" }, h("table", { className: "figures environment " + className },
      h("thead", null, h("tr", null, h("th", { className: "label" }, "key"), RUNS.map((run) => h("th", { className: "label" }, run.label)))),
      h("tbody", null, list.map((key) => h("tr", null, h("td", { className: "label" }, key), RUNS.map((run) => h("td", { className: "label" }, value(run, key))))))));
    return h("div", null,
      differing.length ? [h("p", { className: "warning" }, `${plural(differing.length, "setting")} ${differing.length === 1 ? "differs" : "differ"} between runs:`), envTable(differing, "differs")]
        : h("p", { className: "muted" }, "Every run had the same environment."),
      same.length ? h("details", null, h("summary", null, `${plural(same.length, "setting")} the same in every run`), envTable(same, "same")) : null);
  }

  // ---------------------------------------------------------------- the pruned methods' graph, drawn small

  let markers = 0;

  function graphView(graph) {
    const agents = graph.agents;
    const layer = new Map(agents.map((a) => [a, 0]));
    const inner = graph.edges.filter(([a, b]) => layer.has(a) && layer.has(b));
    for (let pass = 0; pass < agents.length; pass++) { // longest path from the agents nobody feeds
      for (const [a, b] of inner) if (layer.get(b) < layer.get(a) + 1) layer.set(b, layer.get(a) + 1);
    }
    const depth = Math.max(0, ...layer.values()) + 1;
    const nodes = agents.map((a) => ({ name: a, layer: Math.min(layer.get(a), depth - 1) }));
    if (graph.final) nodes.push({ name: graph.final, layer: depth, final: true });
    const rows = new Map();
    for (const node of nodes) {
      node.row = rows.get(node.layer) || 0;
      rows.set(node.layer, node.row + 1);
    }
    const W = 96, H = 22, GAP_X = 10, GAP_Y = 22;
    const widest = Math.max(...rows.values());
    const width = widest * (W + GAP_X) - GAP_X + 4;
    const place = new Map();
    for (const node of nodes) {
      const span = rows.get(node.layer) * (W + GAP_X) - GAP_X;
      node.x = 2 + (width - 4 - span) / 2 + node.row * (W + GAP_X);
      node.y = 2 + node.layer * (H + GAP_Y);
      place.set(node.name, node);
    }
    const height = 4 + (Math.max(...nodes.map((n) => n.layer)) + 1) * (H + GAP_Y) - GAP_Y;
    const id = "arrow" + (markers++);
    const finalEdges = !graph.final ? [] : graph.final_reads === "all" ? agents.map((a) => [a, graph.final])
      : graph.edges.filter(([, b]) => b === graph.final);
    const drawn = [...inner, ...finalEdges];
    const picture = svg("svg", { className: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" },
      svg("title", null, `who reads whom: ${drawn.map(([a, b]) => `${a} → ${b}`).join(", ") || "no edges"}`),
      svg("defs", null, svg("marker", { id, viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" },
        svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#5b6b7f" }))),
      drawn.map(([a, b]) => {
        const from = place.get(a), to = place.get(b);
        if (!from || !to) return null;
        const x1 = from.x + W / 2, y1 = from.y + H, x2 = to.x + W / 2, y2 = to.y;
        const bend = ` C ${x1} ${(y1 + y2) / 2}, ${x2} ${(y1 + y2) / 2},`;
        return svg("path", { d: `M ${x1} ${y1}${bend} ${x2} ${y2}`, fill: "none", stroke: b === graph.final ? "#9aa5b1" : "#5b6b7f", "stroke-width": 1.3, "marker-end": `url(#${id})` });
      }),
      nodes.map((node) => svg("g", null,
        svg("rect", { x: node.x, y: node.y, width: W, height: H, rx: 5, fill: node.final ? "#fdf3d8" : "#e8eef6", stroke: "#5b6b7f" }),
        svg("text", { x: node.x + W / 2, y: node.y + H / 2 + 4, "text-anchor": "middle", "font-size": 11 },
          node.name.length > 14 ? node.name.slice(0, 13) + "…" : node.name))));
    const temporal = graph.temporal.length
      ? h("div", { className: "muted" }, "from the previous round: " + graph.temporal.map(([a, b]) => `${a} → ${b}`).join(", "))
      : null;
    return h("figure", { className: "graph-figure" }, picture,
      h("figcaption", { className: "muted" }, graph.summary || "", graph.final ? ` · ${graph.final} reads ${graph.final_reads === "all" ? "every agent" : "its kept in-edges"}` : ""),
      temporal);
  }

  // ---------------------------------------------------------------- Questions

  const FILTERS = [
    ["all", "all questions"],
    ["ab", "one method right, another wrong"],
    ["all-wrong", "all methods wrong"],
    ["all-right", "all methods right"],
    ["disagree", "methods disagree"],
    ["cut-off", "a call cut off at max_new_tokens"],
    ["failed", "a sample failed"],
  ];

  let haystacks = null;

  function haystack(q) {
    // What the search looks through: id, question, target, and every run's extracted answers and errors
    if (!haystacks) haystacks = [];
    if (haystacks[q] === undefined) {
      const question = QUESTIONS[q];
      const parts = [question.id, text(question.text), question.target];
      for (const list of byQuestion[q].values()) for (const s of list) parts.push(S.ans_s[s], S.ans_f[s], S.err[s]);
      haystacks[q] = parts.filter((p) => p !== null && p !== undefined).join("\n").toLowerCase();
    }
    return haystacks[q];
  }

  function keep(q) {
    const runs = groupRuns();
    const metric = state.metric;
    switch (state.filter) {
      case "ab":
        return state.a !== null && state.b !== null && isRight(verdict(q, state.a, metric)) && isWrong(verdict(q, state.b, metric));
      case "all-wrong":
        return runs.every((r) => { const v = verdict(q, r, metric); return !v || isWrong(v); }) && runs.some((r) => isWrong(verdict(q, r, metric)));
      case "all-right":
        return runs.every((r) => { const v = verdict(q, r, metric); return !v || isRight(v); }) && runs.some((r) => isRight(verdict(q, r, metric)));
      case "disagree":
        return runs.some((r) => isRight(verdict(q, r, metric))) && runs.some((r) => isWrong(verdict(q, r, metric)));
      case "cut-off":
        return runs.some((r) => (byQuestion[q].get(r) || []).some((s) => S.cut[s] > 0));
      case "failed":
        return runs.some((r) => (byQuestion[q].get(r) || []).some((s) => S.err[s] !== null));
      default:
        return true;
    }
  }

  function naturalCompare(a, b) {
    return a.localeCompare(b, undefined, { numeric: true });
  }

  function sortValue(q, key) {
    const [run, what] = key.split(":");
    const list = byQuestion[q].get(+run);
    if (!list) return null;
    if (what === "verdict") { const v = verdict(q, +run, state.metric); return v.n ? v.right / v.n : -1; }
    if (what === "tokens") return mean(list, S.out);
    if (what === "time") return mean(list, S.t);
    return null;
  }

  function shownQuestions() {
    // The group's questions that pass the filter and the search, in the chosen order
    const needle = state.search.trim().toLowerCase();
    let shown = GROUPS[state.group].questions.filter((q) => keep(q) && (!needle || haystack(q).includes(needle)));
    const { key, descending } = state.sort;
    if (key === "id") shown.sort((a, b) => naturalCompare(QUESTIONS[a].id, QUESTIONS[b].id));
    else if (key !== "order") {
      const values = new Map(shown.map((q) => [q, sortValue(q, key)]));
      shown.sort((a, b) => {
        const x = values.get(a), y = values.get(b);
        if (x === null || y === null) return (x === null) - (y === null);
        return x - y;
      });
    }
    if (descending) shown.reverse();
    state.shown = shown;
    return shown;
  }

  function select(options, value, onchange, props) {
    const node = h("select", props, options.map(([v, label]) => h("option", { value: v }, label)));
    node.value = String(value);
    node.addEventListener("change", () => onchange(node.value));
    return node;
  }

  function questionsView() {
    const runs = groupRuns();
    if (state.a === null || !runs.includes(state.a)) state.a = runs[runs.length > 1 ? 1 : 0];
    if (state.b === null || !runs.includes(state.b)) state.b = runs[0];
    const view = h("section", { id: "questions" });
    const list = h("div", { id: "question-list" });
    const rerender = () => { state.page = 0; renderList(list); };
    const runOptions = runs.map((r) => [r, RUNS[r].label]);
    const pair = h("span", { className: "pair", hidden: state.filter !== "ab" },
      select(runOptions, state.a, (v) => { state.a = +v; rerender(); }, { id: "filter-a", "aria-label": "right" }),
      " right, ",
      select(runOptions, state.b, (v) => { state.b = +v; rerender(); }, { id: "filter-b", "aria-label": "wrong" }),
      " wrong");
    const search = h("input", { type: "search", id: "search", placeholder: "search ids, questions, targets, answers", value: state.search });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.search = search.value; rerender(); }, 150);
    });
    const toolbar = h("div", { className: "toolbar" },
      GROUPS.length > 1 ? select(GROUPS.map((g, i) => [i, `${g.task} · ${g.model}`]), state.group,
        (v) => { state.group = +v; state.a = state.b = null; state.sort = { key: "order", descending: false }; route(); }, { id: "group" }) : null,
      h("label", null, "accuracy ", select([["strict", "strict"], ["flexible", "flexible"]], state.metric,
        (v) => { state.metric = v; rerender(); }, { id: "metric" })),
      h("label", null, "show ", select(FILTERS, state.filter, (v) => { state.filter = v; pair.hidden = v !== "ab"; rerender(); }, { id: "filter" })),
      pair, search);
    append(view, h("h2", null, "Questions"), toolbar, list);
    renderList(list);
    return view;
  }

  function sortHeader(label, key, title, props) {
    const active = state.sort.key === key;
    return h("th", {
      ...props, className: "sortable" + (active ? " sorted" : "") + (props && props.className ? " " + props.className : ""),
      title: title || "sort by " + label, "data-sort": key,
      onclick: () => {
        state.sort = { key, descending: active ? !state.sort.descending : false };
        renderList(document.getElementById("question-list"));
      },
    }, label, active ? (state.sort.descending ? " ▼" : " ▲") : "");
  }

  function renderList(list) {
    const runs = groupRuns();
    const shown = shownQuestions();
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PAGE_SIZE;
    const page = shown.slice(first, first + PAGE_SIZE);
    const answers = state.metric === "strict" ? S.ans_s : S.ans_f;
    const head = h("thead", null,
      h("tr", null, sortHeader("id", "id", "sort by id", { rowspan: 2, className: "label" }), h("th", { rowspan: 2, className: "label" }, "question"),
        runs.map((r) => h("th", { colspan: 4, className: "run-head", title: RUNS[r].label }, RUNS[r].label))),
      h("tr", null, runs.map((r) => [sortHeader("✓", `${r}:verdict`, "sort by share right"), h("th", { className: "label" }, "answer"),
        sortHeader("tokens", `${r}:tokens`, "sort by decoded tokens"), sortHeader("s", `${r}:time`, "sort by seconds")])));
    const body = h("tbody", null, page.map((q, i) => {
      const question = QUESTIONS[q];
      const open = () => { location.hash = "#question/" + q; };
      return h("tr", { className: "question-row", "data-q": q, onclick: open, tabindex: 0, onkeydown: (e) => { if (e.key === "Enter") open(); } },
        h("td", { className: "label qid" }, question.id),
        h("td", { className: "label qtext" }, snippet(text(question.text) || "")),
        runs.map((r) => {
          const v = verdict(q, r, state.metric);
          const samples = v ? v.samples : [];
          const cut = samples.some((s) => S.cut[s] > 0);
          const distinct = [...new Set(samples.map((s) => answers[s] ?? "—"))];
          return [
            h("td", { className: "verdict " + verdictClass(v) }, verdictText(v)),
            h("td", { className: "label answer", title: distinct.join(" | ") }, v ? (distinct.length === 1 ? distinct[0] : `${distinct.length} answers`) : "",
              cut ? h("span", { className: "cut", title: "a call stopped at max_new_tokens" }, " ✂") : null),
            h("td", null, v ? fmt(mean(samples, S.out)) : ""),
            h("td", null, v ? fmt(mean(samples, S.t), 2) : ""),
          ];
        }));
    }));
    const pager = h("div", { className: "pager" },
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page--; renderList(list); } }, "← previous"),
      h("span", { id: "count" }, shown.length
        ? `${(first + 1).toLocaleString()}–${(first + page.length).toLocaleString()} of ${plural(shown.length, "question")}`
          + (shown.length < GROUPS[state.group].questions.length ? ` (of ${GROUPS[state.group].questions.length.toLocaleString()})` : "")
        : "no question matches"),
      h("button", { type: "button", disabled: state.page >= pages - 1, onclick: () => { state.page++; renderList(list); } }, "next →"));
    list.replaceChildren(h("div", { className: "scroll" }, h("table", { className: "questions" }, head, body)), pager);
  }

  function snippet(value) {
    const flat = value.replace(/\s+/g, " ").trim();
    return flat.length > 140 ? flat.slice(0, 139) + "…" : flat;
  }

  // ---------------------------------------------------------------- A question across methods

  function questionView(q) {
    const question = QUESTIONS[q];
    const group = GROUPS[question.group];
    if (state.group !== question.group) { state.group = question.group; state.shown = null; }
    const order = state.shown && state.shown.includes(q) ? state.shown : group.questions;
    const at = order.indexOf(q);
    const go = (k) => { if (order[k] !== undefined) location.hash = "#question/" + order[k]; };
    let repeats = 0;
    for (const list of byQuestion[q].values()) repeats = Math.max(repeats, list.length);
    state.repeat = Math.min(state.repeat, Math.max(0, repeats - 1));
    const view = h("section", { id: "question", "data-q": q });
    const nav = h("div", { className: "toolbar" },
      h("a", { href: "#questions" }, "← questions"),
      h("button", { type: "button", id: "previous", disabled: at <= 0, onclick: () => go(at - 1) }, "← previous"),
      h("span", { className: "muted" }, `${(at + 1).toLocaleString()} of ${order.length.toLocaleString()}`),
      h("button", { type: "button", id: "next", disabled: at >= order.length - 1, onclick: () => go(at + 1) }, "next →"),
      repeats > 1 ? h("label", null, " repeat ", select([...Array(repeats).keys()].map((k) => [k, String(k)]), state.repeat,
        (v) => { state.repeat = +v; route(); }, { id: "repeat" })) : null);
    const questionText = text(question.text);
    append(view, nav,
      h("h2", null, question.id),
      h("div", { className: "question-text" }, questionText !== null && questionText !== undefined ? folded(questionText)
        : h("p", { className: "muted" }, "The records keep only a hash of this question; its text is in each call's messages below.")),
      h("p", null, h("b", null, "target: "), h("code", { className: "target" }, question.target ?? "—")));
    const columns = h("div", { className: "columns" });
    let waiting = false;
    for (const r of group.runs) {
      const list = byQuestion[q].get(r);
      const s = list ? list[Math.min(state.repeat, list.length - 1)] : undefined;
      const column = h("div", { className: "run-column", "data-run": r }, h("h3", { className: "run-label" }, RUNS[r].label));
      if (s === undefined) append(column, h("p", { className: "muted" }, "This run has no answer to this question."));
      else {
        const sample = detail(s);
        if (sample === undefined) { waiting = true; append(column, h("p", { className: "muted" }, "reading the transcripts…")); }
        else append(column, sampleView(s, sample, RUNS[r]));
      }
      columns.append(column);
    }
    view.append(columns);
    if (waiting) document.addEventListener("DOMContentLoaded", () => route(), { once: true });
    return view;
  }

  function sampleView(s, sample, run) {
    const local = sample.texts || [];
    const part = h("div", { className: "sample", "data-sample": s, "data-repeat": S.rep[s] });
    const verdicts = ["strict", "flexible"].map((kind) => {
      const ok = kind === "strict" ? S.ok_s[s] : S.ok_f[s];
      const answer = kind === "strict" ? S.ans_s[s] : S.ans_f[s];
      return h("div", { className: "verdict-line " + (S.err[s] !== null ? "failed" : ok ? "right" : "wrong") },
        h("b", null, `${kind}: `), S.err[s] !== null ? "failed" : ok ? "✓ right" : "✗ wrong",
        " · answer ", h("code", { className: "answer-" + kind }, answer ?? "none extracted"));
    });
    append(part, h("div", { className: "outcome" }, verdicts,
      h("div", { className: "muted" }, `${fmt(S.out[s])} decoded · ${fmt(S.inp[s])} input tokens`
        + (S.lat[s] ? ` · ${fmt(S.lat[s])} latent steps` : "") + ` · ${plural(S.calls[s], "call")} · ${fmt(S.t[s], 2)} s`
        + (S.cut[s] ? ` · ${S.cut[s]} cut off at max_new_tokens` : ""))));
    if (S.err[s] !== null) append(part, h("div", { className: "error" }, h("b", null, "error: "), S.err[s]));
    if (run.graph) part.append(graphView(run.graph));
    if (sample.sandbox) part.append(sandboxView(sample.sandbox));
    const calls = h("ol", { className: "calls" }, (sample.calls || []).map((call, i, all) => callView(call, i === all.length - 1 && text(call.reply, local) === text(sample.final, local), local)));
    append(part, h("h4", null, `${plural((sample.calls || []).length, "call")}, in order`), calls);
    const final = text(sample.final, local);
    const last = (sample.calls || []).length ? text(sample.calls[sample.calls.length - 1].reply, local) : null;
    if (final !== null && final !== undefined && final !== last) append(part, h("h4", null, "final text"), folded(final, "final-text"));
    if (sample.metadata) append(part, h("details", null, h("summary", null, "metadata"), h("pre", { className: "text" }, JSON.stringify(sample.metadata, null, 2))));
    return part;
  }

  function received(call) {
    // The KV positions a latent agent received, and from whom where the record says
    const from = call.kv_received_from;
    if (from && typeof from === "object") {
      // {agent: positions}: the record's schema checks that every count is a non-negative integer
      const parts = Object.entries(from).map(([agent, positions]) => `${agent} (${fmt(positions)} positions)`);
      if (parts.length) return "KV from " + parts.join(", ");
    }
    return call.kv_positions_received ? `${fmt(call.kv_positions_received)} KV positions received` : null;
  }

  function callView(call, last, local) {
    const latent = call.latent_steps > 0 && (call.reply === null || call.reply === undefined || call.reply === "");
    const meta = [
      call.input_tokens !== null && call.input_tokens !== undefined ? `${fmt(call.input_tokens)} in` : null,
      call.output_tokens ? `${fmt(call.output_tokens)} out` : null,
      call.latent_steps ? `${plural(call.latent_steps, "latent step")}` : null,
      received(call),
      call.finish_reason ? `finish: ${call.finish_reason}` : null,
      call.seed !== null && call.seed !== undefined ? `seed ${call.seed}` : null,
      call.time_s !== null && call.time_s !== undefined ? `${fmt(call.time_s, 2)} s` : null,
      call.cost_usd !== null && call.cost_usd !== undefined ? `$${call.cost_usd.toFixed(5)}` : null,
    ].filter(Boolean).join(" · ");
    const reply = text(call.reply, local);
    return h("li", { className: "call" + (call.finish_reason === "length" ? " cut-off" : ""), "data-agent": call.agent, "data-round": call.round },
      h("div", { className: "call-head" },
        h("span", { className: "agent" }, call.agent ?? "?"),
        call.role && call.role !== call.agent ? h("span", { className: "role" }, ` (${call.role})`) : null,
        call.round !== null && call.round !== undefined ? h("span", { className: "muted" }, ` · round ${call.round}`) : null,
        call.phase && call.phase !== "eval" ? h("span", { className: "muted" }, ` · ${call.phase}`) : null),
      h("div", { className: "call-meta muted" }, meta),
      (call.messages || []).map(([role, parts]) => {
        const content = parts.map((p) => text(p, local)).join("\n\n");
        return h("details", { className: "message", "data-role": role },
          h("summary", null, h("span", { className: "msg-role" }, role), ` · ${content.length.toLocaleString()} characters`),
          h("pre", { className: "text" }, content));
      }),
      latent ? h("div", { className: "latent" }, `thought in latent space for ${plural(call.latent_steps, "step")}; no text`)
        : reply !== null && reply !== undefined ? h("div", { className: "reply" }, h("div", { className: "muted" }, last ? "reply (the final text)" : "reply"), folded(reply, "reply-text"))
          : h("div", { className: "muted" }, "no reply recorded"));
  }

  function sandboxView(sandbox) {
    return h("div", { className: "sandbox" }, h("h4", null, "in the sandbox"),
      ["strict", "flexible"].filter((k) => sandbox[k]).map((kind) => {
        const run = sandbox[kind];
        return h("div", { className: "sandbox-run", "data-kind": kind },
          h("div", null, h("b", null, `${kind}: `), `${run.ending ?? "?"} · ${run.status ?? ""}`, run.seconds !== null && run.seconds !== undefined ? ` · ${fmt(run.seconds, 2)} s` : ""),
          run.stdout ? [h("div", { className: "muted" }, "stdout"), folded(run.stdout, "stdout")] : null,
          run.stderr ? [h("div", { className: "muted" }, "stderr"), folded(run.stderr, "stderr")] : null);
      }));
  }

  // ---------------------------------------------------------------- start

  document.addEventListener("keydown", (event) => {
    if (!location.hash.startsWith("#question/") || event.target.closest("input, select, textarea")) return;
    if (event.key === "ArrowRight") document.getElementById("next")?.click();
    if (event.key === "ArrowLeft") document.getElementById("previous")?.click();
  });
  window.addEventListener("hashchange", route);
  route();
})();
