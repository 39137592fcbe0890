"""pruned_mas: AgentPrune. Agents on a spatial-temporal communication graph whose redundant edges are
learned on calibration questions and pruned one-shot; evaluation runs one fixed pruned graph.

The story, in the order it happens in a run (graph mechanics, the optimiser and calibration: methods/agent_graph.py):

1. The graph. N solver agents (method.agents) talk for R rounds (method.rounds). A spatial edge
   i -> j shows agent i's answer of this round to agent j in the same round (so i runs first); a
   temporal edge i -> j shows i's answer of the previous round to j. The starting topology
   (method.topology) gives both masks. After the last round a decision node answers: `llm`, an
   extra agent that reads every agent's last answer, or `vote`, a majority over the answers the
   task's extractor finds in them (ties: the answer given first in agent order; no model call).
   The decision node is wired to every agent and never pruned (as in the paper), so pruning
   shortens prompts; it does not remove calls (N x R, plus 1 for `llm`).
2. Execution. In each round the realised spatial DAG runs layer by layer; one layer is one batched
   chat call across its agents and the batch's samples. Each prompt holds the agent's instruction,
   the question, then the messages its incoming edges carry, each labelled with the sender's role
   (previous round first, then this round), then the task's answer format.
3. Calibration (unless method.masks names saved masks, or method.prune_rate is 0). Every edge of
   the starting masks gets a logit (probability 1/2 at first). For each iteration a batch of
   calibration questions runs, each on its own graph sampled from the edge probabilities (cycles
   broken at a random edge on the cycle, seeded); the utility is 1 when the final answer is right
   (flexible extraction) and 0 otherwise; one Adam step follows on REINFORCE with a moving-average
   baseline plus the paper's nuclear-norm and anchor terms. The calibration questions never
   overlap the evaluated ones (checked by question text, and for saved masks also by id, whenever
   masks are learned or reused); their calls are recorded with
   phase="calibration" and reported separately (run.json "method_info.calibration", masks.json).
4. Pruning. Per mask, the top (1 - p) of the starting edges by learned logit survive (p =
   method.prune_rate). The evaluated graph is that one deterministic graph (spatial cycles broken
   at their weakest edge), the same for every question: not a re-sampled one.
5. Persistence. <run dir>/masks.json holds the logits, the starting, pruned and evaluated masks and
   the calibration summary (with the ids and question hashes of the questions used); masks.png
   draws them. method.masks=<masks.json> reuses saved logits (pruned again at the configured rate)
   without calibrating; a resumed run reuses its own file. Either is refused when the run would
   evaluate a question the masks were calibrated on (e.g. after task.limit was raised).

method.prune_rate=0 evaluates the unpruned starting graph with no calibration: the text-graph
baseline that pruning is compared with (same agents, prompts and samples).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from mascompare.errors import UserError, is_int_at_least
from mascompare.methods import MethodOutput
from mascompare.methods.agent_graph import (TOPOLOGIES, EdgePolicy, Graph, calibrate, calibration_samples, fixed_graph,
                                            initial_masks, matrix_to_json, prune, read_masks,
                                            refuse_calibration_overlap, write_masks)
from mascompare.methods.roles import Agent, agent_messages, ask_agents

log = logging.getLogger(__name__)

DECISIONS = ("llm", "vote")
SPLITS = ("auto", "tail", "train", "seed")
MASKS_FILE = "masks.json"
MASKS_PICTURE = "masks.png"
MASKS_FORMAT = "mascompare-pruned-mas-masks/1"
KINDS = ("spatial", "temporal")


# --- configuration -------------------------------------------------------------------------------


def _int(cfg, key, low, where="method"):
    value = cfg.get(key)
    if not is_int_at_least(value, low):
        raise UserError(f"{where}.{key} must be an integer >= {low}, got {value!r}.")
    return value


def _number(cfg, key, low, high, where="method", low_open=False, high_open=False):
    value = cfg.get(key)
    bad = (not isinstance(value, (int, float)) or isinstance(value, bool) or value < low or value > high
           or (low_open and value == low) or (high_open and value == high))
    if bad:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise UserError(f"{where}.{key} must be a number in {lo}{low}, {high}{hi}, got {value!r}.")
    return float(value)


def solver_agents(cfg) -> list[Agent]:
    agents = cfg.get("agents") or []
    if len(agents) < 1:
        raise UserError("method.agents needs at least one agent (the paper's setting has four or five).")
    built = [Agent(a.name, a.role, a.instruction, bool(a.get("answers", True))) for a in agents]
    if len({a.name for a in built}) != len(built):
        raise UserError("method.agents has agents with the same name; names must be unique.")
    return built


def decider_agent(cfg) -> Agent:
    d = cfg.decider
    return Agent(d.name, d.role, d.instruction, True)


# --- the method ----------------------------------------------------------------------------------


class Method:
    requires = frozenset({"chat"})

    @staticmethod
    def check_config(cfg) -> None:
        """Every knob checked before the model loads."""
        agents = solver_agents(cfg)
        if cfg.get("decision") not in DECISIONS:
            raise UserError(f"method.decision must be one of {', '.join(DECISIONS)}, got {cfg.get('decision')!r}.")
        if cfg.decision == "llm" and decider_agent(cfg).name in {a.name for a in agents}:
            raise UserError("method.decider.name must differ from every name in method.agents.")
        if cfg.get("topology") not in TOPOLOGIES:
            raise UserError(f"method.topology must be one of {', '.join(TOPOLOGIES)}, got {cfg.get('topology')!r}.")
        _int(cfg, "rounds", 1)
        _int(cfg, "seed", 0)
        _number(cfg, "prune_rate", 0, 1, high_open=True)
        masks = cfg.get("masks")
        if masks is not None and not Path(str(masks)).is_file():
            raise UserError(f"method.masks names {masks!r}, which is not a file; "
                            "give a masks.json that a run wrote, or null.")
        cal = cfg.calibration
        if cal.get("split") not in SPLITS:
            raise UserError(f"method.calibration.split must be one of {', '.join(SPLITS)}, got {cal.get('split')!r}.")
        if cal.get("seed") is not None:
            _int(cal, "seed", 0, "method.calibration")
        for key in ("size", "iterations", "batch_size", "graphs_per_question"):
            _int(cal, key, 1, "method.calibration")
        _number(cal, "lr", 0, math.inf, "method.calibration", low_open=True)
        _number(cal, "initial_probability", 0, 1, "method.calibration", low_open=True, high_open=True)
        _number(cal, "baseline_momentum", 0, 1, "method.calibration", high_open=True)
        for key in ("lowrank_weight", "anchor_weight", "delta"):
            _number(cal, key, 0, math.inf, "method.calibration")

    def __init__(self, cfg, backend, task, gen, accountant):
        self.check_config(cfg)
        self.cfg, self.backend, self.task, self.gen, self.accountant = cfg, backend, task, gen, accountant
        self.agents = solver_agents(cfg)
        self.decider = decider_agent(cfg) if cfg.decision == "llm" else None
        self.system = cfg.get("system")
        self.rounds = cfg.rounds
        self.prune_rate = float(cfg.prune_rate)
        self.graph: Graph | None = None  # the fixed graph evaluated; set by prepare()
        self.info: dict = {}
        self.masks_path: Path | None = None

    # --- before evaluation: masks ----------------------------------------------------------------

    def prepare(self, run_dir=None, samples=None, resume: bool = True) -> None:
        """Decide the evaluated graph once per run: load saved masks, or calibrate and prune, or take the
        unpruned starting graph (prune_rate 0). `samples` are all the samples the run evaluates (the
        calibration questions must avoid them); `run_dir` receives masks.json and masks.png."""
        if self.graph is not None:
            return
        run_dir = Path(run_dir) if run_dir is not None else None
        own = run_dir / MASKS_FILE if run_dir is not None else None
        spatial, temporal = initial_masks(self.cfg.topology, len(self.agents), self.cfg.seed)
        policy = self.policy(spatial, temporal)
        evaluated = samples if samples is not None else self.task.load()
        if self.cfg.get("masks") is not None:
            calibration = self.load(Path(str(self.cfg.masks)), policy, evaluated)
        elif own is not None and resume and own.is_file():
            calibration = self.load(own, policy, evaluated)  # a resumed run keeps the graph its earlier samples used
        elif self.prune_rate > 0:
            calibration = self.calibrate(policy, evaluated)
        else:
            calibration = {"performed": False, "reason": "method.prune_rate is 0: the unpruned starting graph"}
        self.edge_policy = policy  # kept for inspection (tests, benchmarks)
        scores = {k: policy.scores(k) for k in KINDS}
        pruned = {k: prune(policy.masks[k], scores[k], self.prune_rate) if k in policy.learned
                  else policy.masks[k].copy() for k in KINDS}
        self.graph, removed = fixed_graph(pruned, scores)
        names = [a.name for a in self.agents]
        self.info = {
            "calibration": calibration,
            "graph": {
                "topology": self.cfg.topology, "rounds": self.rounds, "decision": self.cfg.decision,
                "prune_rate": self.prune_rate, "agents": names,
                "edges_initial": {k: int(policy.masks[k].sum()) for k in KINDS},
                "edges_pruned": {k: int(pruned[k].sum()) for k in KINDS},
                "edges_evaluated": self.graph.edges(),
                "spatial_edges_removed_to_break_cycles": [[names[i], names[j]] for i, j in removed],
                "layers": [[names[i] for i in layer] for layer in self.graph.layers],
                "temporal_edges_used": self.rounds > 1,
            },
        }
        log.info("pruned_mas graph: %s", self.info["graph"])
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.masks_path = run_dir / MASKS_FILE
            self.save(self.masks_path, policy, pruned)
            draw_masks(run_dir / MASKS_PICTURE, names, policy, pruned, self.graph, rounds=self.rounds)
            self.info["masks_file"] = str(self.masks_path)

    def policy(self, spatial, temporal) -> EdgePolicy:
        return EdgePolicy.from_config(spatial, temporal, self.rounds > 1, self.cfg.calibration, self.cfg.seed)

    def run_info(self) -> dict:
        """What run.json records about this method beyond the samples (under "method_info")."""
        return self.info

    # --- calibration -----------------------------------------------------------------------------

    def calibration_samples(self, evaluated) -> tuple[list, str]:
        return calibration_samples(self.cfg.calibration, self.task, evaluated)

    def calibrate(self, policy: EdgePolicy, evaluated) -> dict:
        return calibrate(policy, self.cfg.calibration, self.task, self.accountant, evaluated, self.execute)

    # --- masks on disk ---------------------------------------------------------------------------

    def save(self, path: Path, policy: EdgePolicy, pruned: dict) -> None:
        data = {
            "format": MASKS_FORMAT,
            "orientation": "mask[source][target]; agents in the order of `agents`",
            "agents": [a.name for a in self.agents],
            "roles": [a.role for a in self.agents],
            "topology": self.cfg.topology,
            "rounds": self.rounds,
            "decision": self.cfg.decision,
            "prune_rate": self.prune_rate,
            "learned": list(policy.learned),
            "initial": {k: policy.masks[k].tolist() for k in KINDS},
            "logits": {k: matrix_to_json(policy.scores(k)) for k in KINDS},
            "probabilities": {k: matrix_to_json(1 / (1 + np.exp(-policy.scores(k))), 4) for k in KINDS},
            "pruned": {k: pruned[k].tolist() for k in KINDS},
            "evaluated": {"spatial": self.graph.spatial.tolist(), "temporal": self.graph.temporal.tolist()},
            "calibration": self.info["calibration"],
            "graph": self.info["graph"],
        }
        write_masks(path, data)

    def load(self, path: Path, policy: EdgePolicy, evaluated) -> dict:
        data = read_masks(path, MASKS_FORMAT, "pruned_mas")
        names = [a.name for a in self.agents]
        if data["agents"] != names:
            raise UserError(f"The masks in {path} are for agents {data['agents']}, but method.agents are {names}.")
        for kind in KINDS:
            policy.masks[kind] = np.asarray(data["initial"][kind], dtype=int)
        policy.load_logits({k: np.asarray(data["logits"][k], dtype=float) for k in KINDS})
        if data["topology"] != self.cfg.topology or data["rounds"] != self.rounds:
            log.warning("masks from %s were learned for topology %s with %d rounds; running %d rounds",
                        path, data["topology"], data["rounds"], self.rounds)
        if "temporal" not in data.get("learned", []):
            policy.learned = ("spatial",)  # temporal logits never learned there: keep those edges unpruned
        calibration = dict(data.get("calibration") or {})
        refuse_calibration_overlap(calibration, evaluated, path)
        calibration["reused_from"] = str(path)
        return calibration

    # --- evaluation ------------------------------------------------------------------------------

    def run(self, samples) -> list[MethodOutput]:
        self.prepare()
        return self.execute(samples, [self.graph] * len(samples), [s.id for s in samples], phase="eval")

    def execute(self, samples, graphs: list[Graph], ids: list[str], phase: str) -> list[MethodOutput]:
        """Run every sample on its own graph: R rounds of layer-by-layer agent calls, then the decision.
        Calls are batched by layer depth across samples (one call per layer when all graphs agree)."""
        n, outputs = len(self.agents), [MethodOutput("") for _ in samples]
        previous: list[list[str | None]] = [[None] * n for _ in samples]
        for round in range(self.rounds):
            current: list[list[str | None]] = [[None] * n for _ in samples]
            for depth in range(max(len(g.layers) for g in graphs)):
                jobs = [(s, a) for a in range(n) for s, g in enumerate(graphs)
                        if depth < len(g.layers) and a in g.layers[depth]]
                conversations = [self.agent_prompt(samples[s].question, a, graphs[s], current[s], previous[s], round)
                                 for s, a in jobs]
                texts = self.ask(jobs, conversations, ids, round, outputs, phase)
                for (s, a), text in zip(jobs, texts):
                    current[s][a] = text
            previous = current
        if self.decider is not None:
            jobs = [(s, n) for s in range(len(samples))]
            conversations = [self.decision_prompt(samples[s].question, previous[s]) for s in range(len(samples))]
            for output, text in zip(outputs, self.ask(jobs, conversations, ids, self.rounds, outputs, phase)):
                output.final_text = text
        else:
            for output, texts in zip(outputs, previous):
                output.final_text, output.diagnostics = self.vote(texts)
        return outputs

    def ask(self, jobs, conversations, ids, round, outputs, phase) -> list[str]:
        """One batched chat call for (sample, agent index) jobs; the decider is index len(agents)."""
        everyone = [*self.agents, self.decider]
        return ask_agents(self.backend, self.gen, self.accountant, [(s, everyone[a]) for s, a in jobs],
                          conversations, ids, round, outputs, phase)

    def label(self, source: int, target: int) -> str:
        role = self.agents[source].role
        return f"[{role}, your own answer]" if source == target else f"[{role}]"

    def agent_prompt(self, question, a, graph: Graph, current, previous, round) -> list[dict]:
        parts = []
        if round > 0:
            earlier = [f"{self.label(i, a)}\n{previous[i].strip()}" for i in graph.temporal_sources(a)
                       if previous[i] is not None]
            if earlier:
                parts.append("Answers from the previous round:\n\n" + "\n\n".join(earlier))
        now = [f"{self.label(i, a)}\n{current[i].strip()}" for i in graph.spatial_sources(a) if current[i] is not None]
        if now:
            parts.append("Answers from this round:\n\n" + "\n\n".join(now))
        return agent_messages(self.system, self.agents[a], question, self.task.answer_instruction(),
                              "\n\n".join(parts) or None)

    def decision_prompt(self, question, texts) -> list[dict]:
        context = "\n\n".join(f"[{agent.role}]\n{(text or '').strip()}" for agent, text in zip(self.agents, texts))
        return agent_messages(self.system, self.decider, question, self.task.answer_instruction(), context)

    def vote(self, texts) -> tuple[str, dict]:
        """Majority over the extracted answers; a tie goes to the answer given first in agent order.
        The final text is the text of the first agent giving the winning answer, so that it extracts
        to that answer."""
        answers = [self.task.extract(t or "").flexible for t in texts]
        keys = [" ".join(a.lower().split()) if a is not None else None for a in answers]
        counts = Counter(k for k in keys if k is not None)
        if not counts:
            return texts[0] or "", {"votes": {}, "chosen": self.agents[0].name}
        best = max(counts.values())
        chosen = next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)
        return texts[chosen], {"votes": dict(counts), "chosen": self.agents[chosen].name}


# --- the picture ---------------------------------------------------------------------------------


def panel_titles(kind: str, learned: bool, rounds: int | None, kept: int, edges: int) -> tuple[str, str]:
    """The titles of one mask's two panels. With one round no temporal edge carries a message."""
    unused = kind == "temporal" and rounds == 1
    note = "" if learned else " (not learned)"
    right = (f"{kind}: unused with 1 round ({edges} edges, none carries a message)" if unused
             else f"{kind}: kept after pruning ({kept} of {edges} edges)")
    return f"{kind}: edge probability before pruning{note}", right


