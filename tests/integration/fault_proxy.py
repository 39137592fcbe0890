"""A fault-injecting HTTP proxy on loopback, in front of a real OpenAI-compatible server.

Requests pass through to the upstream server unless a fault is queued: a status with headers
(429 with Retry-After, 503, 400, 401), a delay (to hit the client's timeout), a hold (until other
requests have been answered), a body that is not JSON, a response without `usage`, or the upstream
process being killed after N requests. Every request is logged with its arrival time, so tests can
check retries and their spacing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    kind: str  # "status" | "delay" | "hold" | "malformed" | "no_usage"
    status: int = 200
    headers: dict = field(default_factory=dict)
    message: str = ""
    delay_s: float = 0.0  # "delay": how long; "hold": the longest it waits
    hold_for: int = 0  # "hold": forwarded once this many later requests have been answered


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:PORT (no /v1)
        self.faults: list[Fault] = []
        self.arrivals: list[float] = []
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = self.answered = 0
        self.kill_after: tuple[int, callable] | None = None
        self._lock = threading.Lock()
        self._answer = threading.Condition(self._lock)  # notified whenever a request has been answered
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    def inject(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self.faults.extend([fault] * times)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.arrivals.append(time.monotonic())
                    proxy.bodies.append(json.loads(body or b"{}"))
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                    count = len(proxy.arrivals)
                try:
                    fault = proxy._next_fault()
                    if fault and fault.kind == "status":
                        payload = json.dumps({"error": {"message": fault.message or "injected", "code": fault.status}})
                        return self._reply(fault.status, payload.encode(), fault.headers)
                    if fault and fault.kind == "malformed":
                        return self._reply(200, b'{"id": "x", "choices": [ this is not json', {})
                    if fault and fault.kind == "delay":
                        time.sleep(fault.delay_s)
                    if fault and fault.kind == "hold":
                        with proxy._answer:
                            target = proxy.answered + fault.hold_for
                            proxy._answer.wait_for(lambda: proxy.answered >= target, timeout=fault.delay_s)
                    self._forward(body, strip_usage=bool(fault and fault.kind == "no_usage"))
                finally:
                    with proxy._answer:
                        proxy.in_flight -= 1
                        proxy.answered += 1
                        proxy._answer.notify_all()
                    if proxy.kill_after and count == proxy.kill_after[0]:
                        proxy.kill_after[1]()

            def _forward(self, body: bytes | None, strip_usage: bool = False):
                request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=600) as response:
                        status, data = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                except OSError:  # the upstream server is down: drop the connection, as a dead server would
                    self.close_connection = True
                    self.connection.close()
                    return
                if strip_usage:
                    decoded = json.loads(data)
                    decoded.pop("usage", None)
                    data = json.dumps(decoded).encode()
                self._reply(status, data, {})

            def _reply(self, status: int, data: bytes, headers: dict):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(data)

        return Handler
