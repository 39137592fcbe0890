"""latent_mas: LatentMAS (arXiv 2511.20639). Agents think in latent space; only the last agent writes text.

The same agents and role instructions as text_mas (conf/roles/mas.yaml, or a prompt pack: methods/packs.py);
only the channel differs. Latent agents write no text, so they take prompts and worked examples only: an agent
that sets `reads` or `execute` is refused.

1. All agents of a batch share ONE KV cache: the team's working memory.
2. Each non-final agent prefills its own prompt on that cache, then takes m latent steps
   (`method.latent_steps`): the last layer's hidden state h at its last position is mapped back
   to the input-embedding space,
       e = (h W_a) * target_norm / ||h W_a||,   W_a = (W_out^T W_out + lambda I)^-1 W_out^T W_in,
   and fed in as the next input embedding (methods/latent.py, shared with pruned_latent_mas). Its
   prompt and its m thoughts stay in the cache as its segment.
3. The final agent prefills its prompt on the cache (seeing everything before it) and decodes.

Sequential: planner -> critic -> refiner -> judger, each agent attending to all earlier ones.
Hierarchical: the experts must not see each other. They run side by side as extra rows of the
same forward passes, and their rows are then joined into one cache per sample, which the summarizer
reads whole. (Where the backend cannot join rows, e.g. sliding-window caches, they run one after
another, each hidden from the others by the per-row attention mask that hides padding.)

Differences from the reference implementation, on purpose:
- m = 0 still hands the cache on: the final agent attends to the other agents' prompts. The
  reference drops the cache when m = 0, which silently turns the method into a single agent.
- Batches are exact: every segment is left-padded, padding is masked out of every later
  attention, and positions count real tokens only (the reference lets pads into the cache, and
  its accuracy falls with batch size > 1). Greedy outputs at batch 8 equal those at batch 1.
  A sliding window (Gemma 3, Mistral, Qwen2 with one) counts padding columns, so a batch whose
  cache could pass the window with padding between a row's tokens runs one sample at a time.
- Hierarchical experts are independent, as the paper describes (the reference chains them).
- W_a and the target norm use the full vocabulary (no resizing), in the space the first layer
  receives (the embedding module's output), not the raw weight matrix: the same for most models,
  sqrt(d) times larger for Gemma.
- The final agent decodes with our own loop and the run's decoding settings (including top_k),
  not with the model's generation defaults.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mascompare.backends.base import LatentBackend
from mascompare.methods.base import Method, MethodOutput
from mascompare.methods.latent import (
    Thinker,
    latent_diagnostics,
    positions_from,
    record_block,
)
from mascompare.methods.packs import TeamSettings, prepare_prompts
from mascompare.methods.roles import (
    Prompts,
    Structure,
    agents_for,
)
from mascompare.records import Turn
from mascompare.settings import Flag, NonNegativeInt, Text


class LatentMASSettings(TeamSettings):
    text_agents = False  # latent agents write no text

    name: Text
    structure: Structure
    latent_steps: NonNegativeInt  # m: latent thoughts per non-final agent
    realign: Flag
    diagnostics: Flag


class LatentMAS(Method):
    name = "latent_mas"
    Settings = LatentMASSettings
    requires = LatentBackend

    def __init__(self, settings: LatentMASSettings, backend: LatentBackend, task, gen, accountant):
        super().__init__(settings, backend, task, gen, accountant)
        self.agents = agents_for(settings)
        self.hierarchical = settings.structure == "hierarchical"
        self.steps = settings.latent_steps
        self.thinker = Thinker(backend, self.steps, settings.realign)
        self.prompter = Prompts(settings.roles.system, settings.roles.formats, settings.fewshot,
                                task.answer_instruction())
        self.info: dict = {}

    def prepare(self, run_dir: Path | None, samples: list, resume: bool) -> None:
        """Refuse worked examples the run evaluates, and keep the prompt pack."""
        self.info = prepare_prompts(run_dir, self.settings.prompt_pack, self.agents, self.settings.fewshot, samples,
                                    resume)

    def run_info(self) -> dict:
        return self.info

    # -- the algorithm -------------------------------------------------------------------------------

    def run(self, samples) -> list[MethodOutput]:
        errors = [self.window_error(sample) for sample in samples]
        if not any(errors):
            return self.run_fitting(samples)
        # a sample whose shared cache would outgrow the context window fails alone; the others still run
        fitting = iter(self.run_fitting([s for s, e in zip(samples, errors) if e is None]) if not all(errors) else [])
        return [MethodOutput("", error=f"ContextWindowExceeded: {e}") if e else next(fitting) for e in errors]

    def window_error(self, sample) -> str | None:
        """Why this sample's shared cache (every prompt, every thought, then the answer) cannot fit the
        model's context window, or None."""
        window = self.backend.context_window
        if window is None:
            return None
        conversations = [self.messages(agent, [sample])[0] for agent in self.agents]
        for conversation in conversations:
            error = self.backend.window_error(sum(len(str(m["content"])) for m in conversation), None, 0)
            if error:
                return error
        positions = sum(map(len, self.backend.encode_chat(conversations))) + self.steps * (len(self.agents) - 1)
        if positions + self.gen.max_new_tokens <= window:
            return None
        return (f"the agents' shared cache needs {positions:,} positions plus generation.max_new_tokens="
                f"{self.gen.max_new_tokens}, beyond the model's context window of {window:,}; shorten the input, "
                "lower method.latent_steps or generation.max_new_tokens")

    def run_fitting(self, samples) -> list[MethodOutput]:
        if len(samples) > 1 and self.padding_could_pass_window(samples):
            # a sliding window counts padding columns too: one sample at a time keeps every row exact
            return [output for sample in samples for output in self.run_fitting([sample])]
        state, segments, turns, diagnostics = self.think_together(samples)
        answers = self.answer(state, segments, samples)
        final = self.agents[-1]
        return [
            MethodOutput(answer.text, turns + [Turn(final.name, final.role, len(self.agents) - 1, answer.text)],
                         diagnostics=diagnostics[i] or None)
            for i, answer in enumerate(answers)
        ]

    def think_together(self, samples):
        """Run every non-final agent: prefill its prompt on the shared cache, then m latent steps. Returns the
        cache, each agent's segment (its cache columns), the transcript and the diagnostics."""
        if self.hierarchical and self.backend.can_join_rows():
            return self.experts_side_by_side(samples)
        state = self.backend.new_cache(len(samples))
        segments: dict[str, tuple[int, int]] = {}
        turns, diagnostics = [], [{} for _ in samples]
        for index, agent in enumerate(self.agents[:-1]):
            start = time.perf_counter()
            # a hierarchical expert sees only its own segment; a sequential agent sees everything so far
            visible = torch.zeros_like(state.mask) if self.hierarchical else None
            received = state.real_positions(visible)
            received_from = positions_from(state, segments, visible)
            prompts = self.prompts(agent, samples)
            begin = state.length
            thoughts = self.thinker.think(state, prompts, visible)
            segments[agent.name] = (begin, state.length)
            self.record(samples, agent, index, prompts, received, received_from, time.perf_counter() - start,
                        latent_steps=self.steps, forward_passes=[1 + self.steps] * len(samples))
            turns.append(Turn(agent.name, agent.role, index, None))
            if self.settings.diagnostics:
                for i, notes in enumerate(diagnostics):
                    notes[agent.name] = latent_diagnostics([h[i] for h in thoughts])
        return state, segments, turns, diagnostics

    def experts_side_by_side(self, samples):
        """Hierarchical experts, which cannot see each other, all at once: one row per expert and sample.

        The same result as running them one after another with each seeing only its own segment, at the
        cost of one expert: their rows are joined into one cache per sample afterwards, and their positions
        count on from one expert to the next exactly as they would have in sequence.
        """
        start = time.perf_counter()
        experts, n = self.agents[:-1], len(samples)
        prompts = [self.prompts(agent, samples) for agent in experts]
        rows = [prompt for expert_prompts in prompts for prompt in expert_prompts]  # expert-major
        lengths = torch.tensor([len(prompt) + self.steps for prompt in rows]).view(len(experts), n)
        state = self.backend.new_cache(len(rows), (lengths.cumsum(dim=0) - lengths).flatten().tolist())
        thoughts = [h.view(len(experts), n, -1) for h in self.thinker.think(state, rows)]
        width = state.length  # every expert's block: its rows are this wide before they are joined
        state = self.backend.join_rows(state, len(experts))
        segments = {agent.name: (k * width, (k + 1) * width) for k, agent in enumerate(experts)}
        share = (time.perf_counter() - start) / len(experts)  # the experts' common time, split evenly
        turns, diagnostics = [], [{} for _ in samples]
        for index, agent in enumerate(experts):
            self.record(samples, agent, index, prompts[index], [0] * n, [{} for _ in samples], share,
                        latent_steps=self.steps, forward_passes=[1 + self.steps] * n)
            turns.append(Turn(agent.name, agent.role, index, None))
            if self.settings.diagnostics:
                for i, notes in enumerate(diagnostics):
                    notes[agent.name] = latent_diagnostics([h[index, i] for h in thoughts])
        return state, segments, turns, diagnostics

    def padding_could_pass_window(self, samples) -> bool:
        """Whether this batch's shared cache could pass the model's sliding window with padding in it."""
        lengths = [[len(prompt) for prompt in self.prompts(agent, samples)] for agent in self.agents]
        appended = self.steps * (len(self.agents) - 1) + self.gen.max_new_tokens
        return self.backend.padding_could_pass_window(lengths, appended)

    def prefill_final(self, state, segments, samples):
        """The final agent's prompt on top of everything in the cache. Returns its next-token logits, its
        prompts, and the cache positions each row received, in all and from each agent."""
        received, received_from = state.real_positions(), positions_from(state, segments)
        prompts = self.prompts(self.agents[-1], samples)
        _, logits = self.backend.prefill(state, prompts)
        return logits, prompts, received, received_from

    def answer(self, state, segments, samples):
        """The final agent reads the whole cache and decodes the team's answer."""
        start = time.perf_counter()
        final, index = self.agents[-1], len(self.agents) - 1
        logits, prompts, received, received_from = self.prefill_final(state, segments, samples)
        seeds = self.gen.call_seeds([(s.id, final.name, index) for s in samples])
        answers = self.backend.decode(state, logits, self.gen, seeds=seeds)
        self.record(samples, final, index, prompts, received, received_from, time.perf_counter() - start,
                    latent_steps=0, forward_passes=[len(a.tokens) for a in answers],
                    output_tokens=[len(a.tokens) for a in answers], finish_reasons=[a.finish_reason for a in answers],
                    seeds=seeds)
        return answers

    # -- prompts and accounting ----------------------------------------------------------------------

    def messages(self, agent, samples) -> list[list[dict]]:
        return [self.prompter.messages(agent, s.question) for s in samples]

    def prompts(self, agent, samples) -> list[list[int]]:
        return self.backend.encode_chat(self.messages(agent, samples))

    def record(self, samples, agent, index, prompts, received, received_from, wall_time_s, latent_steps,
               forward_passes, output_tokens=None, finish_reasons=None, seeds=None) -> None:
        record_block(self.accountant, [s.id for s in samples], agent, index, self.messages(agent, samples), prompts,
                     received, received_from, wall_time_s, "eval", latent_steps, forward_passes,
                     output_tokens or [0] * len(samples), finish_reasons, seeds)
