"""OpenAI-compatible chat backend: OpenAI itself, or a vLLM, llama.cpp or Ollama server, over HTTP.

Every request goes through one pool of `backend.max_concurrency` request threads. With
`backend.stream=true` the runner runs each sample as its own task (`sample_workers` at a time), so
a slot freed by a finished request goes to the next sample at once instead of waiting for the
slowest request of a batch; `chat` still returns completions in input order.

With `run.cache=true` the runner hands the backend a ResponseCache (backends/response_cache.py):
a request answered before (the same model, messages, decoding settings and seed) is answered
from it, without a call.

Failures, by kind:
- connection errors, timeouts, 429, 408 and 5xx, and a body that is not a valid completion:
  retried with exponential backoff and jitter (a server's Retry-After wins); after the last
  attempt the completion carries the error, so its sample is recorded as failed, the run goes
  on, and running again retries only the failed samples;
- 401, 403 and 404 (bad key, no access, unknown model or URL) would fail every request the same
  way: the run stops at once with the server's message;
- any other 4xx is this request's own fault (e.g. a prompt longer than the context): not
  retried; the sample fails with the server's message;
- an answer without text (a refusal, a content filter): not retried; the sample fails, saying so.

`close()` cancels: requests not yet sent are dropped, the ones in flight are abandoned (their
threads are daemons, so a server that never answers cannot hold the process), and every
waiting caller gets a failed completion at once. A Ctrl-C therefore ends an API run in a second,
whatever the servers do.

Token counts come from the response's `usage`. A server that sends none gets local counts
(the model's tokenizer where `model.tokenizer` names one, else about 4 characters per token),
marked `usage_source="estimate"`. The API key never leaves this object: it is masked in every
error message.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from email.utils import parsedate_to_datetime
from pathlib import Path

import openai

from mascompare.backends.base import ChatBackend, Completion, Message
from mascompare.backends.response_cache import ResponseCache
from mascompare.backends.tokens import TokenCounter
from mascompare.errors import UserError
from mascompare.generation import GenerationConfig
from mascompare.settings import URL, ModelSettings, OpenAISettings

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
STOP_RUN_STATUSES = (401, 403, 404)  # every later request would fail the same way
RETRY_STATUSES = (408, 409, 429)  # and every 5xx
# the API's finish_reason in our terms: we send no stop sequences, so "stop" is the model ending its turn;
# anything else (content_filter, tool_calls, ...) is recorded as "stop"
FINISH_REASONS = {"stop": "eos", "length": "length"}
CANCELLED = "cancelled: the run was stopped while this request was in flight"
CANCEL_POLL_S = 0.2  # how often a caller waiting for requests looks whether the run was stopped


class MalformedResponse(ValueError):
    """A 200 whose body is not a chat completion; the message says what is wrong with it."""


class DaemonPool:
    """A fixed number of daemon threads running submitted calls in order. Unlike ThreadPoolExecutor's, its threads
    never hold up the end of the process: a request blocked on a server that does not answer is simply left."""

    def __init__(self, workers: int, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        for k in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True).start()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        if self._closed:
            future.cancel()
        else:
            self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # handed to whoever waits for the result
                future.set_exception(error)

    def shutdown(self, workers: int) -> None:
        """Drop the calls not started; each thread ends once its current call returns."""
        self._closed = True
        while True:
            try:
                future, _, _ = self._jobs.get_nowait()
            except queue.Empty:
                break
            future.cancel()
        for _ in range(workers):
            self._jobs.put(None)


def _key_from_file(path) -> str | None:
    if not path:
        return None
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"backend.api_key_file cannot be read ({error.__class__.__name__}: {path}); "
                        "give a readable file whose first line is the API key.") from None
    if not lines or not lines[0].strip():
        raise UserError(f"backend.api_key_file {path} is empty; its first line must be the API key.")
    return lines[0].strip()


class OpenAIBackend(ChatBackend):
    name = "openai"
    capabilities = frozenset({"chat"})

    def __init__(self, settings: OpenAISettings, model: ModelSettings):
        self.model_name = model.name
        self.api_model = model.api_id
        self.base_url = str(settings.base_url or model.endpoint or os.environ.get("OPENAI_BASE_URL")
                            or OPENAI_URL).rstrip("/")
        if not re.match(URL, self.base_url):  # the config's URLs are checked by the schema; this one came from outside
            raise UserError(f"OPENAI_BASE_URL={self.base_url} is not an http:// or https:// URL; set it to one such "
                            "as http://127.0.0.1:8000/v1, or unset it.")
        self._key = settings.api_key or _key_from_file(settings.api_key_file) or os.environ.get("OPENAI_API_KEY") or ""
        if not self._key and self.base_url == OPENAI_URL:
            raise UserError("The OpenAI API needs a key: set the environment variable OPENAI_API_KEY "
                            "or backend.api_key_file (or backend.base_url for a server that needs none).")
        self.max_concurrency = settings.max_concurrency
        # samples the runner runs at once, each as its own task; None: batches of run.batch_size
        self.sample_workers = self.max_concurrency if settings.stream else None
        self.cache: ResponseCache | None = None
        self.max_retries = settings.max_retries
        self.timeout_s, self.backoff_s, self.max_backoff_s = settings.timeout_s, settings.backoff_s, settings.max_backoff_s
        self.token_limit_param = settings.token_limit_param
        self.omit_params = set(settings.omit_params)
        # our own retries (with their accounting and logging) replace the client's
        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key or "unused",
                                     timeout=self.timeout_s, max_retries=0, http_client=self.http_client())
        self._pool = DaemonPool(self.max_concurrency, "openai-request")
        self._cancelled = threading.Event()  # set by close(): nothing more is sent, waiting callers return
        self.template_kwargs = model.chat_template_kwargs or {}  # the server applies the chat template
        self.counter = TokenCounter(model.tokenizer, self.template_kwargs)
        log.info("openai backend: model %s at %s, up to %d concurrent requests",
                 self.api_model, self.base_url, self.max_concurrency)

    def http_client(self):
        """The HTTP client (the openai package's kind) requests go through; None: the package's own. The scripted
        backend brings one that answers in this process."""
        return None

    # --- the backend contract ----------------------------------------------------------------

    def chat(self, conversations: list[list[Message]], gen: GenerationConfig,
             seeds: list[int] | None = None) -> list[Completion]:
        seeds = seeds if seeds is not None else [gen.seed] * len(conversations)
        futures = [self._pool.submit(self.complete, messages, gen, seed) for messages, seed in zip(conversations, seeds)]
        pending = set(futures)
        while pending and not self._cancelled.is_set():
            _, pending = wait(pending, timeout=CANCEL_POLL_S, return_when=FIRST_COMPLETED)
        return [f.result() if f.done() and not f.cancelled() else failed(CANCELLED) for f in futures]

    def count_tokens(self, messages: list[Message]) -> int:
        return self.counter.count(messages)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        return self.counter.truncate(text, max_tokens)

    # --- one request, with retries ---------------------------------------------------------

    def request_params(self, messages: list[Message], gen: GenerationConfig, seed: int | None = None) -> dict:
        """The request body; `seed` is the call's own seed (servers that honour it sample reproducibly)."""
        params = {"model": self.api_model, "messages": messages, self.token_limit_param: gen.max_new_tokens,
                  "temperature": gen.temperature, "seed": gen.seed if seed is None else seed}
        if gen.top_p < 1:
            params["top_p"] = gen.top_p
        extra = {}
        if gen.top_k > 0:  # not in OpenAI's API; vLLM and llama.cpp read it from the body
            extra["top_k"] = gen.top_k
        if self.template_kwargs:  # likewise: vLLM, SGLang and llama.cpp pass it to the chat template
            extra["chat_template_kwargs"] = self.template_kwargs
        if extra:
            params["extra_body"] = extra
        return {k: v for k, v in params.items() if k not in self.omit_params}

    def use_cache(self, path: Path | None) -> None:
        if self.cache is not None:
            self.cache.close()
        self.cache = ResponseCache(path) if path is not None else None

    def environment(self) -> dict:
        return {"backend": self.name, "device": f"server at {self.base_url}", "dtype": None}

    def complete(self, messages: list[Message], gen: GenerationConfig, seed: int | None = None) -> Completion:
        params = self.request_params(messages, gen, seed)
        if self.cache is None:
            return self.request(params, messages)
        if (kept := self.cache.get(params)) is not None:
            return kept
        completion = self.request(params, messages)
        self.cache.put(params, completion)
        return completion

    def request(self, params: dict, messages: list[Message]) -> Completion:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if self._cancelled.is_set():
                return failed(CANCELLED)
            try:
                response = self._client.chat.completions.create(**params)
                return self.completion(response, messages)
            except openai.APIStatusError as exc:
                status, message = exc.status_code, self.redact(_server_message(exc))
                if status in STOP_RUN_STATUSES:
                    raise UserError(f"The server at {self.base_url} refused the request for model "
                                    f"'{self.api_model}' with HTTP {status}: {message}") from None
                if not (status in RETRY_STATUSES or status >= 500):
                    return failed(f"HTTP {status} from the server (not retried): {message}")
                problem, wait_s = f"HTTP {status}: {message}", retry_after(exc.response)
            except openai.APIConnectionError as exc:  # includes timeouts
                if self._cancelled.is_set():  # the client was closed under it
                    return failed(CANCELLED)
                problem, wait_s = self.redact(f"{type(exc).__name__}: {exc}"), None
            except (openai.APIResponseValidationError, MalformedResponse) as exc:
                problem, wait_s = self.redact(f"malformed response ({exc})"), None
            except json.JSONDecodeError as exc:  # the body is not JSON, e.g. cut short
                problem, wait_s = self.redact(f"malformed response (the body is not JSON: {exc})"), None
            except NoText as exc:  # the server's considered answer: asking again would get the same
                return failed(self.redact(str(exc)))
            if attempt + 1 < attempts:
                delay = min(self.max_backoff_s, wait_s if wait_s is not None else self.backoff(attempt))
                log.warning("request failed (%s); attempt %d of %d in %.1f s", problem, attempt + 2, attempts, delay)
                if self._cancelled.wait(delay):
                    return failed(CANCELLED)
        return failed(f"failed after {attempts} attempts; last: {problem}")

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so concurrent retries spread out."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def completion(self, response, messages: list[Message]) -> Completion:
        """The completion a response holds; raises MalformedResponse where it holds none, NoText where the server
        answered without text. The openai package builds its objects without checking them, so every field is
        checked here."""
        if isinstance(response, (str, bytes)):  # a 200 whose body is not JSON comes back as raw text
            raise MalformedResponse(f"the body is not JSON: {str(response)[:80]!r}")
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse(f"it holds no choices (got {_shown(choices)})")
        message = getattr(choices[0], "message", None)
        if message is None:
            raise MalformedResponse("its first choice holds no message")
        text, finish = getattr(message, "content", None), getattr(choices[0], "finish_reason", None)
        if text is None:
            refusal = getattr(message, "refusal", None)
            raise NoText(f"the server answered without text (finish_reason {finish!r}"
                         + (f", refusal: {str(refusal)[:200]}" if refusal else "") + ")")
        if not isinstance(text, str):
            raise MalformedResponse(f"its message content is {_shown(text)}, not text")
        reason = FINISH_REASONS.get(finish, "stop")
        usage = getattr(response, "usage", None)
        prompt = _count(usage, "prompt_tokens")
        if usage is None or prompt is None:
            return Completion(text, self.counter.count(messages), self.counter.count_text(text),
                              usage_source="estimate", finish_reason=reason)
        cached = _count(getattr(usage, "prompt_tokens_details", None), "cached_tokens", "usage.prompt_tokens_details")
        reasoning = _count(getattr(usage, "completion_tokens_details", None), "reasoning_tokens",
                           "usage.completion_tokens_details")
        return Completion(text, prompt, _count(usage, "completion_tokens") or 0, usage_source="api",
                          cached_prompt_tokens=cached, reasoning_tokens=reasoning, finish_reason=reason)

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 4 else text

    def close(self) -> None:
        self._cancelled.set()
        self._pool.shutdown(self.max_concurrency)
        self._client.close()


class NoText(Exception):
    """A well-formed answer without text: a refusal, a content filter, a tool call."""


def failed(error: str) -> Completion:
    return Completion("", 0, 0, usage_source="api", error=error, finish_reason="error")


def _count(part, name: str, where: str = "usage") -> int | None:
    """A token count of the response's usage (None where it has none); one that is not a count is malformed."""
    value = getattr(part, name, None) if part is not None else None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise MalformedResponse(f"its {where}.{name} is {_shown(value)}, not a token count")
    return value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def retry_after(response) -> float | None:
    """Seconds the server asked us to wait (Retry-After in seconds or as an HTTP date, or retry-after-ms)."""
    headers = getattr(response, "headers", None) or {}
    if headers.get("retry-after-ms"):
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
    return str(exc.message)
