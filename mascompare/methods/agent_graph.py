"""The spatial-temporal communication graph of pruned_mas (AgentPrune) and the optimiser of its edge masks.

No model calls happen here: this module knows agents only by index 0..N-1.

Masks are N x N 0/1 arrays oriented `mask[source][target]`:
- spatial: `source -> target` within one round (the target reads the source's output of the same round);
- temporal: the source's output of round t-1 is shown to the target in round t (self edges allowed).

Every edge the initial (spatial or temporal) mask allows has a logit; the edge is drawn with probability
sigmoid(logit). Edges the initial mask excludes never appear and have no logit (NaN).

A realised spatial graph must be a DAG. Cycles are broken as the AgentPrune paper describes
(DAGSampling: while a cycle exists, delete one edge on it): a random edge, from a seeded generator,
while sampling during calibration; the edge with the lowest learned score for the one fixed graph
that is evaluated (so that graph is deterministic). Agents run in layers: layer 0 has no spatial
predecessors, layer k agents have all their predecessors in layers < k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TOPOLOGIES = ("full", "chain", "star", "layered", "random", "debate")


def initial_masks(topology: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(spatial, temporal) 0/1 masks of a named starting topology over n agents.

    - full: every ordered pair i != j spatially; every pair, self included, temporally.
    - chain: i -> i+1 spatially; the last agent's output goes to the first agent in the next round.
    - star: agent 0 (the hub) -> every other agent spatially; all temporal edges.
    - layered: the first ceil(n/2) agents form layer 0, the rest layer 1; i -> j for i in layer 0 and
      j in layer 1 (agents in index order, not shuffled); all temporal edges.
    - random: each spatial pair i != j and each temporal pair independently with probability 1/2,
      from a generator seeded with `seed`.
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
        rng = np.random.default_rng(seed)
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


def prune(mask: np.ndarray, scores: np.ndarray, prune_rate: float) -> np.ndarray:
    """Paper Eq. 12: keep the top keep_count(|A|, p) existing edges of `mask` by score (ties: row-major
    order), one shot."""
    existing = [(int(i), int(j)) for i, j in zip(*np.nonzero(mask))]
    n = len(mask)
    ranked = sorted(existing, key=lambda e: (-scores[e], e[0] * n + e[1]))
    kept = np.zeros_like(mask)
    for e in ranked[: keep_count(len(existing), prune_rate)]:
        kept[e] = 1
    return kept


# --- the edge distribution and its optimiser -----------------------------------------------------


class EdgePolicy:
    """Learnable Bernoulli edges over the initial masks, trained with REINFORCE.

    Loss per update (minimised with Adam):
        - mean_b[(u_b - baseline) * log p(graph_b)]                    (paper Eq. 9, with a baseline)
        + lowrank_weight * (||S_S||_* + ||S_T||_*)                      (paper Eq. 11, nuclear norms)
        + anchor_weight * sum_X relu(||A_X - S_X||_F - delta)           (paper Eq. 11's constraint, as a penalty)
    where S_X = sigmoid(logits_X) on the edges A_X allows (0 elsewhere): the masks as probabilities.
    The baseline is a moving average of the utilities seen before the batch (the batch mean for the
    first batch). log p(graph) sums log p / log(1 - p) over every Bernoulli draw, i.e. before cycles
    are broken: the draw is the policy's action; cycle breaking is part of the environment.
    """

    def __init__(self, spatial: np.ndarray, temporal: np.ndarray, learn_temporal: bool, *, lr: float,
                 lowrank_weight: float, anchor_weight: float, delta: float, baseline_momentum: float,
                 initial_probability: float = 0.5, seed: int = 0):
        self.masks = {"spatial": np.asarray(spatial, dtype=int), "temporal": np.asarray(temporal, dtype=int)}
        self.learned = ("spatial", "temporal") if learn_temporal else ("spatial",)
        init = math.log(initial_probability / (1 - initial_probability))
        self.logits = {k: torch.full(m.shape, init, dtype=torch.float64, requires_grad=True)
                       for k, m in self.masks.items()}
        self.optimizer = torch.optim.Adam([self.logits[k] for k in self.learned], lr=lr)
        self.lowrank_weight, self.anchor_weight, self.delta = lowrank_weight, anchor_weight, delta
        self.momentum, self.baseline = baseline_momentum, None
        self.rng = np.random.default_rng(seed)

    def scores(self, kind: str) -> np.ndarray:
        """The learned logits of one mask (NaN where the initial mask has no edge)."""
        values = self.logits[kind].detach().numpy().copy()
        values[self.masks[kind] == 0] = np.nan
        return values

    def sample(self) -> tuple[Graph, torch.Tensor]:
        """One graph drawn from the current edge probabilities, and the log-probability of the draw.
        Masks that are not learned (temporal edges with one round) are taken as they are."""
        drawn, logp = {}, torch.zeros((), dtype=torch.float64)
        for kind, mask in self.masks.items():
            if kind not in self.learned:
                drawn[kind] = mask.copy()
                continue
            logits = self.logits[kind]
            present = (self.rng.random(mask.shape) < torch.sigmoid(logits).detach().numpy()) & (mask == 1)
            # log p for a drawn edge, log(1 - p) for an edge drawn absent; nothing where no edge may exist
            terms = torch.where(torch.as_tensor(present), F.logsigmoid(logits), F.logsigmoid(-logits))
            logp = logp + terms[torch.as_tensor(mask == 1)].sum()
            drawn[kind] = present.astype(int)
        spatial, _ = break_cycles(drawn["spatial"], random_edge(self.rng))
        return Graph(spatial, drawn["temporal"]), logp

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
        baseline = mean if self.baseline is None else self.baseline
        loss = self.regulariser()
        if logps:
            loss = loss - ((u - baseline) * torch.stack(logps)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.baseline = mean if self.baseline is None else self.momentum * self.baseline + (1 - self.momentum) * mean
        return {"utility": mean, "baseline": baseline, "loss": float(loss.detach())}

    def load_logits(self, logits: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for kind, values in logits.items():
                self.logits[kind].copy_(torch.as_tensor(np.nan_to_num(values, nan=0.0)))


def fixed_graph(pruned: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> tuple[Graph, list]:
    """The one deterministic graph evaluated after pruning: the pruned masks, with spatial cycles
    broken at their weakest edge. Returns the graph and the spatial edges deleted to break cycles."""
    spatial_scores = np.nan_to_num(scores["spatial"], nan=-np.inf)
    spatial, removed = break_cycles(pruned["spatial"], weakest_edge(spatial_scores))
    return Graph(spatial, pruned["temporal"].copy()), removed
