"""A two-job sweep through the Ray launcher (conf/hydra/launcher/ray_gpu.yaml) on a real Ray cluster.

The test starts its own one-node cluster on loopback (`ray start --head`), joins it the way a
cluster's head node does (`hydra.launcher.ray.init.address=auto`), runs two jobs of the embedded
model on CPU (no GPU asked for), and stops the cluster again, whatever happened.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mascompare.backends.llama_server import free_port

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240

pytestmark = [
    pytest.mark.ray,
    pytest.mark.embedded,
    pytest.mark.skipif(RAY is None, reason="Ray is not installed (pip install -e '.[ray]')"),
]


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a fresh Ray head node on 127.0.0.1; it and its workers are stopped afterwards."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    # the cluster's workers import this checkout's mascompare, as the driver does
    env = {**os.environ, "PYTHONPATH": _with_repo(os.environ.get("PYTHONPATH")), "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp_dir) / "head.log", "wb")
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True).returncode:
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start: {(Path(temp_dir) / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        _stop(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _with_repo(pythonpath: str | None) -> str:
    return os.pathsep.join(filter(None, [str(REPO), pythonpath]))


def _stop(head: subprocess.Popen) -> None:
    try:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` then stops the cluster's processes
        head.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # whatever is left in its session, workers included
    except ProcessLookupError:
        pass
    head.wait()


def test_two_job_sweep_runs_on_a_local_ray_cluster(ray_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "mascompare.cli", "run", "-m", "hydra/launcher=ray_gpu",
               "hydra.launcher.ray.init.address=auto", "hydra.launcher.ray.remote.num_gpus=0",
               "task=arith", "task.limit=1", "generation.max_new_tokens=4", "generation.seed=1,2",
               "run.progress=false", f"run.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    # the driver joins the cluster above (not any other one on this machine), with this checkout's code
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": _with_repo(os.environ.get("PYTHONPATH"))}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = done.stdout + done.stderr
    print(output)  # pytest -s shows the cluster's log lines
    assert done.returncode == 0, output[-3000:]
    assert f"Using address {ray_cluster} set in the environment variable RAY_ADDRESS" in output
    assert "Connected to Ray cluster" in output
    assert "Ray Launcher is launching 2 jobs" in output
    runs = [json.loads((sweep / job / "run.json").read_text()) for job in ("0", "1")]
    assert [r["config"]["generation"]["seed"] for r in runs] == [1, 2]
    assert all(r["status"] == "finished" and r["summary"]["n"] == 1 and r["summary"]["errors"] == 0 for r in runs)
    workers = {line.split("pid=")[1].split(")")[0] for line in output.splitlines() if "(_run_job pid=" in line}
    assert len(workers) == 2  # each job ran in a Ray worker process of its own
    assert (sweep / "comparison.md").is_file()  # the sweep's callback ran on the driver
