"""pruned_latent_mas: a learned communication graph over latent working memory.

AgentPrune (pruned_mas) learns which text messages are worth sending; LatentMAS (latent_mas) hands every
agent the KV cache of every earlier agent. Here agents think in latent space as in latent_mas, and a
graph learned as in pruned_mas decides which earlier agents' KV segments each agent may attend to.

1. The agents. N latent agents (method.agents: by default pruned_mas's solvers, so the two pruned
   methods differ only in the channel) run in index order on ONE shared KV cache. Agent j prefills its
   prompt and takes m latent steps (method.latent_steps), exactly as a non-final latent_mas agent; its
   prompt and its m thoughts form its segment of the cache. A final agent (method.decider) prefills its
   prompt on the cache and decodes the answer.
2. The graph. A spatial edge i -> j (i < j: agents run in index order, so only forward edges exist; the
   starting topology's backward edges are dropped) puts i's segment into j's visible mask: j attends to
   the segments of its sources and to nothing else (the per-row mask that hides padding hides the
   other segments too). The final agent sees every segment (method.final_sees=all) or only those its
   learned in-edges allow (final_sees=learned: it is node N of the graph, its in-edges learned and
   pruned with the others). An agent whose segment no agent that runs and not the final agent may see
   is not run at all.
3. Calibration, pruning, persistence: as pruned_mas (the shared code is in methods/agent_graph.py). One
   edge logit per starting edge; REINFORCE with a moving-average baseline plus the low-rank and anchor
   terms, on graphs sampled per calibration question (questions disjoint from the evaluated ones, calls
   recorded with phase="calibration"); then the top (1 - p) edges by logit survive (p =
   method.prune_rate) and every evaluated question runs that one fixed graph (or, with
   method.test_graph=sampled, a graph of its own drawn among the kept edges). masks.json and masks.png
   go to the run directory; method.masks=<masks.json> reuses learned logits; prune_rate=0 is the full
   graph with no calibration. While calibrating, each question of a batch has its own graph: an agent
   runs for the whole batch when any question's graph needs it (the rows that do not need it ignore it).

With latent_mas's agents as method.agents and its final agent as method.decider, topology=full and
prune_rate=0 give latent_mas sequential output for output: every agent sees every earlier one.

Batches are exact as in latent_mas (left-padded segments, padding masked, positions counting real tokens;
a sliding-window model whose cache could pass its window with padding in it runs one sample at a time).

Savings are recorded per agent and sample like every model call: the KV positions each agent attends to
(kv_positions_received: the real cache positions its mask lets it see) and its forward passes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import model_validator

from mascompare.backends.base import LatentBackend
from mascompare.methods.agent_graph import (
    EdgePolicy,
    Graph,
    edge_list,
    initial_masks,
    matrix_to_json,
    question_rng,
)
from mascompare.methods.base import Method, MethodOutput
from mascompare.methods.latent import Thinker, positions_from, record_block
from mascompare.methods.masks import (
    keep_masks,
    learned_logits,
    pruned_masks,
    read_masks,
    stored_edges,
)
from mascompare.methods.packs import prepare_prompts
from mascompare.methods.pruned_mas import PrunedMASSettings, draw_masks
from mascompare.methods.roles import Prompts, example_hashes
from mascompare.records import Turn
from mascompare.settings import Flag, NonNegativeInt, choice

log = logging.getLogger(__name__)

FINAL_SEES = ("all", "learned")
MASKS_FORMAT = "mascompare-pruned-latent-mas-masks/1"
KIND = "spatial"  # the only mask: latent agents think once, so there are no temporal edges


class PrunedLatentMASSettings(PrunedMASSettings):
    """pruned_mas's knobs (conf/method/pruned_mas.yaml), with rounds 1 and decision llm, and these. Its agents
    write no text: a prompt pack gives them prompts and examples, and `reads` or `execute` are refused."""

    text_agents = False

    latent_steps: NonNegativeInt
    realign: Flag
    final_sees: Annotated[Literal[FINAL_SEES], choice(FINAL_SEES)]

    @model_validator(mode="after")
    def one_round_and_a_final_agent(self):
        if self.rounds != 1 or self.decision != "llm":
            raise ValueError("pruned_latent_mas runs one round and its final agent always decodes: method.rounds "
                             f"must be 1 and method.decision llm, got {self.rounds!r} and {self.decision!r}.")
        return self


class PrunedLatentMAS(Method):
    name = "pruned_latent_mas"
    Settings = PrunedLatentMASSettings
    requires = LatentBackend

    def __init__(self, settings: PrunedLatentMASSettings, backend: LatentBackend, task, gen, accountant):
        super().__init__(settings, backend, task, gen, accountant)
        self.agents = list(settings.agents)
        self.final = settings.decider
        self.final_learned = settings.final_sees == "learned"
        # graph nodes: the latent agents, and the final agent when its in-edges are learned
        self.nodes = self.agents + ([self.final] if self.final_learned else [])
        self.steps = settings.latent_steps
        self.prune_rate = settings.prune_rate
        self.thinker = Thinker(backend, self.steps, settings.realign)
        self.prompter = Prompts(settings.system, settings.formats, settings.fewshot, task.answer_instruction())
        self.graph: Graph | None = None  # the fixed graph evaluated; set by prepare()
        self.info: dict = {}

    # --- the graph -------------------------------------------------------------------------------

    def starting_mask(self) -> np.ndarray:
        """The topology's forward spatial edges over the agents, plus every agent -> final with final_sees=learned."""
        spatial, _ = initial_masks(self.settings.topology, len(self.agents), self.settings.seed)
        mask = np.zeros((len(self.nodes), len(self.nodes)), dtype=int)
        mask[: len(self.agents), : len(self.agents)] = np.triu(spatial, k=1)
        if self.final_learned:
            mask[: len(self.agents), -1] = 1
        return mask

    def needed(self, graph: Graph) -> list[bool]:
        """Per agent, whether its segment is seen by the final agent or by an agent that runs."""
        n = len(self.agents)
        sees = graph.spatial[:n, n] if self.final_learned else np.ones(n, dtype=int)
        needed = [False] * n
        for i in reversed(range(n)):
            needed[i] = bool(sees[i]) or any(graph.spatial[i, j] and needed[j] for j in range(i + 1, n))
        return needed

    # --- before evaluation: masks ----------------------------------------------------------------

    def prepare(self, run_dir: Path | None, samples: list, resume: bool) -> None:
        """Decide the evaluated graph once per run, as pruned_mas does (methods/masks.py)."""
        settings, team = self.settings, [*self.agents, self.final]
        prompt_info = prepare_prompts(run_dir, settings.prompt_pack, team, settings.fewshot, samples, resume)
        start = self.starting_mask()
        policy = EdgePolicy.from_config(start, np.zeros_like(start), False, settings.calibration, settings.seed)
        calibration, saved = learned_logits(policy, settings, run_dir=run_dir, resume=resume, evaluated=samples,
                                            task=self.task, accountant=self.accountant, execute=self.execute,
                                            read=self.read_masks, examples=example_hashes(team, settings.fewshot))
        self.edge_policy = policy  # kept for inspection (tests, benchmarks); draws sampled test graphs
        kept = pruned_masks(policy, settings, saved)[KIND]
        policy.alive[KIND] = kept.copy()  # test graphs are drawn among the edges kept
        self.graph = Graph(kept, np.zeros_like(kept))
        names = [a.name for a in self.nodes]
        run = self.needed(self.graph)
        self.info = {
            "calibration": calibration,
            "graph": {
                "topology": self.settings.topology, "prune_rate": self.prune_rate,
                "final_sees": self.settings.final_sees, "agents": names, "final_agent": self.final.name,
                "latent_steps": self.steps, "edges_initial": int(policy.masks[KIND].sum()),
                "edges_kept": int(kept.sum()), "kept": [[names[i], names[j]] for i, j in zip(*np.nonzero(kept))],
                "agents_run": [a.name for a, needed in zip(self.agents, run) if needed],
                "agents_skipped": [a.name for a, needed in zip(self.agents, run) if not needed],
            },
            "learning_rules": {**settings.learning_rules(), "test_graph": settings.test_graph,
                               "baseline": "none" if settings.calibration.baseline_momentum is None
                               else "moving average"},
            **prompt_info,
        }
        log.info("pruned_latent_mas graph: %s", self.info["graph"])
        if run_dir is not None:
            path = keep_masks(run_dir, self.masks_data(policy, kept), lambda picture: draw_masks(
                picture, names, policy, {KIND: kept}, self.graph, kinds=(KIND,), method="pruned_latent_mas"))
            self.info["masks_file"] = str(path)

    def run_info(self) -> dict:
        return self.info

    def masks_data(self, policy: EdgePolicy, kept: np.ndarray) -> dict:
        scores = policy.scores(KIND)
        return {
            "format": MASKS_FORMAT,
            "orientation": "mask[source][target] over `agents` (the final agent last with final_sees=learned)",
            "agents": [a.name for a in self.nodes],
            "roles": [a.role for a in self.nodes],
            "final_sees": self.settings.final_sees,
            "topology": self.settings.topology,
            "prune_rate": self.prune_rate,
            "learning_rules": self.settings.learning_rules(),
            "initial": policy.masks[KIND].tolist(),
            "logits": matrix_to_json(scores),
            "probabilities": matrix_to_json(1 / (1 + np.exp(-scores)), 4),
            "pruned": {KIND: kept.tolist()},
            "evaluated": kept.tolist(),
            "calibration": self.info["calibration"],
            "graph": self.info["graph"],
        }

    def read_masks(self, path: Path, policy: EdgePolicy) -> dict:
        data = read_masks(path, MASKS_FORMAT, "pruned_latent_mas", [a.name for a in self.nodes],
                          "graph nodes (method.agents, plus the final agent with method.final_sees=learned)")
        policy.masks[KIND], logits = stored_edges(path, data, [], len(self.nodes))
        policy.alive[KIND] = policy.masks[KIND].copy()
        policy.load_logits({KIND: logits})
        return data

    # --- execution -------------------------------------------------------------------------------

    def run(self, samples) -> list[MethodOutput]:
        ids = [s.id for s in samples]
        if self.settings.test_graph == "fixed":
            return self.execute(samples, [(self.graph,)] * len(samples), ids, "eval")
        names = [a.name for a in self.nodes]
        draws = []
        for sample_id in ids:  # method.test_graph=sampled: each question's graph among the kept edges, own seed
            seed, rng = question_rng(self.gen.seed, self.settings.seed, sample_id, self.gen.repeat)
            graph = self.edge_policy.sample(1, False, rng).graphs[0]
            draws.append((graph, {"seed": seed, "rounds": [{"spatial": edge_list(graph.spatial, names)}]}))
        outputs = self.execute(samples, [(graph,) for graph, _ in draws], ids, "eval")
        for output, (_, record) in zip(outputs, draws):
            output.diagnostics = {"graph": record}
        return outputs

    def execute(self, samples, graphs: list[tuple[Graph, ...]], ids: list[str], phase: str) -> list[MethodOutput]:
        """Every sample on its own graph (its one round's), in one batch on one shared cache: the latent agents
        in index order, each attending to its sources' segments only, then the final agent decodes."""
        graphs = [rounds[0] for rounds in graphs]
        if len(samples) > 1 and self.padding_could_pass_window(samples):
            # a sliding window counts padding columns too: one sample at a time keeps every row exact
            return [output for k in range(len(samples))
                    for output in self.execute(samples[k:k + 1], [(graphs[k],)], ids[k:k + 1], phase)]
        state = self.backend.new_cache(len(samples))
        segments: dict[int, tuple[int, int]] = {}  # agent index -> its cache columns [start, end)
        needed = [self.needed(g) for g in graphs]
        turns = []
        for a, agent in enumerate(self.agents):
            if not any(row[a] for row in needed):
                continue  # nobody may see this agent's thoughts: it does not run
            began = time.perf_counter()
            visible = self.visible(state, segments, [g.spatial_sources(a) for g in graphs])
            received = state.real_positions(visible)
            prompts = self.prompts(agent, samples)
            received_from = positions_from(state, self.named(segments), visible)
            start = state.length
            self.thinker.think(state, prompts, visible)
            segments[a] = (start, state.length)
            self.record(ids, agent, a, samples, prompts, received, received_from, time.perf_counter() - began,
                        phase, latent_steps=self.steps, forward_passes=[1 + self.steps] * len(samples))
            turns.append(Turn(agent.name, agent.role, a, None))
        answers = self.answer(state, samples, graphs, segments, ids, phase)
        return [MethodOutput(answer.text, turns + [Turn(self.final.name, self.final.role, len(self.agents),
                                                        answer.text)])
                for answer in answers]

    def answer(self, state, samples, graphs, segments, ids, phase):
        """The final agent prefills its prompt on the segments it may see and decodes."""
        began = time.perf_counter()
        n = len(self.agents)
        visible = self.visible(state, segments, [g.spatial_sources(n) for g in graphs]) if self.final_learned else None
        received = state.real_positions(visible)
        received_from = positions_from(state, self.named(segments), visible)
        prompts = self.prompts(self.final, samples)
        _, logits = self.backend.prefill(state, prompts, visible)
        seeds = self.gen.call_seeds([(sample_id, self.final.name, n) for sample_id in ids])
        answers = self.backend.decode(state, logits, self.gen, visible, seeds)
        self.record(ids, self.final, n, samples, prompts, received, received_from, time.perf_counter() - began,
                    phase, latent_steps=0, forward_passes=[len(a.tokens) for a in answers],
                    output_tokens=[len(a.tokens) for a in answers], finish_reasons=[a.finish_reason for a in answers],
                    seeds=seeds)
        return answers

    def padding_could_pass_window(self, samples) -> bool:
        """Whether this batch's shared cache could pass the model's sliding window with padding in it."""
        lengths = [[len(prompt) for prompt in self.prompts(agent, samples)] for agent in [*self.agents, self.final]]
        return self.backend.padding_could_pass_window(lengths, self.steps * len(self.agents) + self.gen.max_new_tokens)

    def visible(self, state, segments, sources: list[list[int]]) -> torch.Tensor:
        """[B, cache length] 0/1: per row, the columns of the segments of that row's sources that ran."""
        visible = torch.zeros_like(state.mask)
        for row, row_sources in enumerate(sources):
            for i in row_sources:
                if i in segments:
                    begin, end = segments[i]
                    visible[row, begin:end] = 1
        return visible

    def named(self, segments: dict[int, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {self.agents[i].name: columns for i, columns in segments.items()}

    # --- prompts and accounting ------------------------------------------------------------------

    def messages(self, agent, samples) -> list[list[dict]]:
        return [self.prompter.messages(agent, s.question) for s in samples]

    def prompts(self, agent, samples) -> list[list[int]]:
        return self.backend.encode_chat(self.messages(agent, samples))

    def record(self, ids, agent, index, samples, prompts, received, received_from, wall_time_s, phase, latent_steps,
               forward_passes, output_tokens=None, finish_reasons=None, seeds=None) -> None:
        record_block(self.accountant, ids, agent, index, self.messages(agent, samples), prompts, received,
                     received_from, wall_time_s, phase, latent_steps, forward_passes,
                     output_tokens or [0] * len(ids), finish_reasons, seeds)
