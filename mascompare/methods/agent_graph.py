"""The spatial-temporal communication graph of the pruned methods (pruned_mas: AgentPrune over text;
pruned_latent_mas: the same graph over latent working memory), the optimiser of its edge masks, and
the calibration that trains it.

This module knows agents only by index 0..N-1; the only model calls happen inside calibration, through
the `execute` function a method hands it.

Masks are N x N 0/1 arrays oriented `mask[source][target]`:
- spatial: `source -> target` within one round (the target reads the source's output of the same round);
- temporal: the source's output of round t-1 is shown to the target in round t (self edges allowed).

Every edge the initial (spatial or temporal) mask allows has a logit; the edge is drawn with probability
sigmoid(logit). Edges the initial mask excludes never appear and have no logit (NaN).

A realised spatial graph must be a DAG. Cycles are broken as the AgentPrune paper describes
(DAGSampling: while a cycle exists, delete one edge on it): a random edge, from a seeded generator,
while sampling (calibration, and sampled test graphs); the edge with the lowest learned score for the one
fixed graph that is evaluated (so that graph is deterministic). Agents run in layers: layer 0 has no spatial
predecessors, layer k agents have all their predecessors in layers < k.

The authors' learning rules, where they differ from the paper's formulas (which are the defaults), are options
(docs/fidelity.md): a graph drawn anew every round (`graph_draw=per_round`), sampled test graphs
(`test_graph=sampled`), their pruning count and tie order (`prune_count=cut_half_even`), their iterative
pruning schedule (`prune_every`), and REINFORCE without a baseline (`calibration.baseline_momentum=null`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mascompare.errors import UserError
from mascompare.identity import short_hash
from mascompare.records import Usage
from mascompare.tasks.base import CalibrationPool, overlapping

log = logging.getLogger(__name__)

TOPOLOGIES = ("full", "chain", "star", "layered", "random", "debate")
GRAPH_DRAWS = ("per_question", "per_round")  # one graph for all of a question's rounds | a new one every round
TEST_GRAPHS = ("fixed", "sampled")  # evaluate one deterministic pruned graph | draw one per question
PRUNE_COUNTS = ("keep_half_up", "cut_half_even")
TOPOLOGY_STREAM, SAMPLER_STREAM = 0, 1  # one seed, two independent random streams


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per use of one seed: with the same stream, the edge sampler's first
    draw at probability 1/2 would reproduce the random topology it starts from."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def initial_masks(topology: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(spatial, temporal) 0/1 masks of a named starting topology over n agents.

    - full: every ordered pair i != j spatially; every pair, self included, temporally.
    - chain: i -> i+1 spatially; the last agent's output goes to the first agent in the next round.
    - star: agent 0 (the hub) -> every other agent spatially; all temporal edges.
    - layered: the first ceil(n/2) agents form layer 0, the rest layer 1; i -> j for i in layer 0 and
      j in layer 1 (agents in index order, not shuffled); all temporal edges.
    - random: each spatial pair i != j and each temporal pair independently with probability 1/2,
      from a generator seeded with `seed` (a stream apart from the edge sampler's).
    - debate: no spatial edges; all temporal edges (each agent reads everyone's previous answer).
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}")
    off_diagonal = np.ones((n, n), dtype=int) - np.eye(n, dtype=int)
    all_pairs = np.ones((n, n), dtype=int)
    spatial = np.zeros((n, n), dtype=int)
    temporal = all_pairs.copy()
    if topology == "full":
        spatial = off_diagonal
    elif topology == "chain":
        temporal = np.zeros((n, n), dtype=int)
        for i in range(n - 1):
            spatial[i, i + 1] = 1
        temporal[n - 1, 0] = 1
    elif topology == "star":
        spatial[0, 1:] = 1
    elif topology == "layered":
        first = math.ceil(n / 2)
        spatial[:first, first:] = 1
    elif topology == "random":
        rng = seeded_rng(seed, TOPOLOGY_STREAM)
        spatial = (rng.random((n, n)) < 0.5).astype(int) * off_diagonal
        temporal = (rng.random((n, n)) < 0.5).astype(int)
    return spatial, temporal


# --- cycles, layers ------------------------------------------------------------------------------


def find_cycle(adj: np.ndarray) -> list[tuple[int, int]] | None:
    """The edges of one directed cycle in adj (as (source, target) pairs in cycle order), or None."""
    n = len(adj)
    state = [0] * n  # 0 unseen, 1 on the current DFS path, 2 finished
    parent = [-1] * n

    def visit(start: int) -> list[tuple[int, int]] | None:
        stack = [(start, 0)]
        state[start] = 1
        while stack:
            node, nxt = stack[-1]
            for j in range(nxt, n):
                if adj[node, j]:
                    stack[-1] = (node, j + 1)
                    if state[j] == 1:  # back edge node -> j closes a cycle j -> ... -> node -> j
                        cycle, cur = [(node, j)], node
                        while cur != j:
                            cycle.append((parent[cur], cur))
                            cur = parent[cur]
                        return cycle[::-1]
                    if state[j] == 0:
                        state[j], parent[j] = 1, node
                        stack.append((j, 0))
                    break
            else:
                state[node] = 2
                stack.pop()
        return None

    for start in range(n):
        if state[start] == 0:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def break_cycles(adj: np.ndarray, choose) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A DAG made from adj by deleting, while a cycle remains, the edge `choose(cycle)` picks on it.
    Returns the DAG and the deleted edges."""
    dag, removed = adj.copy(), []
    while (cycle := find_cycle(dag)) is not None:
        i, j = choose(cycle)
        dag[i, j] = 0
        removed.append((i, j))
    return dag, removed


