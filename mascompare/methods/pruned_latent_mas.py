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
   method.prune_rate) and every evaluated question runs that one fixed graph. masks.json and masks.png
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

import numpy as np
import torch

from mascompare.accounting import UsageRecord, prompt_hash
from mascompare.backends.base import Decoded
from mascompare.errors import UserError, is_int_at_least
from mascompare.methods import MethodOutput, Turn
from mascompare.methods import pruned_mas
from mascompare.methods.agent_graph import (EdgePolicy, Graph, calibrate, initial_masks, matrix_to_json, prune,
                                            read_masks, refuse_calibration_overlap, write_masks)
from mascompare.methods.latent_mas import latent_thought, realignment
from mascompare.methods.roles import agent_messages

log = logging.getLogger(__name__)

FINAL_SEES = ("all", "learned")
MASKS_FORMAT = "mascompare-pruned-latent-mas-masks/1"
KIND = "spatial"  # the only mask: latent agents think once, so there are no temporal edges


class Method:
    requires = frozenset({"chat", "hidden_states"})

    @staticmethod
    def check_config(cfg) -> None:
        """Every knob checked before the model loads: the graph and calibration knobs as pruned_mas does."""
        pruned_mas.Method.check_config(cfg)
        if cfg.rounds != 1 or cfg.decision != "llm":
            raise UserError("pruned_latent_mas runs one round and its final agent always decodes: "
                            f"method.rounds must be 1 and method.decision llm, got {cfg.rounds!r} and {cfg.decision!r}.")
        if not is_int_at_least(cfg.latent_steps, 0):
            raise UserError(f"method.latent_steps must be a non-negative integer, got {cfg.latent_steps!r}.")
        if not isinstance(cfg.realign, bool):
            raise UserError(f"method.realign must be true or false, got {cfg.realign!r}.")
        if cfg.final_sees not in FINAL_SEES:
            raise UserError(f"method.final_sees must be one of {', '.join(FINAL_SEES)}, got {cfg.final_sees!r}.")

    def __init__(self, cfg, backend, task, gen, accountant):
        self.check_config(cfg)
        self.cfg, self.backend, self.task, self.gen, self.accountant = cfg, backend, task, gen, accountant
        self.agents = pruned_mas.solver_agents(cfg)
        self.final = pruned_mas.decider_agent(cfg)
        self.final_learned = cfg.final_sees == "learned"
        # graph nodes: the latent agents, and the final agent when its in-edges are learned
        self.nodes = self.agents + ([self.final] if self.final_learned else [])
        self.steps = cfg.latent_steps
        self.prune_rate = float(cfg.prune_rate)
        w_a, self.target_norm = realignment(backend)
        self.w_a = w_a if cfg.realign else None  # realign=false keeps the norm rescale, as latent_mas
        self.graph: Graph | None = None  # the fixed graph evaluated; set by prepare()
        self.info: dict = {}

    # --- the graph -------------------------------------------------------------------------------

    def starting_mask(self) -> np.ndarray:
        """The topology's forward spatial edges over the agents, plus every agent -> final with final_sees=learned."""
        spatial, _ = initial_masks(self.cfg.topology, len(self.agents), self.cfg.seed)
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

    def prepare(self, run_dir=None, samples=None, resume: bool = True) -> None:
        """Decide the evaluated graph once per run, as pruned_mas does: load saved masks, or calibrate and
        prune, or keep the full starting graph (prune_rate 0)."""
        if self.graph is not None:
            return
        run_dir = Path(run_dir) if run_dir is not None else None
        own = run_dir / pruned_mas.MASKS_FILE if run_dir is not None else None
        start = self.starting_mask()
        policy = EdgePolicy.from_config(start, np.zeros_like(start), False, self.cfg.calibration, self.cfg.seed)
        evaluated = samples if samples is not None else self.task.load()
        if self.cfg.get("masks") is not None:
            calibration = self.load(Path(str(self.cfg.masks)), policy, evaluated)
        elif own is not None and resume and own.is_file():
            calibration = self.load(own, policy, evaluated)  # a resumed run keeps the graph its earlier samples used
        elif self.prune_rate > 0:
            calibration = calibrate(policy, self.cfg.calibration, self.task, self.accountant, evaluated, self.execute)
        else:
            calibration = {"performed": False, "reason": "method.prune_rate is 0: the full starting graph"}
        self.edge_policy = policy  # kept for inspection (tests, benchmarks)
        kept = prune(policy.masks[KIND], policy.scores(KIND), self.prune_rate)
        self.graph = Graph(kept, np.zeros_like(kept))
        names = [a.name for a in self.nodes]
        run = self.needed(self.graph)
        self.info = {
            "calibration": calibration,
            "graph": {
                "topology": self.cfg.topology, "prune_rate": self.prune_rate, "final_sees": self.cfg.final_sees,
                "agents": names, "final_agent": self.final.name, "latent_steps": self.steps,
                "edges_initial": int(policy.masks[KIND].sum()), "edges_kept": int(kept.sum()),
                "kept": [[names[i], names[j]] for i, j in zip(*np.nonzero(kept))],
                "agents_run": [a.name for a, needed in zip(self.agents, run) if needed],
                "agents_skipped": [a.name for a, needed in zip(self.agents, run) if not needed],
            },
        }
        log.info("pruned_latent_mas graph: %s", self.info["graph"])
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.save(run_dir / pruned_mas.MASKS_FILE, policy, kept)
            pruned_mas.draw_masks(run_dir / pruned_mas.MASKS_PICTURE, names, policy, {KIND: kept}, self.graph,
                                  kinds=(KIND,), method="pruned_latent_mas")
            self.info["masks_file"] = str(run_dir / pruned_mas.MASKS_FILE)

    def run_info(self) -> dict:
        """What run.json records about this method beyond the samples (under "method_info")."""
        return self.info

    def save(self, path: Path, policy: EdgePolicy, kept: np.ndarray) -> None:
        scores = policy.scores(KIND)
        data = {
            "format": MASKS_FORMAT,
            "orientation": "mask[source][target] over `agents` (the final agent last with final_sees=learned)",
            "agents": [a.name for a in self.nodes],
            "roles": [a.role for a in self.nodes],
            "final_sees": self.cfg.final_sees,
            "topology": self.cfg.topology,
            "prune_rate": self.prune_rate,
            "initial": policy.masks[KIND].tolist(),
            "logits": matrix_to_json(scores),
            "probabilities": matrix_to_json(1 / (1 + np.exp(-scores)), 4),
            "evaluated": kept.tolist(),
            "calibration": self.info["calibration"],
            "graph": self.info["graph"],
        }
        write_masks(path, data)

    def load(self, path: Path, policy: EdgePolicy, evaluated) -> dict:
        data = read_masks(path, MASKS_FORMAT, "pruned_latent_mas")
        names = [a.name for a in self.nodes]
        if data["agents"] != names:
            raise UserError(f"The masks in {path} are for graph nodes {data['agents']}, but this run's are {names} "
                            f"(method.agents, plus the final agent with method.final_sees=learned).")
        policy.masks[KIND] = np.asarray(data["initial"], dtype=int)
        policy.load_logits({KIND: np.asarray(data["logits"], dtype=float)})
        refuse_calibration_overlap(data.get("calibration") or {}, evaluated, path)
        return {**(data.get("calibration") or {}), "reused_from": str(path)}

    # --- execution -------------------------------------------------------------------------------

    def run(self, samples) -> list[MethodOutput]:
        self.prepare()
        return self.execute(samples, [self.graph] * len(samples), [s.id for s in samples], "eval")

    def execute(self, samples, graphs: list[Graph], ids: list[str], phase: str) -> list[MethodOutput]:
        """Every sample on its own graph, in one batch on one shared cache: the latent agents in index
        order, each attending to its sources' segments only, then the final agent decodes."""
        if len(samples) > 1 and self.padding_could_pass_window(samples):
            # a sliding window counts padding columns too: one sample at a time keeps every row exact
            return [output for k in range(len(samples))
                    for output in self.execute(samples[k:k + 1], graphs[k:k + 1], ids[k:k + 1], phase)]
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
            start = state.length
            hidden, _ = self.backend.prefill(state, prompts, visible)
            for _ in range(self.steps):
                hidden, _ = self.backend.step_embeds(state, latent_thought(hidden, self.w_a, self.target_norm),
                                                     visible)
            segments[a] = (start, state.length)
            self.record(ids, agent, a, self.messages(agent, samples), prompts, received,
                        time.perf_counter() - began, phase, latent_steps=self.steps,
                        forward_passes=[1 + self.steps] * len(samples), output_tokens=[0] * len(samples))
            turns.append(Turn(agent.name, agent.role, a, None))
        texts = [decoded.text for decoded in self.answer(state, samples, graphs, segments, ids, phase)]
        return [MethodOutput(text, turns + [Turn(self.final.name, self.final.role, len(self.agents), text)])
                for text in texts]

    def answer(self, state, samples, graphs, segments, ids, phase) -> list[Decoded]:
        """The final agent prefills its prompt on the segments it may see and decodes."""
        began = time.perf_counter()
        n = len(self.agents)
        visible = self.visible(state, segments, [g.spatial_sources(n) for g in graphs]) if self.final_learned else None
        received = state.real_positions(visible)
        prompts = self.prompts(self.final, samples)
        _, logits = self.backend.prefill(state, prompts, visible)
        seeds = self.gen.call_seeds([(sample_id, self.final.name, n) for sample_id in ids])
        decoded = self.backend.decode(state, logits, self.gen, visible, seeds)
        self.record(ids, self.final, n, self.messages(self.final, samples), prompts, received,
                    time.perf_counter() - began, phase, latent_steps=0, forward_passes=[len(d.tokens) for d in decoded],
                    output_tokens=[len(d.tokens) for d in decoded],
                    finish_reasons=[d.finish_reason for d in decoded], seeds=seeds)
        return decoded

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

    # --- prompts and accounting ------------------------------------------------------------------

    def messages(self, agent, samples) -> list[list[dict]]:
        instruction = self.task.answer_instruction()
        return [agent_messages(self.cfg.get("system"), agent, s.question, instruction) for s in samples]

    def prompts(self, agent, samples) -> list[list[int]]:
        return self.backend.encode_chat(self.messages(agent, samples))

    def record(self, ids, agent, index, messages, prompts, received, wall_time_s, phase, latent_steps,
               forward_passes, output_tokens, finish_reasons=None, seeds=None) -> None:
        """One record per sample; a thinking agent decodes nothing, so it has no finish reason or seed."""
        share = wall_time_s / len(ids)
        for i, sample_id in enumerate(ids):
            self.accountant.record(UsageRecord(
                sample_id, agent.name, agent.role, index, input_tokens=len(prompts[i]),
                output_tokens=output_tokens[i], latent_steps=latent_steps, kv_positions_received=received[i],
                forward_passes=forward_passes[i], wall_time_s=share, phase=phase,
                finish_reason=finish_reasons[i] if finish_reasons else None, seed=seeds[i] if seeds else None,
                prompt_hash=prompt_hash(messages[i]), messages=messages[i],
            ))
