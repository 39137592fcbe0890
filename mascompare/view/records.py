"""What the viewer reads of a run folder: `read_run` turns one run directory into the viewer's data.

Everything the page knows about a run's samples passes through this file, so that a change of the
record format (samples.jsonl, prompts.jsonl, masks.json) is met here and nowhere else. It reads
through the store's typed records (mascompare.records), which upgrade older lines; fields a record
lacks (failed samples, calls that were not latent) come out as None.

Message texts come back whole, as the exact paragraphs the call was sent: paragraphs stored once
in prompts.jsonl come back as `SharedText` (a str), which the page stores once for every sample
that uses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mascompare.identity import short_hash
from mascompare.records import RunRecord, SampleRecord, UsageRecord
from mascompare.store import PARAGRAPH, latest_records, read_texts

MASKS_FILE = "masks.json"  # written by the pruned methods next to run.json


class SharedText(str):
    """A paragraph that the run stores once (prompts.jsonl) because several calls send it."""


@dataclass
class Sample:
    """One line of samples.jsonl (the latest for its id and repeat), as the viewer shows it."""

    id: str
    repeat: int
    pair: str  # id and question hash: what the same question is called across runs (as in report.py)
    question: str | None
    target: str | None
    correct_strict: bool
    correct_flexible: bool
    answer_strict: str | None
    answer_flexible: str | None
    output_tokens: int
    input_tokens: int
    latent_steps: int
    calls: int
    time_s: float
    calls_cut_off: int  # calls that stopped at generation.max_new_tokens
    error: str | None
    final_text: str | None
    agent_calls: list[dict] = field(default_factory=list)
    sandbox: dict | None = None  # code tasks: how each extracted program ended
    metadata: dict | None = None


@dataclass
class RunRecords:
    samples: list[Sample]
    graph: dict | None  # the pruned methods' communication graph (see read_graph)


def read_run(directory: str | Path, info: RunRecord, latest: dict | None = None,
             questions: dict[str, str] | None = None) -> RunRecords:
    """The samples (latest line per id and repeat) and graph of a run directory; `info` is its run.json, `latest`
    its latest records where the caller has read them already (store.read_samples(...).latest), `questions` the
    texts of the questions found so far by their hashes, shared by the runs of one page (added to here)."""
    directory = Path(directory)
    shared = {ref: SharedText(text) for ref, text in read_texts(directory).items()}
    questions = {} if questions is None else questions
    missing: set[str] = set()  # the questions whose text this run's messages do not hold
    records = latest_records(directory) if latest is None else latest
    samples = [_sample(record, shared, questions, missing) for record in records.values()]
    return RunRecords(samples, read_graph(directory, info))


def _sample(record: SampleRecord, shared: dict[str, SharedText], questions: dict[str, str],
            missing: set[str]) -> Sample:
    usage = record.usage
    calls = [_call(call, shared) for call in record.agents]
    _attach_replies(calls, record.transcript)
    question_hash = record.question_hash or ""
    if question_hash not in questions and question_hash not in missing:
        question = _recover_question(calls, question_hash)
        if question is None:
            missing.add(question_hash)
        else:
            questions[question_hash] = question
    details = record.score_details or {}
    return Sample(
        id=record.id, repeat=record.repeat, pair=f"{record.id}|{question_hash}",
        question=questions.get(question_hash), target=_text(record.target),
        correct_strict=bool(record.correct_strict), correct_flexible=bool(record.correct_flexible),
        answer_strict=_text(record.extracted_strict), answer_flexible=_text(record.extracted_flexible),
        output_tokens=usage.output_tokens, input_tokens=usage.input_tokens, latent_steps=usage.latent_steps,
        calls=usage.calls or len(calls), time_s=float(usage.wall_time_s or 0.0),
        calls_cut_off=usage.calls_at_max_new_tokens, error=_text(record.error), final_text=_text(record.final_text),
        agent_calls=calls, sandbox=_sandbox(details.get("sandbox")), metadata=record.metadata or None,
    )


def _text(value) -> str | None:
    return None if value is None else str(value)


def _call(call: UsageRecord, shared: dict[str, SharedText]) -> dict:
    return {
        "agent": call.agent, "role": call.role, "round": call.round, "phase": call.phase,
        "messages": [{"role": _text(m.get("role")), "content": _paragraphs(m.get("content"), shared)}
                     for m in call.messages or []],
        "reply": None,
        "finish_reason": call.finish_reason, "seed": call.seed,
        "input_tokens": call.input_tokens, "output_tokens": call.output_tokens, "latent_steps": call.latent_steps,
        "forward_passes": call.forward_passes, "kv_positions_received": call.kv_positions_received,
        "kv_received_from": call.kv_received_from or None,  # {agent: positions}, where recorded
        "time_s": call.wall_time_s, "cost_usd": call.cost_usd, "usage_source": call.usage_source,
    }


def _paragraphs(content, shared: dict[str, SharedText]) -> list[str]:
    """A message's paragraphs as sent (joined with a blank line they give its text); see results.expand_messages."""
    if content is None:
        return []
    if isinstance(content, str):  # a message stored whole
        return content.split(PARAGRAPH)
    return [shared.get(part["ref"], f"[text {part['ref']} is missing from prompts.jsonl]")
            if isinstance(part, dict) else str(part) for part in content]


