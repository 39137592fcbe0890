"""Hugging Face transformers backend: batched chat generation and the latent primitives, with the model loaded in
this process. One concern per module:

- loading: the device, dtype and path (eager or fast) a config asks for; the model and tokenizer loaded
- attention: the fast path's attention function, registered with transformers only when the fast path is taken
- prompts: chat template or plain format, the context window, completion texts
- cache: the KV cache a batch shares (`SharedCache`) and its layout: rows joined, refilled and compacted
- forward: forward passes that append to a shared cache (prefill, one-token and latent steps)
- sampling: each row's next token, greedy or from its own seeded stream
- decode: the decoding loop, with one state per sample and one stop rule (continuous batching)
- fast_path_check: the fast path checked against the eager path on a run's first batch
- backend: `HFBackend`, which composes them

Importing the package changes nothing: no registration, no model touched.
"""

from mascompare.backends.hf.backend import HFBackend
from mascompare.backends.hf.cache import SharedCache
from mascompare.backends.hf.prompts import ContextWindowExceeded

__all__ = ["ContextWindowExceeded", "HFBackend", "SharedCache"]