def random_edge(rng: np.random.Generator):
    """Cycle breaker of the paper's DAGSampling: a uniformly random edge on the cycle."""
    return lambda cycle: cycle[int(rng.integers(len(cycle)))]


def weakest_edge(scores: np.ndarray):
    """Deterministic cycle breaker: the edge with the lowest score; on a tie the backward edge
    (source > target), then the later one in row-major order. With equal scores, a complete graph
    becomes the complete DAG i -> j for i < j."""
    return lambda cycle: min(cycle, key=lambda e: (scores[e], e[0] < e[1], -(e[0] * len(scores) + e[1])))


def layers(dag: np.ndarray) -> list[list[int]]:
    """Kahn layering: layer 0 = agents without spatial predecessors; an agent's layer is one more
    than its latest predecessor's. Raises ValueError on a cycle."""
    n = len(dag)
    indegree = dag.sum(axis=0).astype(int).tolist()
    current = [j for j in range(n) if indegree[j] == 0]
    result, seen = [], 0
    while current:
        result.append(current)
        seen += len(current)
        following = []
        for i in current:
            for j in range(n):
                if dag[i, j]:
                    indegree[j] -= 1
                    if indegree[j] == 0:
                        following.append(j)
        current = sorted(following)
    if seen != n:
        raise ValueError("the spatial graph has a cycle")
    return result


@dataclass(frozen=True)
class Graph:
    """One realised communication graph: a spatial DAG and the temporal edges, both [source][target]."""

    spatial: np.ndarray
    temporal: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "layers", layers(self.spatial))

    def spatial_sources(self, target: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.spatial[:, target])]

    def temporal_sources(self, target: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.temporal[:, target])]

    def edges(self) -> dict[str, int]:
        return {"spatial": int(self.spatial.sum()), "temporal": int(self.temporal.sum())}


# --- pruning -------------------------------------------------------------------------------------


def keep_count(edges: int, prune_rate: float) -> int:
    """How many of `edges` survive pruning at rate p: (1 - p) * edges rounded half up."""
    return int(math.floor((1 - prune_rate) * edges + 0.5 + 1e-9))


