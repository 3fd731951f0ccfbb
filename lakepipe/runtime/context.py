"""One run of a command or job: its catalog run record, its runtime, and publishing under it.

The run record is written when the run first publishes (a command refused on bad input before it
published anything leaves nothing in the catalog), or at once with :meth:`RunContext.start` (a job
records every run, even one with nothing to do, so scheduled runs can be monitored). Every output
published in the run points to the record, which ends as ``finished``, ``failed`` or
``interrupted`` with the counts of outputs published and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lakepipe.catalog import Catalog, OutputRecord, RegisterResult
from lakepipe.runtime.cluster import Runtime

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """A command or job in progress.

    Attributes
    ----------
    catalog
        The lake's catalog.
    command
        The command line (or job) as recorded.
    params
        Its parameters as recorded (JSON-able).
    runtime
        Where its graphs run (one cluster at most, started on first use).
    run_id
        The catalog run id, once the run has published something.
    """

    catalog: Catalog
    command: str
    params: dict[str, Any]
    runtime: Runtime
    run_id: str | None = None
    published: int = 0
    skipped: int = 0
    replaced: int = 0
    finished: bool = field(default=False, repr=False)

    def publish(self, records: Iterable[OutputRecord], *, replace: bool = False) -> RegisterResult:
        """Register ``records`` (their data are written) in one transaction, attributed to this run.

        ``replace=True`` makes them replace outputs already registered under the same keys (a
        recomputation), in the same transaction; otherwise those are left as they are and counted
        as skipped.
        """
        recs = list(records)
        if not recs:
            return RegisterResult(0, 0)
        self.start()
        result = self.catalog.register(recs, run_id=self.run_id, replace=replace)
        self.published += result.inserted
        self.skipped += result.skipped
        self.replaced += result.replaced
        return result

    def start(self) -> str:
        """Write the run record now (it is otherwise written at the first publish); returns its id."""
        if self.run_id is None:
            self.run_id = self.catalog.start_run(self.command, self.params)
        return self.run_id

    def count_skipped(self, n: int) -> None:
        """Count outputs a method found already published and did not recompute."""
        self.skipped += int(n)

    def finish(self, status: str = "finished") -> None:
        """Close the run record (if one was written) with ``status`` and the counts."""
        if self.finished:
            return
        self.finished = True
        if self.run_id is not None:
            self.catalog.finish_run(self.run_id, self.published + self.replaced, self.skipped, status=status)
