"""Hugging Face transformers backend: batched chat generation with a model loaded in this process.

Prompts are the model's chat template with the generation prompt. A model without a chat template
(a base model such as Gemma-3-270m) gets a plain-text format instead: every message becomes
"System: ...", "User: ..." or "Assistant: ..." (the role, capitalised, then the content), messages are
separated by a blank line, and the prompt ends with "Assistant:" for the model to continue. The
tokenizer adds its usual special tokens (e.g. BOS) to that text. A base model rarely emits EOS and goes
on to write the user's next turn, so in this format a row also ends where its text first contains
"\nUser:"; the completion's text stops before that marker, its token count includes it (as with EOS).

`chat` and the latent path decode with one loop (`HFBackend.decode`) on one KV cache per batch, kept
exact by a per-row attention mask and per-row positions (`SharedCache`): with greedy decoding a row's
output does not depend on the rest of its batch. Sampled decoding keeps that property: each sample draws
its tokens from its own generator, seeded with its per-call seed, instead of one stream shared by the
batch. A row that finishes takes the next waiting conversation of its `chat` call (continuous batching,
`backend.decode_rows`).

A prompt that, with generation.max_new_tokens, would not fit the model's context window (its
maximum positions) fails its own row with a clear error instead of running; a text too long to fit
however it tokenizes is refused before it is tokenized, so a huge input costs neither time nor memory.
The latent primitives refuse a prefill beyond the window for the whole batch.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections import deque
from dataclasses import dataclass
from itertools import repeat

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig, DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer, StaticSlidingWindowLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from mascompare.backends.base import Completion, Decoded, LatentBackend, Message, plain_prompt
from mascompare.backends.models import ModelSource, resolve
from mascompare.errors import UserError
from mascompare.generation import GenerationConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBEDDING_CHUNK = 16384  # tokens embedded at a time for embedding_matrices (bounds the model-dtype copy in memory)
MARKER_WINDOW = 8  # tokens decoded to look for a turn marker: more than a short ASCII marker can span
MIN_STATIC_COLUMNS = 64  # static caches come in powers of two from here, so that few shapes are ever compiled
# run.batch_size=auto. Off CUDA a step's cost grows about linearly with the batch beyond a few rows, so a larger
# batch gains little there: 8. On CUDA, the largest batch whose KV cache fits in half the free memory (the rest
# for activations, logits and the allocator), for rows as long as four agents' contexts: the longest question
# with PROMPT_ALLOWANCE tokens of template and instructions, and max_new_tokens of text, per agent.
AUTO_BATCH_OFF_CUDA = 8
AUTO_BATCH_MAX = 256
CONTEXTS_PER_ROW = 4  # latent_mas's shared cache holds four agents' prompts; text_mas's last prompt three hand-offs
PROMPT_ALLOWANCE = 256


def pick_device(spec: str) -> torch.device:
    """`auto` is the first of cuda, mps, cpu that this machine has."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"backend.device must be auto, cpu, cuda, cuda:N or mps, got '{spec}'.")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"backend.device={spec} but this machine's torch sees {torch.cuda.device_count()} CUDA "
                        "device(s); use backend.device=auto or cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("backend.device=mps but MPS is not available here; use backend.device=auto or cpu.")
    return device


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA (float16 on GPUs without bfloat16) and float32 elsewhere."""
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if spec not in DTYPES:
        raise UserError(f"backend.dtype must be auto, float32, bfloat16 or float16, got '{spec}'.")
    return DTYPES[spec]


def pick_compile(spec, device: torch.device) -> bool:
    """`auto` compiles on CUDA only: elsewhere compiling takes longer than it saves on a run of this size."""
    if spec == "auto":
        return device.type == "cuda"
    if not isinstance(spec, bool):
        raise UserError(f"backend.compile must be auto, true or false, got {spec!r}.")
    return spec


def static_columns(needed: int) -> int:
    """Columns of a static cache that holds `needed`: the next power of two, at least MIN_STATIC_COLUMNS."""
    return max(MIN_STATIC_COLUMNS, 1 << (needed - 1).bit_length())


_head_inputs: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> what its output head last read


class HeadInput:
    value: torch.Tensor | None = None  # (a plain class: torch.compile traces a hook that sets its attribute)


def head_input_catcher(model) -> HeadInput:
    """Where the input of the model's output head lands at every forward pass: the last layer's state after
    the final norm, at the positions whose logits are kept (the same tensor as `output_hidden_states`' last
    entry, without the model keeping every layer's states). One hook per model, added once: a hook added
    per call would make the compiled forward recompile."""
    if model not in _head_inputs:
        caught = HeadInput()
        model.get_output_embeddings().register_forward_pre_hook(lambda _, args: setattr(caught, "value", args[0]))
        _head_inputs[model] = caught
    return _head_inputs[model]


STEP_ATTENTION = "sdpa_grouped_steps"


def sdpa_grouped_steps(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers' sdpa attention, except that in a compiled one-token step, a model whose query heads
    share key/value heads attends to the shared heads in place, as eager transformers does. (A compiled
    graph otherwise copies every key/value head once per query head sharing it: the whole static cache,
    at every step; on a CPU that copy took longer than the rest of the step's attention.)"""
    groups = getattr(module, "num_key_value_groups", 1)
    changes_the_scores = any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "s_aux"))
    if not torch.compiler.is_compiling() or query.shape[2] != 1 or groups == 1 or changes_the_scores:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, _, head_dim = query.shape
    # the query heads of one group become that key/value head's query rows; a mask shared by the heads
    # ([B, 1, 1, columns]) applies to every row
    grouped = query.reshape(batch, heads // groups, groups, head_dim)
    if attention_mask is not None and attention_mask.shape[1] != 1:
        attention_mask = attention_mask.reshape(batch, heads // groups, groups, -1)
    output = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                              scale=scaling)
    return output.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(STEP_ATTENTION, sdpa_grouped_steps)
AttentionMaskInterface.register(STEP_ATTENTION, sdpa_mask)


class ContextWindowExceeded(RuntimeError):
    """Input longer than the model's context window."""


def context_window(config) -> int | None:
    """The model's maximum positions (None where its config does not say)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


class HFBackend(LatentBackend):
    name = "hf"
    capabilities = frozenset({"chat", "hidden_states"})
    plain_turn_end = "\nUser:"  # where a row ends in the plain-text format

    def __init__(self, settings, model_settings):
        start = time.perf_counter()
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        source = resolve(model_settings)
        compiled = pick_compile(settings.compile, device)
        model, tokenizer = _load(source, device, dtype)
        self._setup(model, tokenizer, source.name, device, dict(model_settings.chat_template_kwargs or {}), compiled,
                    settings.decode_rows)
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def from_loaded(cls, model, tokenizer, model_name: str, device: str | torch.device | None = None,
                    template_kwargs: dict | None = None, compiled: bool = False,
                    decode_rows: int | None = None) -> "HFBackend":
        """A backend around a model and tokenizer already in memory (tests, notebooks)."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, model_name, torch.device(device) if device is not None else model.device,
                       template_kwargs or {}, compiled, decode_rows)
        backend.load_seconds = 0.0
        return backend

    def _setup(self, model, tokenizer, model_name: str, device: torch.device, template_kwargs: dict,
               compiled: bool = False, decode_rows: int | None = None) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.template_kwargs = template_kwargs  # model.chat_template_kwargs, for every prompt
        # transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.model_name = model_name
        self.device = device
        self.dtype = model.dtype
        defaults = model.generation_config
        eos = defaults.eos_token_id if defaults.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = next((p for p in (tokenizer.pad_token_id, defaults.pad_token_id) if p is not None), None)
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids or [0])[0]
        self.decode_rows = decode_rows  # rows a chat call decodes at once (None: all its conversations)
        # The fast path: a static KV cache, and one-token steps through transformers' compiled forward
        # (CUDA graphs on CUDA). Prefills stay eager: their shapes change with every batch.
        self.compiled = compiled
        if compiled and model.config._attn_implementation == "sdpa":
            model.set_attn_implementation(STEP_ATTENTION)  # the same as sdpa outside compiled steps
        self.compile_config = CompileConfig()
        self._head_input = head_input_catcher(model)
        self.context_window = context_window(model.config)
        # no token spells more characters than the longest vocabulary entry, so a text longer than
        # window x that is too long whatever its tokens: refused without tokenizing it
        self.max_chars = self.context_window * max(map(len, tokenizer.get_vocab()), default=1) \
            if self.context_window else None

    def window_error(self, chars: int, tokens: int | None, max_new_tokens: int) -> str | None:
        """Why a prompt of this many characters (and tokens, once counted) cannot run, or None."""
        if self.context_window is None:
            return None
        if tokens is None:
            if chars <= self.max_chars:
                return None
            size = f"{chars:,} characters (over {self.max_chars:,}, so more than {self.context_window:,} tokens)"
        elif tokens + max_new_tokens <= self.context_window:
            return None
        else:
            size = f"{tokens:,} tokens"
        return (f"the prompt has {size}, which with generation.max_new_tokens={max_new_tokens} does not fit the "
                f"model's context window of {self.context_window:,} positions; shorten the input or lower "
                "generation.max_new_tokens")

    def encode_chat(self, conversations: list[list[Message]]) -> list[list[int]]:
        """Prompt token ids per conversation, generation prompt included, unpadded."""
        for conversation in conversations:
            error = self.window_error(_chars(conversation), None, 0)
            if error:
                raise ContextWindowExceeded(error)
        if self.plain_format:
            return [self.tokenizer(plain_prompt(c))["input_ids"] for c in conversations]
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True,
                                                    **self.template_kwargs) for c in conversations]
        # the template already holds every special token the model expects
        return [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.encode_chat([messages])[0])

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """The text cut to its first max_tokens tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def chat(self, conversations: list[list[Message]], gen: GenerationConfig,
             seeds: list[int] | None = None) -> list[Completion]:
        """One completion per conversation; one whose prompt does not fit the context window carries the error."""
        errors = [self.window_error(_chars(c), None, gen.max_new_tokens) for c in conversations]
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
        state = self.new_cache(rows)
        _, logits = self.prefill(state, prompts[:rows])
        generated = self._decode(state, logits, gen, self.row_generators(gen, seeds, len(prompts)),
                                 waiting=prompts[rows:])
        return [self._completion(prompt, tokens) for prompt, tokens in zip(prompts, generated)]

    def row_generators(self, gen: GenerationConfig, seeds: list[int] | None, rows: int) -> list[torch.Generator]:
        """One random stream per row, seeded with its call's seed (gen.seed for every row when none are given)."""
        seeds = seeds if seeds is not None else [gen.seed] * rows
        return [torch.Generator(device=self.device).manual_seed(seed) for seed in seeds]

    def environment(self) -> dict:
        from mascompare.environment import model_fingerprint, torch_environment

        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                **torch_environment(self.device), "model": model_fingerprint(self.model)}

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

    def left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask [B, longest], real tokens right-aligned."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if prompt:
                input_ids[row, width - len(prompt):] = torch.tensor(prompt)
                attention_mask[row, width - len(prompt):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    # ---- latent primitives: forward passes on a SharedCache (used by latent_mas) -------------------

    @torch.inference_mode()
    def embedding_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[V, d] fp32 what the embedding module hands the first layer for each token (the space `inputs_embeds`
        replaces: the weight matrix itself, unless the module scales it, as Gemma's does), and the output head's
        weights."""
        embed = self.model.get_input_embeddings()
        ids = torch.arange(embed.weight.shape[0], device=embed.weight.device)
        w_in = torch.cat([embed(chunk).float() for chunk in ids.split(EMBEDDING_CHUNK)])
        return w_in, self.model.get_output_embeddings().weight.detach().float()

    def new_cache(self, batch_size: int, first_positions: list[int] | None = None) -> SharedCache:
        """An empty cache; each row's positions start at 0, or at `first_positions`."""
        empty = torch.zeros((batch_size, 0), dtype=torch.long, device=self.device)
        start = torch.tensor(first_positions or [0] * batch_size, dtype=torch.long, device=self.device)
        return SharedCache(self._cache_holding([], 0), empty, start)

    @property
    def sliding_window(self) -> int | None:
        """The shortest attention window of the model's layers, or None when every layer sees everything."""
        windows = [layer.sliding_window for layer in DynamicCache(config=self.model.config).layers
                   if getattr(layer, "sliding_window", None)]
        return min(windows, default=None)

    def padding_could_pass_window(self, segment_lengths: list[list[int]], appended: int) -> bool:
        """Whether a batch's cache could hold padding between a row's tokens and grow past a sliding
        window. A window counts cache columns, padding included, so such a row would see fewer of its
        own tokens than alone. `segment_lengths`: per segment appended left-padded, each row's length;
        `appended`: positions added after them without padding (latent steps, decoded tokens). The first
        segment's padding lies before all of a row's tokens and never displaces any of them (one padded
        prompt, as in `chat`, is exact)."""
        window = self.sliding_window
        padded = any(len(set(lengths)) > 1 for lengths in segment_lengths[1:])
        return window is not None and padded and sum(map(max, segment_lengths)) + appended > window

    def can_join_rows(self) -> bool:
        """Whether `join_rows` applies: every cache layer keeps all its positions (no sliding window)."""
        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)

    def join_rows(self, state: SharedCache, groups: int) -> SharedCache:
        """A cache of groups × B rows, made into B rows: row block g becomes the g-th run of columns of each row.

        Independent agents run side by side as extra rows (one forward pass for all of them), then hand
        on one cache per sample, as if they had run one after another, each seeing only its own columns.
        The caller sets their positions to count on from one block to the next.
        """
        def side_by_side(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.cat(tensor.unflatten(0, (groups, -1)).unbind(0), dim=dim)
        joined = [(side_by_side(keys, -2), side_by_side(values, -2)) for keys, values in state.contents()]
        # the last block's positions are the latest: the caller made them count on from the earlier blocks
        return SharedCache(self._cache_holding(joined, 0), side_by_side(state.mask, -1),
                           state.next_position.unflatten(0, (groups, -1))[-1])

    def _cache_holding(self, contents: list[tuple[torch.Tensor, torch.Tensor]], room: int):
        """A KV cache holding `contents` (keys and values per layer); on the fast path a static one, with room
        for `room` more columns."""
        length = contents[0][0].shape[-2] if contents else 0
        if self.compiled:
            columns = static_columns(length + room)
            cache = StaticCache(config=self.model.config, max_cache_len=columns)
            # every layer holds every column; a sliding-window layer's window is then applied by the model's
            # mask, over columns, as a sliding-window cache would (the rules for batching with a window hold)
            cache.layers = [StaticLayer(max_cache_len=columns) if isinstance(layer, StaticSlidingWindowLayer)
                            else layer for layer in cache.layers]
        else:
            cache = DynamicCache(config=self.model.config)
        for index, (keys, values) in enumerate(contents):
            cache.layers[index].update(keys, values)
        return cache

    def _make_room(self, state: SharedCache, columns: int) -> None:
        """A static cache too small for `columns` more is copied into a larger one (a power of two in size)."""
        if isinstance(state.cache, StaticCache) and state.length + columns > state.cache.get_max_length():
            state.cache = self._cache_holding(state.contents(), columns)

    @torch.inference_mode()
    def prefill(self, state: SharedCache, prompts: list[list[int]], visible: torch.Tensor | None = None):
        """Append one left-padded segment of token ids to the cache.

        `visible` ([B, state.length], 0/1) hides existing columns from this segment, and from the
        latent steps that pass the same mask later; padding stays hidden regardless.
        Returns the last layer's hidden state and the logits at each row's last token ([B, d], [B, V]).
        """
        input_ids, segment_mask = self.left_pad(prompts)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        longest = int((state.next_position + lengths).max())
        if self.context_window is not None and longest > self.context_window:
            raise ContextWindowExceeded(f"latent agents' shared cache would reach {longest:,} positions, beyond the "
                                        f"model's context window of {self.context_window:,}; shorten the input")
        offsets = (segment_mask.cumsum(dim=1) - 1).clamp(min=0)
        return self._extend(state, segment_mask, state.next_position[:, None] + offsets, visible,
                            input_ids=input_ids)

    @torch.inference_mode()
    def step_embeds(self, state: SharedCache, embeds: torch.Tensor, visible: torch.Tensor | None = None):
        """Append one position per row whose input is an embedding ([B, d]) rather than a token."""
        ones = torch.ones((embeds.shape[0], 1), dtype=torch.long, device=self.device)
        return self._extend(state, ones, state.next_position[:, None], visible, inputs_embeds=embeds[:, None, :])

    def _extend(self, state: SharedCache, segment_mask, position_ids, visible, **inputs):
        past_mask = state.mask
        if visible is not None:
            # columns appended after `visible` was made are the current agent's own: they stay visible
            grown = state.length - visible.shape[1]
            past_mask = past_mask * torch.cat([visible, visible.new_ones((visible.shape[0], grown))], dim=1)
        attention_mask = torch.cat([past_mask, segment_mask], dim=1)
        forward = self.model
        self._make_room(state, segment_mask.shape[1])
        if isinstance(state.cache, StaticCache):
            # the mask spans the whole static cache (its unused columns hidden), so one-token steps keep one shape
            unused = state.cache.get_max_length() - attention_mask.shape[1]
            attention_mask = torch.nn.functional.pad(attention_mask, (0, unused))
            if segment_mask.shape[1] == 1:
                forward = self.model.get_compiled_call(self.compile_config)
                if "input_ids" in inputs:  # one compiled graph for tokens and latent thoughts alike
                    inputs = {"inputs_embeds": self.model.get_input_embeddings()(inputs["input_ids"])}
        out = forward(**inputs, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                      logits_to_keep=1, **{self.cache_argument: state.cache})
        state.mask = torch.cat([state.mask, segment_mask], dim=1)
        state.next_position = state.next_position + segment_mask.sum(dim=1)
        # copies: a CUDA graph overwrites its outputs at its next replay
        return self._head_input.value[:, -1].clone(), out.logits[:, -1].float().clone()

    def decode(self, state: SharedCache, first_logits: torch.Tensor, gen: GenerationConfig,
               visible: torch.Tensor | None = None, seeds: list[int] | None = None) -> list[Decoded]:
        """Generate from the cache: up to gen.max_new_tokens per row, each row up to and including EOS (or, in
        the plain-text format, the turn marker: the same stop rule as `chat`; `completion_text` reads a row).
        Sampled rows draw from their own seeded generators (see `chat`). `visible` hides cache columns as in
        `prefill` (pass the mask the prompt was prefilled with)."""
        rows = self._decode(state, first_logits, gen, self.row_generators(gen, seeds, first_logits.shape[0]), visible)
        return [Decoded(tokens, self.completion_text(tokens), self.finish_reason(tokens)) for tokens in rows]

    @torch.inference_mode()
    def _decode(self, state: SharedCache, logits: torch.Tensor, gen: GenerationConfig,
                generators: list[torch.Generator], visible: torch.Tensor | None = None,
                waiting: list[list[int]] = ()) -> list[list[int]]:
        """The decoding loop of `decode` and `chat`: the tokens of every sample, in sample order.

        Row r starts with sample r; the `waiting` prompts are the samples after those. A row that finishes
        takes the next waiting prompt (continuous batching): its keys and values replace the row's,
        right-aligned at the cache's end with hidden columns before them, so that its tokens stay contiguous
        and its positions count from 0, as at batch 1 (a sliding window sees the same tokens). A sample keeps
        its own generator wherever it runs. Finished rows with nothing to take stay in the batch, decoding padding:
        compiled steps keep one batch shape, and on a CPU dropping them was measured slower than keeping them
        (bench/results/continuous_batching_rows_leave.txt).
        """
        rows: list[int | None] = list(range(logits.shape[0]))  # the sample each row decodes; None once it ended
        outputs: list[list[int]] = [[] for _ in range(len(rows) + len(waiting))]
        queue = deque(zip(range(len(rows), len(outputs)), waiting))
        static = isinstance(state.cache, StaticCache)
        # room for the longest prompt and all its tokens, so that dropping hidden columns always makes enough
        self._make_room(state, max([state.length, *map(len, waiting)]) - state.length + gen.max_new_tokens)
        unread = list(range(len(rows)))  # rows whose logits have not been decoded from yet
        while True:
            self._next_tokens(logits, gen, generators, rows, unread, outputs)
            free = [row for row, sample in enumerate(rows) if sample is None]
            if free and queue:
                arriving = [queue.popleft() for _ in range(min(len(free), len(queue)))]
                unread = free[:len(arriving)]
                for row, (sample, _) in zip(unread, arriving):
                    rows[row] = sample
                logits[unread] = self._admit(state, rows, unread, [prompt for _, prompt in arriving])
                continue
            live = [row for row, sample in enumerate(rows) if sample is not None]
            if not live:
                return outputs
            if static and state.length == state.cache.get_max_length():
                visible = self._relayout(state, [s is not None for s in rows], visible=visible)
            tokens = torch.tensor([outputs[s][-1] if s is not None else self.pad_token_id for s in rows],
                                  device=self.device)
            ones = torch.ones((len(rows), 1), dtype=torch.long, device=self.device)
            _, logits = self._extend(state, ones, state.next_position[:, None], visible, input_ids=tokens[:, None])
            unread = list(range(len(rows)))

    def _next_tokens(self, logits: torch.Tensor, gen: GenerationConfig, generators: list[torch.Generator],
                     rows: list[int | None], unread: list[int], outputs: list[list[int]]) -> None:
        """Each live unread row's next token, appended to its sample's tokens; a row whose sample ends is freed."""
        picking = [row for row in unread if rows[row] is not None]
        if not picking:
            return
        chosen = logits[picking]
        if gen.greedy:
            tokens = chosen.argmax(dim=-1)
        else:
            tokens = sample_rows(chosen, gen, [generators[rows[row]] for row in picking])
        for row, token in zip(picking, tokens.tolist()):
            generated = outputs[rows[row]]
            generated.append(token)
            if (len(generated) == gen.max_new_tokens or token in self.eos_token_ids
                    or (self.plain_format and self.ends_turn(generated))):
                rows[row] = None

    def _admit(self, state: SharedCache, rows: list[int | None], slots: list[int],
               prompts: list[list[int]]) -> torch.Tensor:
        """Prefill `prompts` (left-padded among themselves) and splice them into rows `slots` of the state;
        returns their logits. Arrivals are prefilled on a dynamic cache, eagerly, then copied across."""
        empty = torch.zeros((len(prompts), 0), dtype=torch.long, device=self.device)
        arrivals = SharedCache(DynamicCache(config=self.model.config), empty, empty.new_zeros(len(prompts)))
        _, logits = self.prefill(arrivals, prompts)
        self._relayout(state, [s is not None for s in rows], arrivals, slots)
        return logits

    def _relayout(self, state: SharedCache, live: list[bool], arrivals: SharedCache | None = None,
                  slots: list[int] = (), visible: torch.Tensor | None = None) -> torch.Tensor | None:
        """Lay the state out anew: the rows of `arrivals` in place of rows `slots`, right-aligned at the end,
        with hidden columns before them (columns are added before every row where an arrival is longer than
        the cache); then the leading columns that no `live` row attends to are dropped, so the cache does not
        grow without bound. A static cache is rewritten in place (its compiled steps keep their inputs'
        addresses). Returns `visible` laid out alike."""
        width = max(state.length, arrivals.length if arrivals else 0)
        added = width - state.length
        mask = torch.nn.functional.pad(state.mask, (added, 0))
        positions = state.next_position.clone()
        if arrivals:
            mask[slots] = torch.nn.functional.pad(arrivals.mask, (width - arrivals.length, 0))
            positions[slots] = arrivals.next_position
        attended = mask[torch.tensor(live, device=self.device)].any(dim=0)
        start = int(attended.int().argmax())  # the first column a live row attends to

        def laid_out(old: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
            tensor = right_aligned(old, width)  # a sliding-window layer holds only its window's columns
            if new is not None:
                tensor[slots] = right_aligned(new, width)
            return tensor[:, :, start:]

        incoming = arrivals.contents() if arrivals else repeat((None, None))
        contents = ((laid_out(keys, new_keys), laid_out(values, new_values))
                    for (keys, values), (new_keys, new_values) in zip(state.contents(), incoming))
        length = width - start
        if isinstance(state.cache, StaticCache):
            for layer, (keys, values) in zip(state.cache.layers, contents):
                layer.keys[:, :, :length].copy_(keys)
                layer.values[:, :, :length].copy_(values)
                layer.cumulative_length.fill_(length)  # where the next step writes
        else:
            state.cache = self._cache_holding(list(contents), 0)
        state.mask, state.next_position = mask[:, start:], positions
        if visible is None:
            return None
        return torch.nn.functional.pad(visible, (added, 0))[:, start:]

    def ends_turn(self, tail: list[int]) -> bool:
        """Whether the last tokens of a row's plain-format completion contain the turn marker."""
        return self.plain_turn_end in self.tokenizer.decode(tail[-MARKER_WINDOW:], skip_special_tokens=True)

    @property
    def plain_format(self) -> bool:
        """Whether prompts use the plain-text format (no chat template), whose rows also end at the turn marker."""
        return not self.tokenizer.chat_template

    def row_end(self, generated: list[int]) -> int:
        """How many generated tokens a row's completion has: up to and including the first EOS, or the token
        that completes the plain format's turn marker (a row that finished early is padded after its end,
        and the padding may be the EOS id)."""
        end = next((i + 1 for i, token in enumerate(generated) if token in self.eos_token_ids), len(generated))
        if self.plain_format:
            end = next((k for k in range(1, end + 1) if self.ends_turn(generated[:k])), end)
        return end

    def completion_text(self, generated: list[int]) -> str:
        """A row's completion text: up to its end, and before the turn marker in the plain format."""
        text = self.tokenizer.decode(generated[:self.row_end(generated)], skip_special_tokens=True)
        return text.split(self.plain_turn_end)[0] if self.plain_format else text

    def finish_reason(self, generated: list[int]) -> str:
        """Why a row ended: 'eos' (an end-of-turn token), 'stop' (the plain format's turn marker) or
        'length' (max_new_tokens reached)."""
        tokens = generated[:self.row_end(generated)]
        if tokens and tokens[-1] in self.eos_token_ids:
            return "eos"
        return "stop" if self.plain_format and self.ends_turn(tokens) else "length"

    def _completion(self, prompt: list[int], generated: list[int]) -> Completion:
        return Completion(text=self.completion_text(generated), prompt_tokens=len(prompt),
                          completion_tokens=self.row_end(generated), finish_reason=self.finish_reason(generated))


@dataclass
class SharedCache:
    """One KV cache for a whole batch, and the bookkeeping that keeps batching exact.

    Every segment appended to the cache is left-padded to a common width, so rows hold padding
    at different columns. `mask` remembers, per row, which columns are real (1) or padding (0);
    every later forward pass attends through it, so padding never enters any row's attention.
    `next_position` counts each row's real tokens, so RoPE positions ignore padding too: a row's
    positions are exactly those it would have at batch size 1.
    """

    cache: DynamicCache | StaticCache
    mask: torch.Tensor  # [B, length] long: 1 where the row has a real token
    next_position: torch.Tensor  # [B] long: the position of each row's next token

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def contents(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values per layer, [B, heads, length, head_dim]: the filled part of a static cache."""
        if self.length == 0:
            return []
        return [(layer.keys[:, :, :self.length], layer.values[:, :, :self.length]) for layer in self.cache.layers]

    def real_positions(self, visible: torch.Tensor | None = None) -> list[int]:
        """Per row, how many real cache positions it can attend to (through `visible` if given)."""
        mask = self.mask if visible is None else self.mask * visible
        return mask.sum(dim=1).tolist()


def _chars(conversation: list[Message]) -> int:
    return sum(len(str(m.get("content") or "")) for m in conversation)


def right_aligned(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Keys or values [B, heads, columns, head_dim] padded with zeros on the left to `width` columns (a copy)."""
    return torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[-2], 0))


def sample_rows(logits: torch.Tensor, gen: GenerationConfig, generators: list[torch.Generator]) -> torch.Tensor:
    """One sampled token per row of [B, V] logits, row i drawn from generators[i]."""
    return torch.cat([sample_token(logits[i:i + 1], gen, g) for i, g in enumerate(generators)])


def sample_token(logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator) -> torch.Tensor:
    """Temperature / top-k / top-p sampling from [B, V] logits."""
    logits = logits / gen.temperature
    if gen.top_k:
        kth = torch.topk(logits, min(gen.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if gen.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the top token always stays)
        drop = probs.cumsum(dim=-1) - probs >= gen.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _load(source: ModelSource, device: torch.device, dtype: torch.dtype):
    options = {"trust_remote_code": source.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **options)
        # straight onto an accelerator, so a large model is never held twice in host memory
        placement = {} if device.type == "cpu" else {"device_map": {"": device}}
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, **options, **placement)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise UserError(f"Could not load model '{source.name}' from {source.path}: {reason}.") from error
    return model, tokenizer
