"""A real Dask cluster made of separate processes started from the command line, as operators do:
``dask scheduler`` and ``dask worker`` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class CliCluster:
    """``dask scheduler`` + N ``dask worker`` processes; each worker in its own process group."""

    def __init__(self, tmp: Path, n_workers: int = 2, env: dict | None = None):
        self.tmp = Path(tmp)
        self.env = {**os.environ, **(env or {}), "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "inf"}
        self.scheduler_file = self.tmp / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "scheduler.log", "w"),  # noqa: SIM115 - lives as long as the process
            start_new_session=True,
        )
        self.address = self._wait_for_scheduler()
        self.workers = [self.start_worker(i) for i in range(n_workers)]
        self.wait_for_workers(n_workers)

    def _wait_for_scheduler(self, timeout: float = 60) -> str:
        end = time.time() + timeout
        while time.time() < end:
            if self.scheduler_file.exists():
                try:
                    return json.loads(self.scheduler_file.read_text())["address"]
                except (json.JSONDecodeError, KeyError):
                    pass
            if self.scheduler.poll() is not None:
                raise RuntimeError((self.tmp / "scheduler.log").read_text())
            time.sleep(0.2)
        raise TimeoutError("dask scheduler did not start")

    def start_worker(self, i: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--memory-limit",
                "3GiB",
                "--name",
                f"w{i}",
                "--local-directory",
                str(self.tmp / f"w{i}"),
                "--preload",
                "lakepipe.runtime.heap",  # as deploy/ starts workers
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"worker{i}.log", "w"),
            start_new_session=True,
        )

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_worker(self, i: int) -> None:
        """SIGKILL a worker's whole process group (nanny and worker): it is gone, not restarted."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(timeout=30)

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, signal.SIGKILL)
