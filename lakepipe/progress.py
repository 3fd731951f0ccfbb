"""Progress on long work: a bar on a terminal, periodic log lines otherwise (CI, cron, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("lakepipe.progress")


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", every_s: float = 10.0
) -> Iterator[T]:
    """Iterate ``items`` showing a tqdm bar on a terminal, or a log line every ``every_s`` seconds."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit="it", leave=False)
        return
    start = last = time.monotonic()
    n = 0
    for n, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            rate = n / max(now - start, 1e-9)
            log.info("%s: %d/%s done (%.1f/s)", desc, n, total if total is not None else "?", rate)
    if n and time.monotonic() - start >= every_s:
        log.info("%s: %d done in %.1f s", desc, n, time.monotonic() - start)
