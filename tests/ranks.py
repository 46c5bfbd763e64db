"""Running a script on N gloo ranks (fresh processes on loopback) and collecting each rank's
last printed line as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.test_comm import LAUNCH_VARS, free_port

ROOT = str(Path(__file__).resolve().parents[1])


def run_ranks(script: str, world_size: int, timeout: int = 240, extra_env: dict | None = None) -> list:
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    base["PYTHONPATH"] = ROOT + os.pathsep + base.get("PYTHONPATH", "")
    base["OMP_NUM_THREADS"] = "1"  # ranks share the cores
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**base, **(extra_env or {}), "RANK": str(r), "LOCAL_RANK": str(r),
                                   "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(world_size)]
    try:  # drained side by side: a rank blocked on a full pipe would stall the others' exit barrier
        with ThreadPoolExecutor(len(procs)) as pool:
            outputs = list(pool.map(lambda p: p.communicate(timeout=timeout), procs))
    finally:
        for p in procs:
            p.kill()
    for rank, (p, (_, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{err[-4000:]}"
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
