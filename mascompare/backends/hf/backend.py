"""HFBackend: batched chat generation and the latent primitives, with a transformers model in this process."""

from __future__ import annotations

import logging
import time

import torch

from mascompare.backends.base import Completion, Decoded, LatentBackend, Message
from mascompare.backends.hf.attention import use_step_attention
from mascompare.backends.hf.cache import CacheLayout, SharedCache
from mascompare.backends.hf.decode import Sequence, StopRule, decode_sequences
from mascompare.backends.hf.fast_path_check import check_fast_path
from mascompare.backends.hf.forward import ForwardSteps
from mascompare.backends.hf.loading import load_pretrained, pick_compile, pick_device, pick_dtype
from mascompare.backends.hf.prompts import ContextWindowExceeded, Prompts, context_window, conversation_chars
from mascompare.backends.hf.sampling import row_generator
from mascompare.backends.models import resolve
from mascompare.environment import model_fingerprint, torch_environment
from mascompare.errors import UserError
from mascompare.generation import GenerationConfig
from mascompare.settings import HFSettings, ModelSettings

log = logging.getLogger(__name__)

EMBEDDING_CHUNK = 16384  # tokens embedded at a time for W_in (bounds the model-dtype copy in memory)
# run.batch_size=auto. Off CUDA a step's cost grows about linearly with the batch beyond a few rows, so a larger
# batch gains little there: 8. On CUDA, the largest batch whose KV cache fits in half the free memory (the rest
# for activations, logits and the allocator), for rows as long as four agents' contexts: the longest question
# with PROMPT_ALLOWANCE tokens of template and instructions, and max_new_tokens of text, per agent.
AUTO_BATCH_OFF_CUDA = 8
AUTO_BATCH_MAX = 256
CONTEXTS_PER_ROW = 4  # latent_mas's shared cache holds four agents' prompts; text_mas's last prompt three hand-offs
PROMPT_ALLOWANCE = 256