def cut_count(edges: int, prune_rate: float) -> int:
    """How many of `edges` the authors' code cuts at rate p: p * edges rounded half to even, at least one."""
    if edges == 0 or prune_rate == 0:
        return 0
    return min(edges, max(1, round(prune_rate * edges)))


def prune(mask: np.ndarray, scores: np.ndarray, prune_rate: float, rule: str = "keep_half_up") -> np.ndarray:
    """Paper Eq. 12, one shot, over the existing edges of `mask` in row-major order:
    - keep_half_up: the top keep_count(|A|, p) by score survive; on a tie the earlier edge stays;
    - cut_half_even (the authors' code): the bottom cut_count(|A|, p) by score are cut; on a tie the earlier
      edge goes (the order of torch.argsort over their flattened logits)."""
    existing = [(int(i), int(j)) for i, j in zip(*np.nonzero(mask))]
    n = len(mask)
    kept = np.zeros_like(mask)
    if rule == "cut_half_even":
        ranked = sorted(existing, key=lambda e: (scores[e], e[0] * n + e[1]))
        survivors = ranked[cut_count(len(existing), prune_rate):]
    else:
        ranked = sorted(existing, key=lambda e: (-scores[e], e[0] * n + e[1]))
        survivors = ranked[: keep_count(len(existing), prune_rate)]
    for e in survivors:
        kept[e] = 1
    return kept


