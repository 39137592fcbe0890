"""Model loads in a three-job sweep on the embedded model (hf backend, one process).

`mascompare run -m method=baseline,text_mas,latent_mas ...` runs in a fresh process; the loads are
counted twice, independently: the "Loading weights" lines transformers prints for each load, and
`backend_reused` in each job's run.json. The load time each job paid is printed as well.

    python bench/sweep_model_loads.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sweep = Path(scratch) / "sweep"
        command = [sys.executable, "-m", "mascompare.cli", "run", "-m", "method=baseline,text_mas,latent_mas",
                   "task=arith", f"task.limit={args.limit}", f"generation.max_new_tokens={args.max_new_tokens}",
                   # progress on: its loading bars are the second count of loads (run.progress=false hides them)
                   "run.progress=true", f"run.output_root={scratch}", f"hydra.sweep.dir={sweep}"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[-2000:]
        runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))]
    printed = (done.stdout + done.stderr).count("Loading weights: 100%")
    print(f"sweep: method=baseline,text_mas,latent_mas, model smollm2-135m (hf backend, CPU), task=arith "
          f"task.limit={args.limit}, max_new_tokens {args.max_new_tokens}; {elapsed:.0f} s in all")
    for run in runs:
        print(f"  job {Path(run['run_dir']).name} {run['method']:10s} backend_reused={run['backend_reused']!s:5s} "
              f"model_load_s={run['model_load_s']:.3f}")
    print(f"model loads: {sum(not r['backend_reused'] for r in runs)} by run.json, {printed} 'Loading weights' "
          f"printed, for {len(runs)} jobs")


if __name__ == "__main__":
    main()
