"""What the config's backend section asks for (device, dtype, eager or fast path), resolved on this machine, and
the model and tokenizer loaded accordingly."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mascompare.backends.models import ModelSource
from mascompare.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FAST_PATH_CHECKS = ("fallback", "fail", "skip")


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
    """Whether to take the fast path. `auto` takes it on CUDA only: elsewhere compiling takes longer than it
    saves on a run of this size."""
    if spec == "auto":
        return device.type == "cuda"
    if not isinstance(spec, bool):
        raise UserError(f"backend.compile must be auto, true or false, got {spec!r}.")
    return spec


def pick_fast_path_check(spec) -> str:
    """What the check of the fast path against the eager path does when the fast path fails it: fall back to
    eager (the default), fail the run, or skip the check."""
    if spec not in FAST_PATH_CHECKS:
        raise UserError(f"backend.fast_path_check must be fallback, fail or skip, got {spec!r}.")
    return spec


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
