"""How long an API run takes to exit after Ctrl-C (SIGINT) or SIGTERM, with every request in flight.

The run is baseline on --samples arith questions against backend=scripted whose server answers each request
only after --delay seconds (a slow server), --samples requests at once. Once run.json exists and the requests
are out, the signal is sent; the time to the process's exit, its exit status, its status in run.json and the
count of traceback lines it printed are reported. Each checkout runs with PYTHONPATH set to it:

    python bench/ctrl_c.py --tree /tmp/main-checkout --tree .   # before and after, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(tree: Path, number: int, samples: int, delay: float) -> tuple[float, int, str, int]:
    with tempfile.TemporaryDirectory() as scratch:
        root, script = Path(scratch) / "results", Path(scratch) / "slow.yaml"
        script.write_text(json.dumps({"default": {"text": "The answer is 0.", "delay_s": delay}}), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from mascompare.cli import app; app(sys.argv[1:])", "run",
             "backend=scripted", f"backend.script={script}", "method=baseline", "task=arith", f"task.limit={samples}",
             f"backend.max_concurrency={samples}", "run.progress=false", f"run.output_root={root}"],
            env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal, even when
        # this benchmark runs in the background (where a shell has its children ignore Ctrl-C)
        while not list(root.rglob("run.json")):
            time.sleep(0.05)
        time.sleep(1.0)  # the requests out
        process.send_signal(number)
        sent = time.monotonic()
        output, _ = process.communicate()
        took = time.monotonic() - sent
        (run_json,) = root.rglob("run.json")
        status = json.loads(run_json.read_text(encoding="utf-8")).get("status")
        return took, process.returncode, status, output.count("Traceback")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to measure (repeatable; default .)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--delay", type=float, default=150.0, help="seconds the server takes to answer")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"{'checkout':30} {'signal':8} {'exit after s':>12} {'exit':>5} {'run.json status':>16} {'tracebacks':>10}")
    for _ in range(args.rounds):
        for tree in args.tree or [Path(".")]:
            for number in (signal.SIGINT, signal.SIGTERM):
                took, code, status, tracebacks = measure(tree.resolve(), number, args.samples, args.delay)
                print(f"{str(tree):30} {number.name:8} {took:12.2f} {code:5d} {status:>16} {tracebacks:10d}", flush=True)


if __name__ == "__main__":
    main()
