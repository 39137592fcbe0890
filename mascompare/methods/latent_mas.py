"""latent_mas: LatentMAS (arXiv 2511.20639). Agents think in latent space; only the last agent writes text.

The same agents and role instructions as text_mas (conf/roles/mas.yaml); only the channel differs.

1. All agents of a batch share ONE KV cache: the team's working memory.
2. Each non-final agent prefills its own prompt on that cache, then takes m latent steps
   (`method.latent_steps`): the last layer's hidden state h at its last position is mapped back
   to the input-embedding space,
       e = (h W_a) * target_norm / ||h W_a||,   W_a = (W_out^T W_out + lambda I)^-1 W_out^T W_in,
   and fed in as the next input embedding. Its prompt and its m thoughts stay in the cache.
   W_in and target_norm (the mean norm of W_in's rows) are taken where the first layer reads its
   input: the embedding module's output for every token, which some models scale (Gemma 3
   multiplies the embedding matrix by sqrt(d) inside that module).
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
import weakref

import torch

from mascompare.accounting import UsageRecord, prompt_hash
from mascompare.backends.base import Decoded
from mascompare.errors import UserError, is_int_at_least
from mascompare.methods import MethodOutput, Turn
from mascompare.methods.roles import agent_messages, agents_for

RIDGE_LAMBDA = 1e-5  # the reference's regulariser for the least-squares realignment

_realignments: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # backend -> (W_a, target_norm)


def realignment(backend) -> tuple[torch.Tensor, torch.Tensor]:
    """W_a [d, d] and the mean input-embedding norm, in fp32, computed once per backend (from its model's
    `embedding_matrices`).

    W_a solves min ||W_out W_a - W_in||^2 + lambda ||W_a||^2: it maps an output-space hidden state
    to the input space the way the vocabulary maps one embedding matrix onto the other.
    """
    if backend not in _realignments:
        w_in, w_out = backend.embedding_matrices()
        gram = w_out.T @ w_out + RIDGE_LAMBDA * torch.eye(w_out.shape[1], device=w_out.device)
        w_a = torch.linalg.solve(gram, w_out.T @ w_in)
        _realignments[backend] = (w_a, w_in.norm(dim=1).mean())
    return _realignments[backend]


def latent_thought(hidden: torch.Tensor, w_a: torch.Tensor | None, target_norm: torch.Tensor) -> torch.Tensor:
    """The realigned latent thought: h W_a (h itself when w_a is None) rescaled to the mean input-embedding norm."""
    aligned = hidden.float() if w_a is None else hidden.float() @ w_a
    aligned = aligned * (target_norm / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    return aligned.to(hidden.dtype)


class Method:
    requires = frozenset({"chat", "hidden_states"})

    @staticmethod
    def check_config(cfg) -> None:
        """Every knob checked before the model loads."""
        agents_for(cfg)
        steps = cfg.latent_steps
        if not is_int_at_least(steps, 0):
            raise UserError(f"method.latent_steps must be a non-negative integer, got {steps!r}.")
        for flag in ("realign", "diagnostics"):
            if not isinstance(cfg[flag], bool):
                raise UserError(f"method.{flag} must be true or false, got {cfg[flag]!r}.")

    def __init__(self, cfg, backend, task, gen, accountant):
        self.check_config(cfg)
        self.cfg, self.backend, self.task, self.gen, self.accountant = cfg, backend, task, gen, accountant
        self.agents = agents_for(cfg)
        self.hierarchical = cfg.structure == "hierarchical"
        self.steps = cfg.latent_steps
        w_a, self.target_norm = realignment(backend)
        # realign=false keeps the norm rescale (as the reference does): only the map becomes the identity
        self.w_a = w_a if cfg.realign else None

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
        window = getattr(self.backend, "context_window", None)
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
        state, turns, diagnostics = self.think_together(samples)
        texts = [decoded.text for decoded in self.answer(state, samples)]
        final = self.agents[-1]
        return [
            MethodOutput(text, turns + [Turn(final.name, final.role, len(self.agents) - 1, text)],
                         diagnostics=diagnostics[i] or None)
            for i, text in enumerate(texts)
        ]

    def think_together(self, samples):
        """Run every non-final agent: prefill its prompt on the shared cache, then m latent steps."""
        if self.hierarchical and self.backend.can_join_rows():
            return self.experts_side_by_side(samples)
        state = self.backend.new_cache(len(samples))
        turns, diagnostics = [], [{} for _ in samples]
        for index, agent in enumerate(self.agents[:-1]):
            start = time.perf_counter()
            # a hierarchical expert sees only its own segment; a sequential agent sees everything so far
            visible = torch.zeros_like(state.mask) if self.hierarchical else None
            received = state.real_positions(visible)
            prompts = self.prompts(agent, samples)
            hidden, _ = self.backend.prefill(state, prompts, visible)
            thoughts = []
            for _ in range(self.steps):
                thoughts.append(hidden)
                hidden, _ = self.backend.step_embeds(state, self.to_input_space(hidden), visible)
            self.record(samples, agent, index, prompts, received, time.perf_counter() - start,
                        latent_steps=self.steps, forward_passes=1 + self.steps, output_tokens=[0] * len(samples))
            turns.append(Turn(agent.name, agent.role, index, None))
            if self.cfg.diagnostics:
                for i, notes in enumerate(diagnostics):
                    notes[agent.name] = latent_diagnostics([h[i] for h in thoughts])
        return state, turns, diagnostics

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
        hidden, _ = self.backend.prefill(state, rows)
        thoughts = []
        for _ in range(self.steps):
            thoughts.append(hidden.view(len(experts), n, -1))
            hidden, _ = self.backend.step_embeds(state, self.to_input_space(hidden))
        state = self.backend.join_rows(state, len(experts))
        share = (time.perf_counter() - start) / len(experts)  # the experts' common time, split evenly
        turns, diagnostics = [], [{} for _ in samples]
        for index, agent in enumerate(experts):
            self.record(samples, agent, index, prompts[index], [0] * n, share, latent_steps=self.steps,
                        forward_passes=1 + self.steps, output_tokens=[0] * n)
            turns.append(Turn(agent.name, agent.role, index, None))
            if self.cfg.diagnostics:
                for i, notes in enumerate(diagnostics):
                    notes[agent.name] = latent_diagnostics([h[index, i] for h in thoughts])
        return state, turns, diagnostics

    def padding_could_pass_window(self, samples) -> bool:
        """Whether this batch's shared cache could pass the model's sliding window with padding in it."""
        lengths = [[len(prompt) for prompt in self.prompts(agent, samples)] for agent in self.agents]
        appended = self.steps * (len(self.agents) - 1) + self.gen.max_new_tokens
        return self.backend.padding_could_pass_window(lengths, appended)

    def to_input_space(self, hidden: torch.Tensor) -> torch.Tensor:
        return latent_thought(hidden, self.w_a, self.target_norm)

    def prefill_final(self, state, samples):
        """The final agent's prompt on top of everything in the cache.

        Returns its next-token logits, its prompts, the cache positions each row received, and the time taken.
        """
        start = time.perf_counter()
        received = state.real_positions()
        prompts = self.prompts(self.agents[-1], samples)
        _, logits = self.backend.prefill(state, prompts)
        return logits, prompts, received, time.perf_counter() - start

    def answer(self, state, samples) -> list[Decoded]:
        """The final agent reads the whole cache and decodes the team's answer."""
        logits, prompts, received, prefill_time = self.prefill_final(state, samples)
        start = time.perf_counter()
        final, index = self.agents[-1], len(self.agents) - 1
        seeds = self.gen.call_seeds([(s.id, final.name, index) for s in samples])
        decoded = self.backend.decode(state, logits, self.gen, seeds=seeds)
        self.record(samples, final, index, prompts, received,
                    prefill_time + time.perf_counter() - start, latent_steps=0,
                    forward_passes=[len(d.tokens) for d in decoded], output_tokens=[len(d.tokens) for d in decoded],
                    finish_reasons=[d.finish_reason for d in decoded], seeds=seeds)
        return decoded

    # -- prompts and accounting ----------------------------------------------------------------------

    def messages(self, agent, samples) -> list[list[dict]]:
        instruction = self.task.answer_instruction()
        return [agent_messages(self.cfg.roles.system, agent, s.question, instruction) for s in samples]

    def prompts(self, agent, samples) -> list[list[int]]:
        return self.backend.encode_chat(self.messages(agent, samples))

    def record(self, samples, agent, index, prompts, received, wall_time_s, latent_steps, forward_passes,
               output_tokens, finish_reasons=None, seeds=None) -> None:
        """One record per sample; a thinking agent decodes nothing, so it has no finish reason or seed."""
        passes = forward_passes if isinstance(forward_passes, list) else [forward_passes] * len(samples)
        share = wall_time_s / len(samples)
        for i, (sample, messages) in enumerate(zip(samples, self.messages(agent, samples))):
            self.accountant.record(UsageRecord(
                sample.id, agent.name, agent.role, index, input_tokens=len(prompts[i]),
                output_tokens=output_tokens[i], latent_steps=latent_steps, kv_positions_received=received[i],
                forward_passes=passes[i], wall_time_s=share,
                finish_reason=finish_reasons[i] if finish_reasons else None, seed=seeds[i] if seeds else None,
                prompt_hash=prompt_hash(messages), messages=messages,
            ))


def latent_diagnostics(latents: list[torch.Tensor]) -> dict:
    """Norm of each hidden state that became a latent thought, and the cosine similarity between
    consecutive ones (after realignment every thought has the same norm, so the raw states tell more)."""
    norms = [round(float(h.float().norm()), 4) for h in latents]
    cosines = [round(float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0)), 6)
               for a, b in zip(latents, latents[1:])]
    return {"latent_norms": norms, "latent_cosines": cosines}
