"""Where and as what a command runs: one :class:`Runtime` (a Dask client, started only when a graph
runs, or in-process) and one :class:`RunContext` (the catalog run record) per command or job."""

from lakepipe.runtime.cluster import IN_PROCESS, Runtime, default_workers, scheduler_address
from lakepipe.runtime.context import RunContext

__all__ = ["IN_PROCESS", "RunContext", "Runtime", "default_workers", "scheduler_address"]
