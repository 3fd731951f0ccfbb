"""Dask execution for one command or job: an existing ``distributed`` scheduler by address, a local
cluster started on first use, or in-process.

Methods build graphs of large tasks (a group of connectome subjects each, heavy numpy inside) and
run them through :meth:`Runtime.compute`. A :class:`Runtime` starts at most one cluster, and only
when a graph actually runs: commands that find nothing to compute start none. Lakes in
``memory://`` live in this process only, so they run on Dask's threaded scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lakepipe.blas import blas_environment

if TYPE_CHECKING:
    from distributed import Client

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


#: the Dask preload module that tunes each worker's heap (:mod:`lakepipe.runtime.heap`)
HEAP_PRELOAD = "lakepipe.runtime.heap"


def cluster_config() -> dict[str, Any]:
    """Dask settings for lakepipe's local clusters.

    Workers get distributed's own pre-spawn settings (one BLAS/OpenMP thread per single-threaded
    worker) plus the BLAS kernel choice for this CPU; they are forked from one forkserver process
    that has done the imports once (a local cluster starts in about a third of the time of
    ``spawn`` and closes at once instead of after ~2 s). Their heap is set by the
    :data:`HEAP_PRELOAD` module as they start (also for workers started elsewhere, ``deploy/``).
    """
    import dask
    import distributed  # noqa: F401 - its config defaults (pre-spawn-environ among them) load with it

    env = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", default={}),
        **blas_environment(),
    }
    env.setdefault("PYTHONHASHSEED", "6640")  # distributed's own choice, here so that it is set early
    return {
        "distributed.scheduler.worker-saturation": "inf",
        "distributed.nanny.pre-spawn-environ": env,
        "distributed.worker.multiprocessing-method": "forkserver",
    }


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored: Ctrl-C in a terminal reaches the whole process
    group, and the workers would each print a traceback; this process handles it (one line) and
    closes the cluster, which stops them."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Runtime:
    """The Dask side of one command or job.

    Parameters
    ----------
    scheduler
        Address of an existing scheduler (default ``$LAKEPIPE_SCHEDULER``, ``$DASK_SCHEDULER_ADDRESS``),
        ``synchronous`` or ``threads`` to run in this process, or ``None`` for a local cluster of
        single-threaded worker processes, one per core.
    lake_url
        The lake's URL (a ``memory://`` lake exists only in this process: it runs in-process).
    client
        A ``distributed.Client`` already at hand (tests, notebooks): used as it is and not closed.
    n_workers, memory_limit
        Size of a local cluster.

    Notes
    -----
    Nothing is started until :attr:`client` (or :meth:`compute`) is first used, or :meth:`prestart`
    is called; :meth:`close` closes what this runtime started.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        lake_url: str = "",
        client: Client | None = None,
        n_workers: int | None = None,
        memory_limit: str | None = "auto",
    ):
        self.address = None if client is not None else scheduler_address(scheduler)
        # a memory:// lake exists only in this process: worker processes could not read it
        self._memory_mode = lake_url.startswith("memory://") and self.address not in IN_PROCESS
        self._client: Client | None = client
        self._owns_client = False
        self._cluster: Any = None
        self._n_workers = n_workers
        self._memory_limit = memory_limit
        self._starting: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._warm: list[Any] = []  # futures of the workers' warm-up, held until they ran

    # ---- where graphs run -------------------------------------------------------------------------
    @property
    def in_process(self) -> bool:
        """Whether graphs run in this process (``synchronous``/``threads``, or a ``memory://`` lake)."""
        return self.address in IN_PROCESS or self._memory_mode

    @property
    def local_scheduler(self) -> str:
        """Dask's in-process scheduler used when :attr:`in_process`."""
        return "synchronous" if self.address == "synchronous" else "threads"

    @property
    def started(self) -> bool:
        """Whether a client is connected (given, or started by this runtime)."""
        return self._client is not None

    @property
    def client(self) -> Client | None:
        """The distributed client, connected or started now if needed; ``None`` when in-process."""
        if self.in_process:
            return None
        self._join_start()
        if self._client is None:
            self._start()
        return self._client

    def prestart(self, warm: Callable[[], object] | None = None) -> None:
        """Start the cluster (or connect) in a background thread now, while this process goes on
        preparing the graph, instead of when the graph first runs; ``warm`` then runs once on each
        worker (a method's imports and kernels), ahead of the graph's tasks. A method calls this once
        it knows it has work. Nothing happens in-process or when a client is already connected."""
        if self.in_process or self._client is not None or self._starting is not None:
            return
        self.preload()

        def start() -> None:
            try:
                self._start()
                if warm is not None and self._client is not None:
                    self._warm = [
                        self._client.submit(warm, workers=[w], allow_other_workers=False, pure=False)
                        for w in self._client.scheduler_info()["workers"]
                    ]
            except BaseException as exc:  # noqa: BLE001 - raised where the client is first needed
                self._start_error = exc

        self._starting = threading.Thread(target=start, name="lakepipe-cluster-start", daemon=True)
        self._starting.start()

    def preload(self, modules: Sequence[str] = ()) -> None:
        """Start, now, the process that a local cluster's workers are forked from, with ``modules``
        imported there (a method's own, which its first tasks would import otherwise): it imports them
        while this process plans, and every worker starts with them. Its environment is the workers'
        (BLAS settings), and it ignores Ctrl-C (this process handles it), which only the main thread
        can arrange. Nothing happens unless this runtime would start a local cluster, or when the
        process already runs (a second runtime in this process)."""
        if self.in_process or self.address or self._client is not None or self._starting is not None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        import multiprocessing

        import dask

        config = cluster_config()
        if config["distributed.worker.multiprocessing-method"] != "forkserver":
            return
        from multiprocessing import forkserver

        with dask.config.set(config), _workers_ignore_sigint():
            # distributed's own list (numpy, pandas, ...) is what these import anyway; its own call
            # would come too late once this process runs
            multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", *modules])
            # what each nanny sets before it starts a worker (distributed.nanny.pre-spawn-environ, where
            # a variable already set wins and None unsets)
            for k, v in config["distributed.nanny.pre-spawn-environ"].items():
                if v is not None:
                    os.environ.setdefault(k, str(v))
            forkserver.ensure_running()

    def _join_start(self) -> None:
        """Wait for a :meth:`prestart` under way; its error, if any, is raised here."""
        if self._starting is None:
            return
        self._starting.join()
        self._starting = None
        if self._start_error is not None:
            exc, self._start_error = self._start_error, None
            raise exc

    @property
    def n_workers(self) -> int:
        """Workers the graphs run on (starts the cluster); 1 when in-process."""
        client = self.client
        if client is None:
            return 1
        return max(1, len(client.scheduler_info()["workers"]))

    def _start(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        if self.address:
            # not the default client: this process's own small reads stay here, as with a local cluster
            self._client = Client(self.address, timeout="30s", set_as_default=False)
            self._owns_client = True
            n = len(self._client.scheduler_info()["workers"])
            log.info("using Dask scheduler %s (%d workers)", self.address, n)
            return
        with dask.config.set(cluster_config()), _workers_ignore_sigint():
            self._cluster = LocalCluster(
                n_workers=self._n_workers or default_workers(),
                threads_per_worker=1,
                processes=True,
                memory_limit=self._memory_limit,
                dashboard_address=":0",
                silence_logs=logging.CRITICAL,
                preload=[HEAP_PRELOAD],
            )
            self._client = Client(self._cluster, set_as_default=False)
        self._owns_client = True
        log.info(
            "local Dask cluster: %d workers, dashboard %s",
            len(self._cluster.workers),
            self._client.dashboard_link,
        )

    def close(self) -> None:
        """Close the client and cluster this runtime started (a given client is left alone)."""
        interrupted: BaseException | None = None
        while self._starting is not None:  # a start under way finishes first, and is closed too
            try:
                self._join_start()
            except Exception:  # noqa: BLE001 - a failed start: nothing of it to close
                pass
            except BaseException as exc:  # Ctrl-C while waiting: wait on, close, then stop
                interrupted = exc
        self._warm = []
        if self._owns_client and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            if self._cluster is not None:
                with contextlib.suppress(Exception):
                    self._cluster.close()
            self._client, self._cluster, self._owns_client = None, None, False
        if interrupted is not None:
            raise interrupted

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running graphs ---------------------------------------------------------------------------
    def literal(self, obj: Any, name: str = "data") -> Any:
        """``obj`` for a graph, sent straight to the worker that needs it: not hashed, not walked,
        not embedded in the graph (scattered without broadcast on a cluster, so a lost worker's
        data are recomputed from the graph's other inputs)."""
        client = self.client
        if client is not None:
            return client.scatter([obj], hash=False)[0]
        import dask

        return dask.delayed(obj, traverse=False, name=f"{name}-{uuid.uuid4().hex}")

    def compute(self, *graphs: Any, desc: str = "compute", log_every_s: float = 10.0) -> tuple[Any, ...]:
        """Compute Dask collections, with a progress bar on a terminal or a log line every
        ``log_every_s`` seconds otherwise (cron, CI, pipes)."""
        import dask

        client = self.client
        if client is None:
            with dask.config.set(scheduler=self.local_scheduler):
                if sys.stderr.isatty():
                    from dask.diagnostics import ProgressBar

                    with ProgressBar(out=sys.stderr):
                        return tuple(dask.compute(*graphs))
                return tuple(dask.compute(*graphs))
        with warnings.catch_warnings():
            # the graphs carry their tasks' inputs on purpose (seed weights, label volumes: a task
            # rerun elsewhere after a worker dies needs them), a few MB that distributed warns about
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            futures = client.compute(list(graphs))
        with client.as_current():  # progress/wait look up "the" client; it need not be the default
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
        return tuple(client.gather(futures))
