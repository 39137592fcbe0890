"""The balancer in front of one-request-at-a-time replicas, against small aiohttp servers that behave so.

Each replica serves one request at a time and records the requests that reached it; a request can
be held at a replica until the test releases it, so where each request lands is checked without
racing a clock.
"""

import asyncio
import functools
import http.client
import json
import socket
import threading
import time

import pytest

from mascompare.backends.llama_server import free_port

pytest.importorskip("aiohttp", reason="the `server` extra is not installed (pip install -e '.[server]')")
from aiohttp import web  # noqa: E402

from mascompare.backends.replica_balancer import IdleReplicaBalancer  # noqa: E402

WAIT_S = 10  # the most a test waits for something that should happen at once


class Replicas:
    """n replicas on one event loop thread; `served[k]` lists the ids of the requests replica k answered."""

    def __init__(self, n: int):
        self.ports = [free_port() for _ in range(n)]
        self.served = [[] for _ in range(n)]
        self.waiting = [0] * n  # requests inside replica k now, running or queued behind the one running
        self.most_waiting = [0] * n
        self.holding = threading.Condition()  # notified when a held request arrives
        self.held: dict[str, int] = {}  # held request id -> the replica holding it
        self._gates: dict[str, asyncio.Event] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners = self._call(self._start())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    async def _start(self):
        self._one_at_a_time = [asyncio.Lock() for _ in self.ports]
        runners = []
        for k, port in enumerate(self.ports):
            app = web.Application()
            app.router.add_route("*", "/v1/echo", functools.partial(self._echo, k))
            app.router.add_get("/v1/stream", functools.partial(self._stream, k))
            app.router.add_post("/v1/drop", self._drop)
            app.router.add_get("/v1/cut", self._cut)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        return runners

    async def _hold(self, request_id: str, k: int) -> None:
        gate = self._gates.setdefault(request_id, asyncio.Event())
        with self.holding:
            self.held[request_id] = k
            self.holding.notify_all()
        await gate.wait()

    async def _echo(self, k: int, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.waiting[k] += 1
        self.most_waiting[k] = max(self.most_waiting[k], self.waiting[k])
        try:
            async with self._one_at_a_time[k]:
                self.served[k].append(body.get("id"))
                if body.get("hold"):
                    await self._hold(body["id"], k)
                status = 404 if body.get("missing") else 200
                return web.json_response({"replica": k, "path": request.raw_path, "body": body},
                                         status=status, headers={"X-Replica": str(k)})
        finally:
            self.waiting[k] -= 1

    async def _stream(self, k: int, request: web.Request) -> web.StreamResponse:
        async with self._one_at_a_time[k]:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Replica": str(k)})
            await response.prepare(request)
            await response.write(b"data: first\n\n")
            await self._hold("stream", k)
            await response.write(b"data: second\n\n")
            await response.write_eof()
            return response

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        request.transport.close()  # dies mid-stream
        return response

    async def _drop(self, request: web.Request) -> web.Response:
        request.transport.close()  # as a replica that crashes mid-request would
        return web.Response()

    def wait_held(self, request_id: str) -> int:
        """The replica holding `request_id`, once it arrives there."""
        with self.holding:
            assert self.holding.wait_for(lambda: request_id in self.held, timeout=WAIT_S), f"{request_id} never arrived"
            return self.held[request_id]

    def release(self, request_id: str) -> None:
        async def open_gate():
            self._gates.setdefault(request_id, asyncio.Event()).set()
        self._call(open_gate())

    def stop(self, k: int) -> None:
        self._call(self._runners[k].cleanup())

    def close(self) -> None:
        for gate in list(self._gates):
            self.release(gate)
        for runner in self._runners:
            self._call(runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        self._loop.close()


@pytest.fixture
def replicas():
    running = Replicas(2)
    yield running
    running.close()


@pytest.fixture
def balancer(replicas):
    running = IdleReplicaBalancer(free_port(), replicas.ports)
    yield running
    running.close()


@pytest.fixture
def front(balancer):
    return balancer.port


def post(connection: http.client.HTTPConnection, payload: dict, path: str = "/v1/echo") -> tuple[int, dict]:
    connection.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


OPENED: list[http.client.HTTPConnection] = []  # closed after each test


def connect(port: int) -> http.client.HTTPConnection:
    OPENED.append(http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S))
    return OPENED[-1]


@pytest.fixture(autouse=True)
def close_connections():
    yield
    while OPENED:
        OPENED.pop().close()


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def in_background(function, *args) -> tuple[threading.Thread, list]:
    result = []
    thread = threading.Thread(target=lambda: result.append(function(*args)), daemon=True)
    thread.start()
    return thread, result


def test_each_request_goes_to_an_idle_replica_whatever_connection_it_comes_on(replicas, front):
    long_thread, long_result = in_background(post, connect(front), {"id": "long", "hold": True})
    busy = replicas.wait_held("long")
    # Two more kept-alive connections, two requests each: none queues behind the long request.
    # (A balancer per connection would send one of these connections to the busy replica.)
    for name in ("a", "b"):
        connection = connect(front)
        for n in range(2):
            status, answer = post(connection, {"id": f"{name}{n}"})
            assert status == 200 and answer["replica"] == 1 - busy
        connection.close()
    assert replicas.served[1 - busy] == ["a0", "a1", "b0", "b1"] and replicas.served[busy] == ["long"]
    replicas.release("long")
    long_thread.join(WAIT_S)
    assert long_result == [(200, {"replica": busy, "path": "/v1/echo", "body": {"id": "long", "hold": True}})]


def test_requests_wait_at_the_front_while_every_replica_is_busy(replicas, balancer, front):
    first, _ = in_background(post, connect(front), {"id": "h0", "hold": True})
    holder = replicas.wait_held("h0")
    second, _ = in_background(post, connect(front), {"id": "h1", "hold": True})
    replicas.wait_held("h1")
    third, third_result = in_background(post, connect(front), {"id": "next"})
    wait_until(lambda: balancer.waiting == 1)
    replicas.release("h0")  # the replica that frees up first takes the waiting request
    third.join(WAIT_S)
    assert third_result[0][1]["replica"] == holder
    replicas.release("h1")
    for thread in (first, second):
        thread.join(WAIT_S)
    assert replicas.most_waiting == [1, 1]  # no request ever queued inside a replica


def test_status_headers_query_and_body_pass_through(replicas, front):
    connection = connect(front)
    connection.request("PUT", "/v1/echo?x=1&y=%20z", body=json.dumps({"id": "q", "missing": True}),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 404 and response.getheader("X-Replica") == str(answer["replica"])
    assert answer["path"] == "/v1/echo?x=1&y=%20z" and answer["body"] == {"id": "q", "missing": True}


def test_a_streamed_response_arrives_as_the_replica_writes_it(replicas, front):
    connection = connect(front)
    connection.request("GET", "/v1/stream")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.readline() == b"data: first\n"  # while the replica still holds the rest
    replicas.release("stream")
    assert response.read() == b"\ndata: second\n\n"


def test_a_client_leaving_mid_stream_frees_its_replica(replicas, front):
    connection = connect(front)
    connection.request("GET", "/v1/stream")
    assert connection.getresponse().readline() == b"data: first\n"
    connection.close()
    replicas.release("stream")
    holders = []
    for n in range(2):  # both replicas take a request at once again
        holders.append(in_background(post, connect(front), {"id": f"h{n}", "hold": True}))
        replicas.wait_held(f"h{n}")
    for n, (thread, result) in enumerate(holders):
        replicas.release(f"h{n}")
        thread.join(WAIT_S)
        assert result[0][0] == 200


def test_a_replica_dying_mid_stream_leaves_the_client_an_incomplete_response(front):
    connection = connect(front)
    connection.request("GET", "/v1/cut")
    response = connection.getresponse()
    assert response.status == 200 and response.readline() == b"data: first\n"
    with pytest.raises(http.client.IncompleteRead):
        response.read()


def test_a_replica_that_is_gone_is_skipped_and_with_none_left_one_clear_error(replicas, front):
    replicas.stop(0)
    connection = connect(front)
    assert [post(connection, {"id": f"r{n}"})[1]["replica"] for n in range(3)] == [1, 1, 1]
    replicas.stop(1)
    connection.request("POST", "/v1/echo", body=b"{}")
    response = connection.getresponse()
    assert response.status == 502 and b"Every llama.cpp replica behind this port has stopped" in response.read()


def test_a_replica_dropping_a_request_answers_502_and_the_next_request_is_served(replicas, front):
    connection = connect(front)
    connection.request("POST", "/v1/drop", body=b"{}")
    response = connection.getresponse()
    assert response.status == 502 and b"dropped the request" in response.read()
    assert post(connect(front), {"id": "after"})[0] == 200


def test_a_client_that_leaves_while_waiting_is_never_sent_on(replicas, balancer, front):
    holders = [in_background(post, connect(front), {"id": f"h{n}", "hold": True})[0] for n in range(2)]
    for n in range(2):
        replicas.wait_held(f"h{n}")
    leaver = socket.create_connection(("127.0.0.1", front))
    body = json.dumps({"id": "left"}).encode()
    leaver.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_until(lambda: balancer.waiting == 1)
    leaver.close()
    for n in range(2):
        replicas.release(f"h{n}")
    for thread in holders:
        thread.join(WAIT_S)
    assert post(connect(front), {"id": "later"})[0] == 200
    assert "left" not in replicas.served[0] + replicas.served[1]


def test_close_stops_listening_and_cuts_requests_in_flight(replicas):
    port = free_port()
    balancer = IdleReplicaBalancer(port, replicas.ports)
    held, result = in_background(lambda: _status_or_error(connect(port)))
    replicas.wait_held("cut")
    balancer.close()
    held.join(WAIT_S)
    assert not held.is_alive() and isinstance(result[0], (http.client.HTTPException, OSError))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def _status_or_error(connection):
    try:
        return post(connection, {"id": "cut", "hold": True})
    except (http.client.HTTPException, OSError) as exc:
        return exc
