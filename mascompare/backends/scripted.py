"""backend=scripted: the openai backend, unchanged, against an OpenAI-compatible server played in this process.

Every request goes through the openai package and the backend's own pool, retries, backoff, cache and
accounting, exactly as against a real server; only the HTTP transport answers from a script instead of the
network. It exists so that the streaming path, retries and failures can be tried and tested without a server.

A script (YAML or JSON, `backend.script`) holds rules; the first rule whose `when` text occurs in a request's
messages answers it (a rule without `when` answers every request):

    rules:
      - when: "What is 3 + 4?"
        replies:                      # used in turn by the requests this rule answers; the last one repeats
          - {status: 429, headers: {retry-after: "0"}}
          - {text: "The answer is 7.", delay_s: 0.2}
    default: {text: "The answer is 0."}   # for requests no rule matches (this is the default default)

A reply: `text` (the completion; null sends a message without content, as a refusal does), `status` (200;
another status answers with an OpenAI-style error body), `body` (a raw body sent instead, e.g. one that is not
JSON), `delay_s` (before answering; past the backend's timeout the request times out; a backend that is closed
meanwhile drops the connection, as a server does when its client goes), `usage` ({prompt_tokens,
completion_tokens}, sent as written, so that a broken server's strings or negative counts can be played; null
sends none; absent: words counted), `finish_reason` (stop | length | content_filter), `headers`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from mascompare.backends.openai_api import OpenAIBackend
from mascompare.errors import UserError
from mascompare.settings import ModelSettings, ScriptedSettings, Section, wanted

DEFAULT_TEXT = "The answer is 0."


class Reply(Section):
    text: str | None = DEFAULT_TEXT
    status: Annotated[int, wanted("an HTTP status", ge=100, le=599)] = 200
    body: str | None = None
    delay_s: Annotated[float, wanted("a non-negative number of seconds", ge=0)] = 0.0
    usage: dict[str, Any] | None | Literal["counted"] = "counted"
    finish_reason: Literal["stop", "length", "content_filter"] = "stop"
    headers: dict[str, str] = {}


class Rule(Section):
    when: str | None = None
    replies: Annotated[list[Reply], wanted("a list of at least one reply", min_length=1)]


class Script(Section):
    rules: list[Rule] = []
    default: Reply = Reply()

    @classmethod
    def read(cls, path: str | None) -> "Script":
        if path is None:
            return cls()
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise UserError(f"backend.script {path} cannot be read ({error}); give a YAML or JSON script.") from None
        return cls.of(data or {}, f"backend.script ({path})")


class ScriptedServer:
    """Answers chat-completion requests from a script; keeps every request it got (body and arrival time)."""

    def __init__(self, script: Script):
        self.script = script
        self.requests: list[tuple[float, dict]] = []
        self._turns = [itertools.count() for _ in script.rules]
        self._lock = threading.Lock()
        self.closed = threading.Event()  # the backend has gone: connections still open are dropped

    def reply_for(self, body: dict) -> Reply:
        text = "\n".join(str(m.get("content")) for m in body.get("messages") or [])
        with self._lock:
            self.requests.append((time.monotonic(), body))
            for rule, turns in zip(self.script.rules, self._turns):
                if rule.when is None or rule.when in text:
                    return rule.replies[min(next(turns), len(rule.replies) - 1)]
        return self.script.default

    def handle(self, request):
        import httpx2

        body = json.loads(request.content)
        reply = self.reply_for(body)
        timeout = (request.extensions.get("timeout") or {}).get("read")
        if reply.delay_s:
            if self.closed.wait(min(reply.delay_s, timeout if timeout is not None else reply.delay_s)):
                raise httpx2.ReadError("the client closed the connection", request=request)
            if timeout is not None and reply.delay_s > timeout:
                raise httpx2.ReadTimeout("the scripted server did not answer in time", request=request)
        if reply.body is not None:
            return httpx2.Response(reply.status, text=reply.body, headers=reply.headers)
        if reply.status != 200:
            error = {"error": {"message": f"scripted status {reply.status}", "type": "scripted", "code": reply.status}}
            return httpx2.Response(reply.status, json=error, headers=reply.headers)
        words = sum(len(str(m.get("content")).split()) for m in body.get("messages") or [])
        usage = ({"prompt_tokens": words, "completion_tokens": len((reply.text or "").split())}
                 if reply.usage == "counted" else reply.usage)
        completion: dict[str, Any] = {
            "id": f"scripted-{len(self.requests)}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason}]}
        if usage is not None:
            completion["usage"] = {**usage, "total_tokens": sum(v for v in usage.values() if isinstance(v, int))}
        return httpx2.Response(200, json=completion, headers=reply.headers)


class ScriptedBackend(OpenAIBackend):
    name = "scripted"

    def __init__(self, settings: ScriptedSettings, model: ModelSettings):
        self.server = ScriptedServer(Script.read(settings.script))
        super().__init__(settings, model)

    def http_client(self):
        import httpx2

        return httpx2.Client(transport=httpx2.MockTransport(self.server.handle))

    def close(self) -> None:
        self.server.closed.set()
        super().close()

    def environment(self) -> dict:
        return {"backend": self.name, "device": "scripted server in this process", "dtype": None}
