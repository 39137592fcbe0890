"""How many threads torch computes with (`run.threads`), for a model that runs on this machine's CPU.

torch starts one OpenMP thread per core and has them wait for each other at every operation, spinning
while they wait. On a machine whose other work keeps some cores busy, a thread whose core is taken
stalls its partners at every step, and the spinning ones burn the time the busy core's owner needed:
on a 2-core machine with one core busy, two threads ran several times slower than one (bench/threads.py).
So `run.threads=auto` counts the cores that are actually free when the run starts (the cores this
process may use, less the work running on them, measured over a fraction of a second) and uses that
many, at least one; OMP_NUM_THREADS, where set, decides instead. A number sets it outright.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

SAMPLE_S = 0.25  # how long the machine's load is watched before a run chooses


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many of this process's cores other work keeps busy right now: from their /proc/stat lines over
    `sample_s` (this process sleeps meanwhile), else from the load average."""
    try:
        mine = {f"cpu{k}" for k in os.sched_getaffinity(0)}
    except AttributeError:
        mine = None

    def ticks() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                lines = [line.split() for line in stat if line.startswith("cpu") and line[3:4].isdigit()]
        except (OSError, ValueError):
            return None
        total = idle = 0
        for name, *fields in lines:
            if mine is None or name in mine:
                values = [int(x) for x in fields[:8]]
                total, idle = total + sum(values), idle + values[3] + values[4]  # idle and waiting for I/O
        return (total, idle) if total else None

    before = ticks()
    time.sleep(sample_s)
    after = ticks()
    if before is None or after is None or after[0] == before[0]:
        try:
            return min(os.getloadavg()[0], usable_cores())
        except OSError:
            return 0.0
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * (len(mine) if mine else os.cpu_count() or 1)


def choose(setting: int | str) -> tuple[int, str]:
    """The thread count for `run.threads` and why, in words."""
    if setting != "auto":
        return int(setting), f"run.threads={setting}"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) >= 1:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    usable, busy = usable_cores(), busy_cores()
    free = max(1, min(usable, int(usable - busy + 0.5)))
    return free, f"{free} of {usable} cores free at the start ({busy:.1f} busy with other work)"


def apply(setting: int | str) -> int:
    """Set torch's thread count for this run (torch is imported: the run computes with it); returns it."""
    import torch

    count, why = choose(setting)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    log.info("torch computes with %d thread%s (%s; run.threads=N sets it)", count, "" if count == 1 else "s", why)
    return count
