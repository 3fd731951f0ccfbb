"""Dask execution: an existing ``distributed`` scheduler by address, or a local cluster.

Pipelines build graphs of large tasks (a group of connectome subjects each, heavy numpy inside)
and run them through :func:`dask_client`. Lakes in ``memory://`` live in this process only, so
they run on Dask's threaded scheduler instead of worker processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

import dask

from lakepipe.blas import blas_environment

log = logging.getLogger(__name__)

#: ``--scheduler`` values that run in this process instead of on a cluster (debugging, tests)
IN_PROCESS = ("synchronous", "threads")


def scheduler_address(address: str | None = None) -> str | None:
    """``address``, else ``$LAKEPIPE_SCHEDULER``, else ``$DASK_SCHEDULER_ADDRESS`` (what the Dask
    Kubernetes operator sets in a DaskJob's pod), else ``None`` (a local cluster)."""
    return address or os.environ.get("LAKEPIPE_SCHEDULER") or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def default_workers() -> int:
    """One worker per core this process may use (container CPU limits included), at most 8."""
    from dask.system import CPU_COUNT

    return max(1, min(CPU_COUNT or 1, 8))


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    lake_url: str = "",
    n_workers: int | None = None,
    memory_limit: str | None = "auto",
    client=None,
) -> Iterator[object | None]:
    """Context with a ``distributed.Client`` (or ``None`` for in-process lakes).

    A ``client`` already at hand is passed through untouched (one cluster for several pipelines).

    ``scheduler``/``$LAKEPIPE_SCHEDULER`` connects to an existing cluster (``synchronous`` or
    ``threads`` run in this process instead, for debugging); otherwise a
    :class:`~distributed.LocalCluster` with one single-threaded worker process per core is started
    and its dashboard address is logged.
    """
    if client is not None:
        yield client
        return
    address = scheduler_address(scheduler)
    if address in IN_PROCESS:
        with dask.config.set(scheduler=address):
            yield None
        return
    if lake_url.startswith("memory://") and not address:
        with dask.config.set(scheduler="threads"):
            yield None
        return
    from distributed import Client, LocalCluster

    if address:
        client = Client(address, timeout="30s")
        log.info("using Dask scheduler %s (%d workers)", address, len(client.scheduler_info()["workers"]))
        try:
            yield client
        finally:
            client.close()
        return
    # added to distributed's own pre-spawn settings (one BLAS/OpenMP thread per single-threaded
    # worker), not replacing them: two-thread OpenBLAS in every worker oversubscribes the cores
    env = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", default={}),
        **blas_environment(),
        "MALLOC_TRIM_THRESHOLD_": "65536",
    }
    # forkserver: workers fork from one server process that has done the imports once (and, started
    # after the environment above is set, loaded numpy with it): a local cluster starts in about a
    # third of the time of "spawn" and closes at once instead of after ~2 s
    config = {
        "distributed.scheduler.worker-saturation": "inf",
        "distributed.nanny.pre-spawn-environ": env,
        "distributed.worker.multiprocessing-method": "forkserver",
    }
    with dask.config.set(config):
        cluster = LocalCluster(
            n_workers=n_workers or default_workers(),
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
        log.info("local Dask cluster: %d workers, dashboard %s", len(cluster.workers), client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def compute(*graphs, client=None, desc: str = "compute", log_every_s: float = 10.0):
    """Compute Dask collections on ``client`` (or the current default scheduler).

    On a terminal a progress bar is shown; otherwise (cron, CI, pipes) a log line every
    ``log_every_s`` seconds says how many of the results are done.
    """
    if client is None:
        if sys.stderr.isatty():
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return dask.compute(*graphs)
        return dask.compute(*graphs)
    futures = client.compute(list(graphs))
    with client.as_current():  # progress/wait look up "the" client; it need not be the global default
        if sys.stderr.isatty():
            from distributed import progress

            progress(futures, notebook=False)
        else:
            from distributed import wait
            from distributed.utils import TimeoutError as DaskTimeout

            start = time.monotonic()
            while True:
                try:
                    wait(futures, timeout=log_every_s)
                    break
                except (DaskTimeout, TimeoutError):
                    done = sum(f.done() for f in futures)
                    log.info(
                        "%s: %d/%d result(s) done after %.0f s",
                        desc,
                        done,
                        len(futures),
                        time.monotonic() - start,
                    )
    return client.gather(futures)