# --- the edge distribution and its optimiser -----------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """The graphs one question runs on, one per round (the same graph every round when drawn per question), and
    the log-probability of the Bernoulli draws that made them."""

    graphs: tuple[Graph, ...]
    logp: torch.Tensor
    terms: int  # the Bernoulli draws summed into logp


class EdgePolicy:
    """Learnable Bernoulli edges over the initial masks, trained with REINFORCE.

    Loss per update (minimised with Adam):
        - mean_b[(u_b - baseline) * log p(graph_b)]                    (paper Eq. 9, with a baseline)
        + lowrank_weight * (||S_S||_* + ||S_T||_*)                      (paper Eq. 11, nuclear norms)
        + anchor_weight * sum_X relu(||A_X - S_X||_F - delta)           (paper Eq. 11's constraint, as a penalty)
    where S_X = sigmoid(logits_X) on the edges A_X allows (0 elsewhere): the masks as probabilities.
    The baseline is a moving average of the utilities seen before the batch (the batch mean for the
    first batch), or 0 with baseline_momentum None (plain REINFORCE, as the authors' code). log p(graph)
    sums log p / log(1 - p) over every Bernoulli draw, i.e. before cycles are broken: the draw is the
    policy's action; cycle breaking is part of the environment.

    Edges are drawn among the `alive` ones: the initial masks, less any an iterative pruning schedule has cut
    during calibration (`prune_alive`), or the pruned masks when test graphs are sampled.
    """

    def __init__(self, spatial: np.ndarray, temporal: np.ndarray, learn_temporal: bool, *, lr: float,
                 lowrank_weight: float, anchor_weight: float, delta: float, baseline_momentum: float | None,
                 initial_probability: float = 0.5, seed: int = 0):
        self.masks = {"spatial": np.asarray(spatial, dtype=int), "temporal": np.asarray(temporal, dtype=int)}
        self.alive = {k: m.copy() for k, m in self.masks.items()}
        self.learned = ("spatial", "temporal") if learn_temporal else ("spatial",)
        init = math.log(initial_probability / (1 - initial_probability))
        self.logits = {k: torch.full(m.shape, init, dtype=torch.float64, requires_grad=True)
                       for k, m in self.masks.items()}
        self.optimizer = torch.optim.Adam([self.logits[k] for k in self.learned], lr=lr)
        self.lowrank_weight, self.anchor_weight, self.delta = lowrank_weight, anchor_weight, delta
        self.momentum, self.baseline = baseline_momentum, None
        self.rng = seeded_rng(seed, SAMPLER_STREAM)

    @classmethod
    def from_config(cls, spatial, temporal, learn_temporal: bool, cal, seed: int) -> "EdgePolicy":
        """The policy with the optimiser settings of a method's `calibration` config."""
        return cls(spatial, temporal, learn_temporal, lr=cal.lr, lowrank_weight=cal.lowrank_weight,
                   anchor_weight=cal.anchor_weight, delta=cal.delta, baseline_momentum=cal.baseline_momentum,
                   initial_probability=cal.initial_probability, seed=seed)

    def scores(self, kind: str) -> np.ndarray:
        """The learned logits of one mask (NaN where the initial mask has no edge)."""
        values = self.logits[kind].detach().numpy().copy()
        values[self.masks[kind] == 0] = np.nan
        return values

    def sample(self, rounds: int = 1, per_round: bool = False, rng: np.random.Generator | None = None) -> Draw:
        """The graphs of one question's `rounds`, drawn from the current edge probabilities with `rng` (default:
        the policy's own seeded stream). Per question (the paper's formula): one spatial and one temporal draw
        serve every round. Per round (the authors' code): a spatial draw in every round and a temporal draw in
        every round after the first (the first has no previous round to read), their log-probabilities summed.
        Masks that are not learned (temporal edges with one round) are taken as they are."""
        rng = self.rng if rng is None else rng
        if not per_round:
            graph, logp, terms = self.draw(("spatial", "temporal"), rng)
            return Draw((graph,) * rounds, logp, terms)
        graphs, logp, terms = [], torch.zeros((), dtype=torch.float64), 0
        for round in range(rounds):
            graph, round_logp, round_terms = self.draw(("spatial", "temporal") if round else ("spatial",), rng)
            graphs.append(graph)
            logp, terms = logp + round_logp, terms + round_terms
        return Draw(tuple(graphs), logp, terms)

    def draw(self, kinds: tuple[str, ...], rng: np.random.Generator) -> tuple[Graph, torch.Tensor, int]:
        """One graph: each alive edge of `kinds` drawn (learned masks) or taken (others); a kind not drawn has
        no edges. Spatial cycles are broken at a random edge on them."""
        drawn, logp, terms = {}, torch.zeros((), dtype=torch.float64), 0
        for kind, mask in self.alive.items():
            if kind not in kinds:
                drawn[kind] = np.zeros_like(mask)
                continue
            if kind not in self.learned:
                drawn[kind] = mask.copy()
                continue
            logits = self.logits[kind]
            present = (rng.random(mask.shape) < torch.sigmoid(logits).detach().numpy()) & (mask == 1)
            # log p for a drawn edge, log(1 - p) for an edge drawn absent; nothing where no edge may exist
            terms_here = torch.where(torch.as_tensor(present), F.logsigmoid(logits), F.logsigmoid(-logits))
            logp = logp + terms_here[torch.as_tensor(mask == 1)].sum()
            terms += int(mask.sum())
            drawn[kind] = present.astype(int)
        spatial, _ = break_cycles(drawn["spatial"], random_edge(rng))
        return Graph(spatial, drawn["temporal"]), logp, terms

    def prune_alive(self, prune_rate: float, rule: str) -> None:
        """One step of an iterative pruning schedule: cut the rate's share of the edges still alive, by logit."""
        for kind in self.learned:
            self.alive[kind] = prune(self.alive[kind], self.scores(kind), prune_rate, rule)

    def regulariser(self) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for kind in self.learned:
            a = torch.as_tensor(self.masks[kind], dtype=torch.float64)
            s = torch.sigmoid(self.logits[kind]) * a
            if self.lowrank_weight:
                total = total + self.lowrank_weight * torch.linalg.svdvals(s).sum()
            if self.anchor_weight:
                total = total + self.anchor_weight * torch.relu(torch.linalg.matrix_norm(a - s) - self.delta)
        return total

    def update(self, logps: list[torch.Tensor], utilities: list[float]) -> dict:
        """One Adam step on a batch of sampled graphs and their utilities."""
        u = torch.tensor(utilities, dtype=torch.float64)
        mean = float(u.mean()) if len(utilities) else 0.0
        if self.momentum is None:
            baseline = 0.0
        else:
            baseline = mean if self.baseline is None else self.baseline
        loss = self.regulariser()
        if logps:
            loss = loss - ((u - baseline) * torch.stack(logps)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.momentum is not None:
            self.baseline = mean if self.baseline is None else self.momentum * self.baseline + (1 - self.momentum) * mean
        return {"utility": mean, "baseline": baseline, "loss": float(loss.detach())}

    def load_logits(self, logits: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for kind, values in logits.items():
                self.logits[kind].copy_(torch.as_tensor(np.nan_to_num(values, nan=0.0)))


def question_rng(run_seed: int, method_seed: int, sample_id: str, repeat: int) -> tuple[int, np.random.Generator]:
    """A question's own seed and generator for its test-time graph draw (method.test_graph=sampled): from the run
    seed (generation.seed), method.seed, the sample id and the repeat, so a question's graph does not depend on
    the batch it runs in."""
    key = json.dumps([run_seed, method_seed, str(sample_id), repeat]).encode("utf-8")
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
    return seed, np.random.default_rng(seed)


def edge_list(adj: np.ndarray, names: list[str]) -> list[list[str]]:
    """The edges of a mask as [source, target] name pairs, in row-major order."""
    return [[names[i], names[j]] for i, j in zip(*np.nonzero(adj))]


def fixed_graph(pruned: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> tuple[Graph, list]:
    """The one deterministic graph evaluated after pruning: the pruned masks, with spatial cycles
    broken at their weakest edge. Returns the graph and the spatial edges deleted to break cycles."""
    spatial_scores = np.nan_to_num(scores["spatial"], nan=-np.inf)
    spatial, removed = break_cycles(pruned["spatial"], weakest_edge(spatial_scores))
    return Graph(spatial, pruned["temporal"].copy()), removed


def matrix_to_json(matrix: np.ndarray, digits: int | None = None) -> list:
    """A matrix as JSON lists, NaN as null. Logits are stored unrounded: JSON floats round-trip exactly,
    so reloaded masks rank (and prune) their edges exactly as the run that learned them."""
    return [[None if np.isnan(v) else float(v) if digits is None else round(float(v), digits) for v in row]
            for row in matrix]


# --- calibration: learning the edges on questions the run never evaluates -------------------------


def calibration_samples(cal, task, evaluated, examples: set[str] = frozenset()) -> CalibrationPool:
    """Calibration questions disjoint from the evaluated ones and from the agents' worked examples (`examples`:
    their question hashes), from the task's pool for method.calibration.split (`auto`: the task's default,
    `seed` for generated arith items, else `tail`)."""
    split = task.default_calibration_split if cal.split == "auto" else cal.split
    avoid = {short_hash(s.question) for s in evaluated} | set(examples)
    pool = task.calibration_pool(split, cal.size, cal.seed, avoid)
    overlap = overlapping(pool.samples, avoid)
    if overlap:
        shown = " or the agents' worked examples" if set(examples) & {short_hash(s.question) for s in pool.samples} \
            else ""
        raise UserError(
            f"The calibration questions ({pool.where}) overlap the evaluated ones{shown} ({len(overlap)} shared, "
            f"e.g. {overlap[0]}); lower task.limit, or choose another method.calibration.split.")
    if len(pool.samples) < cal.size:
        raise UserError(f"Only {len(pool.samples)} calibration questions are available, fewer than "
                        f"method.calibration.size={cal.size}; lower it.")
    return pool


def calibrate(policy: EdgePolicy, settings, task, accountant, evaluated, execute, rounds: int = 1,
              examples: set[str] = frozenset()) -> dict:
    """REINFORCE on the edge policy over calibration questions; returns the calibration summary.

    `settings` are a pruned method's (its `calibration`, `graph_draw`, and the pruning schedule: `prune_every`,
    `prune_rate`, `prune_count`). `execute(samples, graphs, ids, phase)` runs each sample on its own graphs (one
    per round) and returns the methods' outputs (final_text, error): the only place where models are called.
    The utility of a graph is 1 when its final answer is right (flexible extraction) and 0 otherwise; its calls
    are recorded with phase="calibration" and taken out of the accountant into the summary. With
    `prune_every` = k, the edges still alive are pruned at `prune_rate` after every k-th step, and later steps
    draw only the edges left (the authors' iterative schedule)."""
    cal, per_round = settings.calibration, settings.graph_draw == "per_round"
    drawn_from = calibration_samples(cal, task, evaluated, examples)
    pool, where = drawn_from.samples, drawn_from.where
    log.info("calibrating the communication graph on %d questions (%s), %d iterations",
             len(pool), where, cal.iterations)
    records, history, began, cursor = [], [], time.perf_counter(), 0
    used = pool[:min(len(pool), cal.iterations * cal.batch_size)]  # questions are drawn in pool order
    for iteration in range(cal.iterations):
        questions = [pool[(cursor + k) % len(pool)] for k in range(cal.batch_size)]
        cursor += cal.batch_size
        batch = [s for s in questions for _ in range(cal.graphs_per_question)]
        drawn = [policy.sample(rounds, per_round) for _ in batch]
        ids = [f"calibration/{s.id}/{iteration}.{k}" for k, s in enumerate(batch)]
        outputs = execute(batch, [d.graphs for d in drawn], ids, "calibration")
        for sid in ids:  # the runner only takes evaluation ids: take ours so nothing piles up
            records.extend(accountant.take(sid))
        logps, utilities = [], []
        for sample, output, draw in zip(batch, outputs, drawn):
            if output.error:
                continue  # a failed call says nothing about the graph
            answer = task.extract(output.final_text or "").flexible
            logps.append(draw.logp)
            utilities.append(float(task.score(answer, sample.target)))
        step = policy.update(logps, utilities)
        history.append({"iteration": iteration, "graphs": len(batch), "failed": len(batch) - len(logps), **step})
        if settings.prune_every is not None and (iteration + 1) % settings.prune_every == 0:
            policy.prune_alive(settings.prune_rate, settings.prune_count)
            history[-1]["edges_left"] = {k: int(policy.alive[k].sum()) for k in policy.learned}
        log.info("calibration %d/%d: utility %.2f (baseline %.2f)", iteration + 1, cal.iterations,
                 step["utility"], step["baseline"])
    return {
        "performed": True, "source": where, "split": drawn_from.split, "question_pool": len(pool),
        "questions": len(used), "question_ids": [s.id for s in used],
        "question_hashes": [short_hash(s.question) for s in used],
        "iterations": cal.iterations, "batch_size": cal.batch_size,
        "graphs_per_question": cal.graphs_per_question, "history": history,
        "usage": Usage.of(records).to_json(), "elapsed_s": round(time.perf_counter() - began, 3),
    }


def refuse_calibration_overlap(calibration: dict, evaluated, path) -> None:
    """Saved masks learned on questions this run would evaluate are refused: same question text, or
    same id where ids name the evaluated data (generated arith items reuse ids across seeds)."""
    hashes = set(calibration.get("question_hashes") or ())
    ids_name_questions = calibration.get("split") in ("tail", "train") or not hashes  # older files: ids only
    ids = set(calibration.get("question_ids") or ()) if ids_name_questions else set()
    shared = [s.id for s in evaluated if s.id in ids or short_hash(s.question) in hashes]
    if shared:
        raise UserError(
            f"The masks in {path} were calibrated on {len(shared)} of the questions this run evaluates "
            f"(e.g. {shared[0]}); evaluate other questions (e.g. a lower task.limit) or calibrate anew "
            "in a fresh run.")