class HFBackend(LatentBackend):
    """A transformers model and its tokenizer, loaded in this process (or handed over: `from_loaded`).

    `chat` and the latent path decode with one loop on one KV cache per batch, kept exact by a per-row attention
    mask and per-row positions (`SharedCache`): with greedy decoding a row's output does not depend on the rest of
    its batch. Sampled decoding keeps that property: each sample draws its tokens from its own generator, seeded
    with its per-call seed. A row that finishes takes the next waiting conversation of its `chat` call
    (continuous batching, `backend.decode_rows`). A conversation whose prompt does not fit the context window
    fails its own row; the latent primitives refuse a prefill beyond the window for the whole batch.

    The fast path (`backend.compile`): static KV caches and compiled one-token steps (CUDA graphs on CUDA). Before
    it is trusted, it is checked against the eager path on the first batch (`fast_path_check.py`); where it fails,
    `backend.fast_path_check` chooses: fall back to eager with one warning (fallback), stop the run (fail), or
    run unchecked (skip). `run_info()` records which path ran and what the check found.

    What the backend changes on the model it is given: it moves it to the device (`model.to`) and puts it in
    eval mode; it adds one forward pre-hook to its output head (once per head: it keeps the head's input, the
    last layer's state); on the fast path it sets the attention implementation of a model that uses sdpa to
    STEP_ATTENTION (sdpa itself outside compiled one-token steps), and transformers keeps the compiled forward
    on the model (`get_compiled_call`). Nothing else: backends built on one model give the same outputs.
    """

    name = "hf"

    def __init__(self, settings: HFSettings, model_settings: ModelSettings):
        start = time.perf_counter()
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        source = resolve(model_settings)
        compiled = pick_compile(settings.compile, device)
        model, tokenizer = load_pretrained(source, device, dtype)
        self._setup(model, tokenizer, source.name, device, dict(model_settings.chat_template_kwargs or {}), compiled,
                    settings.decode_rows, settings.fast_path_check)
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def from_loaded(cls, model, tokenizer, model_name: str, device: str | torch.device | None = None,
                    template_kwargs: dict | None = None, compiled: bool = False,
                    decode_rows: int | None = None, fast_path_check: str = "fallback") -> HFBackend:
        """A backend around a model and tokenizer already in memory (tests, notebooks)."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, model_name, torch.device(device) if device is not None else model.device,
                       template_kwargs or {}, compiled, decode_rows, fast_path_check)
        backend.load_seconds = 0.0
        return backend

    def _setup(self, model, tokenizer, model_name: str, device: torch.device, template_kwargs: dict,
               compiled: bool, decode_rows: int | None, fast_path_check: str) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = device
        self.dtype = model.dtype
        defaults = model.generation_config
        eos = defaults.eos_token_id if defaults.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = next((p for p in (tokenizer.pad_token_id, defaults.pad_token_id) if p is not None), None)
        self.decode_rows = decode_rows  # rows a chat call decodes at once (None: all its conversations)
        self.context_window = context_window(model.config)
        self.prompts = Prompts(tokenizer, template_kwargs, self.context_window)
        if compiled:
            use_step_attention(model)
        self.layout = CacheLayout(model.config, device, static=compiled)
        self.steps = ForwardSteps(model, self.layout, pad if pad is not None else (self.eos_token_ids or [0])[0],
                                  self.context_window)
        self.fast_path_check = fast_path_check
        # which path runs, and what the check found (run.json's backend_info)
        self.fast_path = {"path": "fast" if compiled else "eager", "check": fast_path_check if compiled else None}
        self._check_pending = compiled and fast_path_check != "skip"

    @property
    def compiled(self) -> bool:
        """Whether the fast path runs: static caches and compiled one-token steps."""
        return self.layout.static

    def _prefill(self, state: SharedCache, prompts: list[list[int]], visible: torch.Tensor | None, room: int,
                 latent: bool):
        """The prefill of `prompts`; the first on the fast path also checks it (see fast_path_check.py) and falls
        back to eager, or stops, where it fails. `room`: the columns the run makes room for next; `latent`: whether
        latent steps follow."""
        if not self._check_pending:
            return self.steps.prefill(state, prompts, visible)
        # a prefill that fails on the eager path as well (e.g. beyond the context window) leaves the check pending
        result, hidden, logits = check_fast_path(self.steps, state, prompts, visible, room, latent)
        self._check_pending = False
        self.fast_path.update(passed=result.passed, reason=result.reason, **result.figures)
        if result.passed:
            return hidden, logits
        if self.fast_path_check == "fail":
            raise UserError("The fast path (backend.compile) failed its check against the eager path: "
                            f"{result.reason}; set backend.fast_path_check=fallback to run eagerly instead, or "
                            "backend.compile=false.")
        log.warning("The fast path (backend.compile) failed its check against the eager path, so this run is eager: "
                    "%s.", result.reason)
        self.layout.static = False
        self.fast_path["path"] = "eager"
        return hidden, logits  # the eager prefill's, on the state (now a dynamic cache)

    def run_info(self) -> dict:
        return {"fast_path": dict(self.fast_path)}

    # ---- chat -----------------------------------------------------------------------------------------

    def chat(self, conversations: list[list[Message]], gen: GenerationConfig,
             seeds: list[int] | None = None) -> list[Completion]:
        """One completion per conversation; one whose prompt does not fit the context window carries the error."""
        errors = [self.window_error(conversation_chars(c), None, gen.max_new_tokens) for c in conversations]
        encoded = iter(self.encode_chat([c for c, e in zip(conversations, errors) if e is None]))
        prompts = [None if e else next(encoded) for e in errors]
        errors = [e or self.window_error(0, len(p), gen.max_new_tokens) for e, p in zip(errors, prompts)]
        fit = [e is None for e in errors]
        fitting = iter(self._generate([p for p, ok in zip(prompts, fit) if ok], gen,
                                      None if seeds is None else [s for s, ok in zip(seeds, fit) if ok]))
        return [Completion("", 0, 0, error=f"{ContextWindowExceeded.__name__}: {e}", finish_reason="error") if e
                else next(fitting)
                for e in errors]

    def _generate(self, prompts: list[list[int]], gen: GenerationConfig,
                  seeds: list[int] | None = None) -> list[Completion]:
        """Completions of prompts (token ids) that fit the context window."""
        if not prompts:
            return []
        rows = min(len(prompts), self.decode_rows or len(prompts))
        state = self.layout.new(rows)
        width, waiting = max(map(len, prompts[:rows])), prompts[rows:]
        # the room decoding makes after the prefill (see decode_sequences)
        room = max([width, *map(len, waiting)]) - width + gen.max_new_tokens
        _, logits = self._prefill(state, prompts[:rows], None, room, latent=False)
        sequences = self._sequences(gen, seeds, len(prompts))
        decode_sequences(self.steps, state, logits, gen, self._stop_rule(gen), sequences, waiting=waiting)
        return [Completion(text=self.prompts.completion_text(s.tokens), prompt_tokens=len(prompt),
                           completion_tokens=len(s.tokens), finish_reason=s.finish_reason)
                for prompt, s in zip(prompts, sequences)]

    def _sequences(self, gen: GenerationConfig, seeds: list[int] | None, count: int) -> list[Sequence]:
        """One sequence per sample; a sampled one draws from its own stream, seeded with its call's seed (gen.seed
        for every sample when none are given)."""
        if gen.greedy:
            return [Sequence(i, None) for i in range(count)]
        seeds = seeds if seeds is not None else [gen.seed] * count
        return [Sequence(i, row_generator(seed, self.device)) for i, seed in enumerate(seeds)]

    def _stop_rule(self, gen: GenerationConfig) -> StopRule:
        return StopRule(frozenset(self.eos_token_ids), gen.max_new_tokens,
                        self.prompts.ends_turn if self.prompts.plain else None)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.encode_chat([messages])[0])

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.prompts.truncate(text, max_tokens)

    def auto_batch_size(self, questions: list[str], gen: GenerationConfig) -> int:
        """run.batch_size=auto: see AUTO_BATCH_OFF_CUDA above."""
        if self.device.type != "cuda" or not questions:
            return AUTO_BATCH_OFF_CUDA
        longest = max(self.count_tokens([{"role": "user", "content": q}]) for q in questions)
        positions = CONTEXTS_PER_ROW * (longest + PROMPT_ALLOWANCE + gen.max_new_tokens)
        config = self.model.config.get_text_config(decoder=True)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        bytes_per_position = 2 * config.num_hidden_layers * kv_heads * head_dim * self.dtype.itemsize
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(AUTO_BATCH_MAX, int(free / 2 // (positions * bytes_per_position))))

    def environment(self) -> dict:
        """The resolved device and dtype, torch and GPUs, and the model's revision and weights index."""
        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                **torch_environment(self.device), "model": model_fingerprint(self.model)}

    # ---- the latent primitives (LatentBackend) --------------------------------------------------------------

    def encode_chat(self, conversations: list[list[Message]]) -> list[list[int]]:
        return self.prompts.encode(conversations)

    def window_error(self, chars: int, tokens: int | None, max_new_tokens: int) -> str | None:
        return self.prompts.window_error(chars, tokens, max_new_tokens)

    @torch.inference_mode()
    def embedding_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_in: what the embedding module hands the first layer for each token, i.e. the space that
        `inputs_embeds` replaces (the weight matrix itself, unless the module scales it, as Gemma's does);
        W_out: the output head's weights. [V, d] each, float32, on the model's device."""
        embed = self.model.get_input_embeddings()
        ids = torch.arange(embed.weight.shape[0], device=embed.weight.device)
        w_in = torch.cat([embed(chunk).float() for chunk in ids.split(EMBEDDING_CHUNK)])
        return w_in, self.model.get_output_embeddings().weight.detach().float()

    def new_cache(self, batch_size: int, first_positions: list[int] | None = None) -> SharedCache:
        return self.layout.new(batch_size, first_positions)

    def prefill(self, state: SharedCache, prompts: list[list[int]], visible: torch.Tensor | None = None):
        return self._prefill(state, prompts, visible, 0, latent=True)

    def step_embeds(self, state: SharedCache, embeds: torch.Tensor, visible: torch.Tensor | None = None):
        return self.steps.step_embeds(state, embeds, visible)

    def decode(self, state: SharedCache, first_logits: torch.Tensor, gen: GenerationConfig,
               visible: torch.Tensor | None = None, seeds: list[int] | None = None) -> list[Decoded]:
        sequences = self._sequences(gen, seeds, first_logits.shape[0])
        decode_sequences(self.steps, state, first_logits, gen, self._stop_rule(gen), sequences, visible=visible)
        return [Decoded(s.tokens, self.prompts.completion_text(s.tokens), s.finish_reason) for s in sequences]

    def can_join_rows(self) -> bool:
        return self.layout.full_layers_only

    def join_rows(self, state: SharedCache, groups: int) -> SharedCache:
        return self.layout.join_rows(state, groups)

    def padding_could_pass_window(self, segment_lengths: list[list[int]], appended: int) -> bool:
        return self.layout.padding_could_pass_window(segment_lengths, appended)