def _attach_replies(calls: list[dict], transcript: list) -> None:
    """Each call's reply: the transcript's turns, matched to the calls by agent and round, in order."""
    turns: dict[tuple, list] = {}
    for turn in transcript:
        turns.setdefault((turn.agent, turn.round), []).append(turn.text)
    for call in calls:
        waiting = turns.get((call["agent"], call["round"]))
        if waiting:
            call["reply"] = _text(waiting.pop(0))


def _recover_question(calls: list[dict], question_hash: str) -> str | None:
    """The question's text, which a line records only as a hash: the span of the first call's messages
    (whole paragraphs, the first one perhaps after a label line such as "Problem:") whose hash it is."""
    if not question_hash or not calls:
        return None
    for message in calls[0]["messages"]:
        paragraphs = message["content"]
        for i, first in enumerate(paragraphs):
            label_end = first.find("\n")
            for start in (first, first[label_end + 1:]) if label_end >= 0 else (first,):
                candidate = start
                for k in range(i, len(paragraphs)):
                    if k > i:
                        candidate += PARAGRAPH + paragraphs[k]
                    if short_hash(candidate) == question_hash:
                        return candidate
    return None


def _sandbox(sandbox) -> dict | None:
    """How the strict and flexible programs ended: ending, status, seconds, and stdout/stderr where recorded."""
    if not isinstance(sandbox, dict):
        return None
    ended = {}
    for kind in ("strict", "flexible"):
        outcome = sandbox.get(kind)
        if isinstance(outcome, dict):
            ended[kind] = {key: outcome.get(key) for key in ("ending", "status", "seconds", "stdout", "stderr")}
    return ended or None


# ---------------------------------------------------------------- the pruned methods' graph


def read_graph(directory: Path, info: RunRecord) -> dict | None:
    """The graph a pruned method evaluated with, or None for the other methods:
    {"agents", "final", "final_reads" ("all", or "learned": its in-edges are among "edges"),
    "edges": [[from, to], ...] within a round, "temporal": [[from, to], ...] from the round before,
    "summary": one line of edge counts}.

    Edges come from masks.json (the evaluated masks) where it is in the run directory, else from what
    run.json's method_info.graph lists."""
    graph = (info.method_info or {}).get("graph")
    if not isinstance(graph, dict):
        return None
    masks = _read_json(directory / MASKS_FILE) or {}
    agents = [str(a) for a in masks.get("agents") or graph.get("agents") or []]
    evaluated = masks.get("evaluated")
    edges, temporal = [], []
    if isinstance(evaluated, dict):  # pruned_mas: a spatial and a temporal mask
        edges = _mask_edges(evaluated.get("spatial"), agents)
        if graph.get("temporal_edges_used"):
            temporal = _mask_edges(evaluated.get("temporal"), agents)
    elif isinstance(evaluated, list):  # pruned_latent_mas: one mask
        edges = _mask_edges(evaluated, agents)
    elif isinstance(graph.get("kept"), list):
        edges = [[str(a), str(b)] for a, b in graph["kept"]]
    final = graph.get("final_agent") or _decider(info, graph)
    final_reads = "learned" if graph.get("final_sees") == "learned" else "all"
    if final is not None and final in agents:  # final_sees=learned: the final agent is the mask's last node
        agents.remove(final)
    return {"agents": agents, "final": final, "final_reads": final_reads if final else None, "edges": edges,
            "temporal": temporal, "rounds": graph.get("rounds"), "summary": _graph_summary(graph)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mask_edges(mask, agents: list[str]) -> list[list[str]]:
    """[from, to] for every 1 in mask[source][target]."""
    if not isinstance(mask, list):
        return []
    return [[agents[i], agents[j]] for i, row in enumerate(mask) if i < len(agents)
            for j, kept in enumerate(row or []) if kept and j < len(agents)]


def _decider(info: RunRecord, graph: dict) -> str | None:
    """pruned_mas's decision agent, which reads every agent's last answer (decision=llm)."""
    if graph.get("decision") != "llm":
        return None
    decider = ((info.config or {}).get("method") or {}).get("decider") or {}
    return str(decider.get("name") or "decider")


def _graph_summary(graph: dict) -> str:
    parts = []
    for kind in ("spatial", "temporal"):
        initial, evaluated = (graph.get("edges_initial") or {}), (graph.get("edges_evaluated") or {})
        if isinstance(initial, dict) and kind in initial:
            parts.append(f"{kind} edges: {evaluated.get(kind, '?')} of {initial[kind]}")
    if isinstance(graph.get("edges_initial"), int):
        parts.append(f"edges: {graph.get('edges_kept', '?')} of {graph['edges_initial']}")
    if graph.get("prune_rate") is not None:
        parts.append(f"prune rate {graph['prune_rate']}")
    if graph.get("decision") and graph.get("decision") != "llm":
        parts.append(f"decision: {graph['decision']}")
    if graph.get("rounds"):
        parts.append(f"{graph['rounds']} round{'s' if graph['rounds'] != 1 else ''}")
    return ", ".join(parts)
