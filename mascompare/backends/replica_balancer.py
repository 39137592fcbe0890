"""One port in front of several one-request-at-a-time servers (llama.cpp replicas): see IdleReplicaBalancer."""

from __future__ import annotations

import asyncio
import collections
import json
import threading

import aiohttp
from aiohttp import web
from yarl import URL

MAX_REQUEST_BYTES = 64 * 2**20  # a request body the balancer accepts (long multi-agent prompts fit easily)
# Headers about one hop's connection, or that the balancer's HTTP library sets itself for the next hop.
NOT_FORWARDED = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                           "transfer-encoding", "upgrade", "host", "content-length"})


class IdleReplicaBalancer:
    """An HTTP proxy on loopback that hands each request to a replica with no request in flight.

    A replica decodes one request at a time, so one sent to a busy replica would queue behind its
    current one while another replica may sit idle; requests wait here instead, in turn,
    until any replica is free. Balancing per request, not per connection, matters because clients
    keep their connections alive. Status, headers and body pass through as they come, streamed
    (server-sent events) ones included. A replica that refuses connections is taken out and the
    request goes to another; one that drops a request, or no replica left, answers 502.
    """

    def __init__(self, port: int, targets: list[int]):
        self.port = port
        self.waiting = 0  # requests waiting here for an idle replica
        self._idle = collections.deque(targets)  # idle replicas, the longest idle first
        self._live = set(targets)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    async def _start(self, port: int) -> None:
        self._freed = asyncio.Condition()  # notified when a replica becomes idle or is taken out
        # One connection per request: a replica's server closes idle kept-alive connections after
        # a few seconds, and a request sent on one it has just closed would fail.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                              timeout=aiohttp.ClientTimeout(total=None),  # the client sets its own
                                              auto_decompress=False)  # bodies pass through as sent
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _stop(self) -> None:
        await self._runner.cleanup()  # stops listening; requests still in flight are cut
        await self._session.close()

    async def _acquire(self) -> int:
        async with self._freed:
            self.waiting += 1
            try:
                await self._freed.wait_for(lambda: self._idle or not self._live)
            finally:
                self.waiting -= 1
            if not self._idle:
                raise bad_gateway("Every llama.cpp replica behind this port has stopped.")
            return self._idle.popleft()

    async def _release(self, port: int, alive: bool = True) -> None:
        async with self._freed:
            if alive:
                self._idle.append(port)
            else:
                self._live.discard(port)
            self._freed.notify_all()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        while True:
            port = await self._acquire()
            if request.transport is None or request.transport.is_closing():  # the client left while waiting
                await self._release(port)
                return web.Response(status=499)  # "client closed request": nobody reads it
            url = URL(f"http://127.0.0.1:{port}{request.raw_path}", encoded=True)
            try:
                upstream = await self._session.request(request.method, url, headers=headers, data=body)
            except aiohttp.ClientConnectorError:  # nothing was sent: the replica is gone, try another
                await self._release(port, alive=False)
                continue
            except aiohttp.ClientError as exc:
                await self._release(port)
                raise bad_gateway(f"The llama.cpp replica on port {port} dropped the request "
                                  f"({type(exc).__name__}: {exc}).") from None
            try:
                return await self._relay(request, upstream)
            finally:
                upstream.release()
                await self._release(port)

    @staticmethod
    async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """The replica's response, passed on chunk by chunk as it arrives."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers={k: v for k, v in upstream.headers.items()
                                               if k.lower() not in NOT_FORWARDED})
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:  # the client left: stop reading, which tells the replica to stop
            pass
        except aiohttp.ClientError:  # the replica died mid-response: cut the client's connection so that
            if request.transport is not None:  # it sees an incomplete response, not a short complete one
                request.transport.close()
        return response


def bad_gateway(message: str) -> web.HTTPBadGateway:
    """A 502 in the error shape of the OpenAI API, so that clients show its message."""
    return web.HTTPBadGateway(text=json.dumps({"error": {"message": message, "type": "server_error", "code": 502}}),
                              content_type="application/json")
