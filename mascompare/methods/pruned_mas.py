"""pruned_mas: AgentPrune. Agents on a spatial-temporal communication graph whose redundant edges are
learned on calibration questions and pruned one-shot; evaluation runs one fixed pruned graph.

The story, in the order it happens in a run (graph mechanics, the optimiser and calibration: methods/agent_graph.py;
how the agents' messages are built: methods/roles.py; prompt packs: methods/packs.py):

1. The graph. N solver agents (method.agents) talk for R rounds (method.rounds). A spatial edge
   i -> j shows agent i's answer of this round to agent j in the same round (so i runs first); a
   temporal edge i -> j shows i's answer of the previous round to j. The starting topology
   (method.topology) gives both masks. After the last round a decision node answers: `llm`, an
   extra agent that reads every agent's last answer, or `vote`, a majority over the answers the
   task's extractor finds in them (ties: the answer given first in agent order; no model call).
   The decision node is wired to every agent and never pruned (as in the paper), so pruning
   shortens prompts; it does not remove calls (N x R, plus 1 for `llm`).
2. Execution. In each round the realised spatial DAG runs layer by layer; one layer is one batched
   chat call across its agents and the batch's samples. Each prompt is built from method.formats: by
   default the agent's instruction, its worked examples if any, the question, then the messages its
   incoming edges carry, each labelled with the sender's role (previous round first, then this round),
   then the task's answer format. An agent that reads `numeric_hint` gets only the answers the task's
   extractor finds in those messages, as a hint line; an agent with `execute: true` has the code of its
   reply run in the code sandbox, and what it printed (or its error) is appended to its reply before
   anyone reads it (methods/execution.py).
3. Calibration (unless method.masks names saved masks, or method.prune_rate is 0). Every edge of
   the starting masks gets a logit (probability 1/2 at first). For each iteration a batch of
   calibration questions runs, each on its own graph sampled from the edge probabilities (cycles
   broken at a random edge on the cycle, seeded; one graph for all of a question's rounds, or a new
   one every round with method.graph_draw=per_round); the utility is 1 when the final answer is right
   (flexible extraction) and 0 otherwise; one Adam step follows on REINFORCE with a moving-average
   baseline (or none) plus the paper's nuclear-norm and anchor terms. The calibration questions never
   overlap the evaluated ones or the worked examples (checked by question text, and for saved masks also
   by id, whenever masks are learned or reused); their calls are recorded with
   phase="calibration" and reported separately (run.json "method_info.calibration", masks.json).
4. Pruning. Per mask, the top (1 - p) of the starting edges by learned logit survive (p =
   method.prune_rate; method.prune_count picks the rounding and tie order; method.prune_every applies p
   several times during calibration instead). The evaluated graph is that one deterministic graph
   (spatial cycles broken at their weakest edge), the same for every question; with
   method.test_graph=sampled each question draws its own from the learned, pruned distribution instead
   (seeded by the run seed and the sample id; recorded per sample under diagnostics.graph).
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
from collections import Counter
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import field_validator, model_validator

from mascompare.methods.agent_graph import (
    TOPOLOGIES,
    EdgePolicy,
    Graph,
    edge_list,
    fixed_graph,
    initial_masks,
    matrix_to_json,
    question_rng,
)
from mascompare.methods.base import Method, MethodOutput
from mascompare.methods.execution import ReplyRunner
from mascompare.methods.masks import (
    MaskSettings,
    keep_masks,
    learned_logits,
    pruned_masks,
    read_masks,
    stored_edges,
)
from mascompare.methods.packs import PackChoice, prepare_prompts, team_from_pack
from mascompare.methods.roles import (
    Agent,
    FewShot,
    GraphFormats,
    Prompts,
    answers_in,
    ask_agents,
    check_team,
    example_hashes,
    fields,
    fill,
    paragraphs,
    unique_names,
)
from mascompare.settings import PositiveInt, Text, choice, wanted

log = logging.getLogger(__name__)

DECISIONS = ("llm", "vote")
MASKS_FORMAT = "mascompare-pruned-mas-masks/1"
KINDS = ("spatial", "temporal")


class PrunedMASSettings(MaskSettings):
    """conf/method/pruned_mas.yaml explains each knob."""

    text_agents: ClassVar[bool] = True  # agents that write text may read numeric hints and execute their replies

    name: Text
    system: Annotated[str | None, wanted("a system message or null")]
    agents: Annotated[list[Agent], wanted("a list of at least one agent", min_length=1)]
    decider: Agent
    formats: GraphFormats
    fewshot: FewShot
    prompt_pack: PackChoice
    rounds: PositiveInt
    topology: Annotated[Literal[TOPOLOGIES], choice(TOPOLOGIES)]
    decision: Annotated[Literal[DECISIONS], choice(DECISIONS)]

    @model_validator(mode="before")
    @classmethod
    def with_prompt_pack(cls, data):
        return team_from_pack(data)

    @field_validator("agents")
    @classmethod
    def named_apart(cls, agents: list[Agent]) -> list[Agent]:
        return unique_names(agents, "method.agents")

    @model_validator(mode="after")
    def decider_named_apart(self):
        if self.decision == "llm" and self.decider.name in {a.name for a in self.agents}:
            raise ValueError("method.decider.name must differ from every name in method.agents.")
        check_team(self.team(), self.formats, self.fewshot, text=self.text_agents)
        return self

    def team(self) -> list[Agent]:
        """Every agent that is asked: the solvers, and the decider when it answers."""
        return [*self.agents, self.decider] if self.decision == "llm" else list(self.agents)


# --- the method ----------------------------------------------------------------------------------


class PrunedMAS(Method):
    name = "pruned_mas"
    Settings = PrunedMASSettings

    def __init__(self, settings: PrunedMASSettings, backend, task, gen, accountant):
        super().__init__(settings, backend, task, gen, accountant)
        self.agents = list(settings.agents)
        self.decider = settings.decider if settings.decision == "llm" else None
        self.formats = settings.formats
        self.prompts = Prompts(settings.system, settings.formats, settings.fewshot, task.answer_instruction())
        self.runner = ReplyRunner(settings.formats)
        self.rounds = settings.rounds
        self.prune_rate = settings.prune_rate
        self.graph: Graph | None = None  # the fixed graph evaluated; set by prepare()
        self.info: dict = {}

    # --- before evaluation: masks ----------------------------------------------------------------

    def prepare(self, run_dir: Path | None, samples: list, resume: bool) -> None:
        """Decide the evaluated graph once per run (methods/masks.py: saved masks, calibration, or the unpruned
        starting graph), prune it, and keep masks.json and masks.png in `run_dir`. `samples` are all the samples
        the run evaluates: the calibration questions and the worked examples must avoid them."""
        team, settings = self.settings.team(), self.settings
        prompt_info = prepare_prompts(run_dir, settings.prompt_pack, team, settings.fewshot, samples, resume,
                                      self.runner)
        spatial, temporal = initial_masks(settings.topology, len(self.agents), settings.seed)
        policy = self.policy(spatial, temporal)
        calibration, saved = learned_logits(policy, settings, run_dir=run_dir, resume=resume, evaluated=samples,
                                            task=self.task, accountant=self.accountant, execute=self.execute,
                                            read=self.read_masks, rounds=self.rounds,
                                            examples=example_hashes(team, settings.fewshot))
        self.edge_policy = policy  # kept for inspection (tests, benchmarks); draws sampled test graphs
        scores = {k: policy.scores(k) for k in KINDS}
        pruned = pruned_masks(policy, settings, saved)
        policy.alive = {k: pruned[k].copy() for k in KINDS}  # test graphs are drawn among the edges kept
        self.graph, removed = fixed_graph(pruned, scores)
        names = [a.name for a in self.agents]
        self.info = {
            "calibration": calibration,
            "graph": {
                "topology": settings.topology, "rounds": self.rounds, "decision": settings.decision,
                "prune_rate": self.prune_rate, "agents": names,
                "edges_initial": {k: int(policy.masks[k].sum()) for k in KINDS},
                "edges_pruned": {k: int(pruned[k].sum()) for k in KINDS},
                "edges_evaluated": self.graph.edges(),
                "spatial_edges_removed_to_break_cycles": [[names[i], names[j]] for i, j in removed],
                "layers": [[names[i] for i in layer] for layer in self.graph.layers],
                "temporal_edges_used": self.rounds > 1,
            },
            "learning_rules": self.learning_rules(),
            **prompt_info,
        }
        log.info("pruned_mas graph: %s", self.info["graph"])
        if run_dir is not None:
            path = keep_masks(run_dir, self.masks_data(policy, pruned), lambda picture: draw_masks(
                picture, names, policy, pruned, self.graph, rounds=self.rounds))
            self.info["masks_file"] = str(path)

    def policy(self, spatial, temporal) -> EdgePolicy:
        return EdgePolicy.from_config(spatial, temporal, self.rounds > 1, self.settings.calibration, self.settings.seed)

    def learning_rules(self) -> dict:
        settings = self.settings
        return {**settings.learning_rules(), "graph_draw": settings.graph_draw, "test_graph": settings.test_graph,
                "baseline": "none" if settings.calibration.baseline_momentum is None else "moving average"}

    def run_info(self) -> dict:
        return self.info

    # --- masks on disk ---------------------------------------------------------------------------

    def masks_data(self, policy: EdgePolicy, pruned: dict) -> dict:
        return {
            "format": MASKS_FORMAT,
            "orientation": "mask[source][target]; agents in the order of `agents`",
            "agents": [a.name for a in self.agents],
            "roles": [a.role for a in self.agents],
            "topology": self.settings.topology,
            "rounds": self.rounds,
            "decision": self.settings.decision,
            "prune_rate": self.prune_rate,
            "learning_rules": self.settings.learning_rules(),
            "learned": list(policy.learned),
            "initial": {k: policy.masks[k].tolist() for k in KINDS},
            "logits": {k: matrix_to_json(policy.scores(k)) for k in KINDS},
            "probabilities": {k: matrix_to_json(1 / (1 + np.exp(-policy.scores(k))), 4) for k in KINDS},
            "pruned": {k: pruned[k].tolist() for k in KINDS},
            "evaluated": {"spatial": self.graph.spatial.tolist(), "temporal": self.graph.temporal.tolist()},
            "calibration": self.info["calibration"],
            "graph": self.info["graph"],
        }

    def read_masks(self, path: Path, policy: EdgePolicy) -> dict:
        data = read_masks(path, MASKS_FORMAT, "pruned_mas", [a.name for a in self.agents], "agents")
        logits = {}
        for kind in KINDS:
            policy.masks[kind], logits[kind] = stored_edges(path, data, [kind], len(self.agents))
            policy.alive[kind] = policy.masks[kind].copy()
        policy.load_logits(logits)
        if data["topology"] != self.settings.topology or data["rounds"] != self.rounds:
            log.warning("masks from %s were learned for topology %s with %d rounds; running %d rounds",
                        path, data["topology"], data["rounds"], self.rounds)
        if "temporal" not in data.get("learned", []):
            policy.learned = ("spatial",)  # temporal logits never learned there: keep those edges unpruned
        return data

    # --- evaluation ------------------------------------------------------------------------------

    def run(self, samples) -> list[MethodOutput]:
        ids = [s.id for s in samples]
        if self.settings.test_graph == "fixed":
            return self.execute(samples, [(self.graph,) * self.rounds] * len(samples), ids, phase="eval")
        draws = [self.question_graphs(sample_id) for sample_id in ids]
        outputs = self.execute(samples, [graphs for graphs, _ in draws], ids, phase="eval")
        for output, (_, record) in zip(outputs, draws):
            output.diagnostics = {**(output.diagnostics or {}), "graph": record}
        return outputs

    def question_graphs(self, sample_id: str) -> tuple[tuple[Graph, ...], dict]:
        """method.test_graph=sampled: this question's graphs, drawn from the learned, pruned distribution with its
        own seed, and their record (per round, the edges each carried)."""
        seed, rng = question_rng(self.gen.seed, self.settings.seed, sample_id, self.gen.repeat)
        draw = self.edge_policy.sample(self.rounds, self.settings.graph_draw == "per_round", rng)
        names = [a.name for a in self.agents]
        rounds = [{"spatial": edge_list(g.spatial, names), "temporal": edge_list(g.temporal, names) if r else []}
                  for r, g in enumerate(draw.graphs)]
        return draw.graphs, {"seed": seed, "rounds": rounds}

    def execute(self, samples, graphs: list[tuple[Graph, ...]], ids: list[str], phase: str) -> list[MethodOutput]:
        """Run every sample on its own graphs (one per round): R rounds of layer-by-layer agent calls, then the
        decision. Calls are batched by layer depth across samples (one call per layer when all graphs agree)."""
        n, outputs = len(self.agents), [MethodOutput("") for _ in samples]
        previous: list[list[str | None]] = [[None] * n for _ in samples]
        for round in range(self.rounds):
            current: list[list[str | None]] = [[None] * n for _ in samples]
            now = [g[round] for g in graphs]
            for depth in range(max(len(g.layers) for g in now)):
                jobs = [(s, a) for a in range(n) for s, g in enumerate(now)
                        if depth < len(g.layers) and a in g.layers[depth]]
                built = [self.agent_prompt(samples[s].question, a, now[s], current[s], previous[s], round)
                         for s, a in jobs]
                texts = self.ask(jobs, [c for c, _ in built], ids, round, outputs, phase, [note for _, note in built])
                for (s, a), text in zip(jobs, texts):
                    current[s][a] = text
            previous = current
        if self.decider is not None:
            jobs = [(s, n) for s in range(len(samples))]
            built = [self.decision_prompt(samples[s].question, previous[s]) for s in range(len(samples))]
            texts = self.ask(jobs, [c for c, _ in built], ids, self.rounds, outputs, phase, [note for _, note in built])
            for output, text in zip(outputs, texts):
                output.final_text = text
        else:
            for output, texts in zip(outputs, previous):
                output.final_text, output.diagnostics = self.vote(texts)
        return outputs

    def ask(self, jobs, conversations, ids, round, outputs, phase, notes) -> list[str]:
        """One batched chat call for (sample, agent index) jobs; the decider is index len(agents)."""
        everyone = [*self.agents, self.decider]
        return ask_agents(self.backend, self.gen, self.accountant, [(s, everyone[a]) for s, a in jobs],
                          conversations, ids, round, outputs, phase, self.runner, notes)

    def agent_prompt(self, question, a, graph: Graph, current, previous, round) -> tuple[list[dict], dict]:
        """Agent a's messages in this round, and what its call's record notes (the hint it was shown)."""
        agent = self.agents[a]
        received = {
            "previous_round": [(i, previous[i]) for i in graph.temporal_sources(a) if previous[i] is not None]
            if round > 0 else [],
            "this_round": [(i, current[i]) for i in graph.spatial_sources(a) if current[i] is not None],
        }
        if agent.hinted:  # the answers only, in the order the blocks are shown
            shown = [block for template in self.formats.neighbours for block in fields(template)]
            answers = answers_in(self.task, [text for block in shown for _, text in received[block]])
            return self.prompts.messages(agent, question, hint=self.prompts.hint(answers)), {"hint": answers}
        blocks = {kind: fill(getattr(self.formats, kind), messages="\n\n".join(
            self.prompts.message(self.agents[i], text, own=i == a) for i, text in texts)) if texts else ""
            for kind, texts in received.items()}
        return self.prompts.messages(agent, question, neighbours=paragraphs(self.formats.neighbours, **blocks)), {}

    def decision_prompt(self, question, texts) -> tuple[list[dict], dict]:
        """The decider reads every agent's last answer (an agent that failed: an empty one)."""
        if self.decider.hinted:
            answers = answers_in(self.task, [text for text in texts if text is not None])
            return self.prompts.messages(self.decider, question, hint=self.prompts.hint(answers)), {"hint": answers}
        context = "\n\n".join(self.prompts.message(agent, text or "") for agent, text in zip(self.agents, texts))
        return self.prompts.messages(self.decider, question, neighbours=context), {}

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
