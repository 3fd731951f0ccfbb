"""``export``: BIDS-derivative files (TSV/NIfTI + JSON sidecars) of outputs already in the lake.

The outputs are chosen by the same query as :func:`lakepipe.collect.collect`; each method writes
its own files (:meth:`lakepipe.methods.base.Method.export`), named with their space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lakepipe.collect import select_rows
from lakepipe.errors import NotFoundError
from lakepipe.lake import Lake
from lakepipe.registry import get_method


def export(
    lake: Lake,
    method: str,
    out_dir: str | Path,
    *,
    statistic: str | Sequence[str] | None = None,
    **query: Any,
) -> list[Path]:
    """Write the files of the published outputs of ``method`` matching ``query`` into ``out_dir``.

    ``statistic`` is one statistic, several, or ``None`` for every statistic the method has.
    """
    m = get_method(method)
    if isinstance(statistic, str):
        wanted = [statistic]
    else:
        wanted = list(statistic) if statistic else [s.name for s in m.statistics]
    frames = []
    for stat in wanted:
        try:
            frames.append(select_rows(lake, method, statistic=stat, **query))
        except NotFoundError:
            if isinstance(statistic, str):
                raise
    if not frames:
        raise NotFoundError(f"no {method} outputs match; see `lakepipe catalog ls`")
    rows = pd.concat(frames, ignore_index=True)
    return m.export(lake, rows, out_dir)