def draw_masks(path: Path, names: list[str], policy: EdgePolicy, pruned: dict, graph: Graph, kinds=KINDS,
               method: str = "pruned_mas", rounds: int | None = None) -> None:
    """masks.png: per mask (rows: spatial, temporal, or the given `kinds`), the learned edge probabilities
    over the starting edges (left) and the edges kept after pruning (right; cells crossed out were pruned,
    'c' marks a spatial edge dropped to break a cycle in the evaluated graph)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = max(3.2, 0.75 * n + 1.6)
    fig, axes = plt.subplots(len(kinds), 2, figsize=(2 * size + 1.2, len(kinds) * size), squeeze=False)
    evaluated = {"spatial": graph.spatial, "temporal": graph.temporal}
    for row, kind in enumerate(kinds):
        initial = policy.masks[kind]
        prob = 1 / (1 + np.exp(-policy.scores(kind)))
        left = np.where(initial == 1, prob, np.nan)
        right = np.where(initial == 1, evaluated[kind], np.nan).astype(float)
        titles = panel_titles(kind, kind in policy.learned, rounds, int(evaluated[kind].sum()), int(initial.sum()))
        for col, (values, title) in enumerate(zip((left, right), titles)):
            ax = axes[row][col]
            image = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap="Blues")
            ax.set_facecolor("#eeeeee")
            ax.set_title(title, fontsize=9, wrap=True)
            ax.set_xticks(range(n), names, rotation=40, ha="right", fontsize=8)
            ax.set_yticks(range(n), names, fontsize=8)
            ax.set_xlabel("target (reads the message)", fontsize=8)
            ax.set_ylabel("source (sends)", fontsize=8)
            for i in range(n):
                for j in range(n):
                    if initial[i, j] != 1:
                        continue
                    if col == 0:
                        text = f"{prob[i, j]:.2f}"
                    elif evaluated[kind][i, j]:
                        text = "kept"
                    else:
                        text = "c" if pruned[kind][i, j] else "×"
                    dark = values[i, j] > 0.6
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
            if col == 0:
                fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{method} masks, [source][target]. Grey: no edge in the starting topology; "
                 "×: pruned; c: kept but cut to break a spatial cycle", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
