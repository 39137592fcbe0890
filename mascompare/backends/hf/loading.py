"""What the config's backend section asks for (device, dtype, eager or fast path), resolved on this machine, and
the model and tokenizer loaded accordingly."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mascompare.backends.models import ModelSource
from mascompare.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # settings.HF_DTYPES' names


def pick_device(spec: str) -> torch.device:
    """`auto` is the first of cuda, mps, cpu that this machine has."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(spec)  # the settings allow only auto, cpu, cuda, cuda:N and mps
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
    return DTYPES[spec]


def pick_compile(spec, device: torch.device) -> bool:
    """Whether to take the fast path. `auto` takes it on CUDA only: elsewhere compiling takes longer than it
    saves on a run of this size."""
    return device.type == "cuda" if spec == "auto" else spec


def load_pretrained(source: ModelSource, device: torch.device, dtype: torch.dtype):
    """The model (on `device`, in `dtype`) and its tokenizer; a source that does not load is a UserError."""
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
