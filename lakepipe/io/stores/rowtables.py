"""Tables of per-row facts kept beside a connectome's series (``connectomes/<name>.zarr/tables/<table>``).

Some sources know more about each stored row than its series: an HCP release says which task and run a
row is and when each condition's events happen (``runs`` and ``events`` tables of
:mod:`lakepipe.io.sources.hcp`). Ingestion appends each commit window's tables *before* the window's
rows are committed (:func:`append_row_tables`), so a committed row always has its facts; readers
(:func:`read_row_table`) keep only rows of committed subjects, and, for a subject whose facts were
appended more than once (a killed ingest rerun), the last append.

Layout: one Zarr group per table, one 1D array per column (text, float64 or int64), plus ``_append``
(the append number of each row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lakepipe.io.storage import get_array, get_group, open_group, read_array

TABLES = "tables"
SUBJECT = "subject"  #: the column naming each fact's store row (its subject id)
_APPEND = "_append"


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    return "str"


def append_row_tables(url: str, tables: Mapping[str, pd.DataFrame]) -> None:
    """Append ``tables`` (name -> rows with a ``subject`` column) to the connectome store ``url``."""
    if not tables:
        return
    root = open_group(url, mode="a")
    group = root.require_group(TABLES)
    for name, table in tables.items():
        if SUBJECT not in table.columns:
            raise ValueError(f"row table {name!r} needs a {SUBJECT!r} column")
        tg = group.require_group(name)
        attrs: dict[str, Any] = dict(tg.attrs)
        n_old = int(attrs.get("n_rows", 0))
        batch = int(attrs.get("n_appends", 0))
        columns: dict[str, Any] = dict(attrs.get("columns", {}))
        data = {c: table[c] for c in table.columns}
        data[_APPEND] = pd.Series(np.full(len(table), batch, np.int64))
        for col, values in data.items():
            kind = columns.setdefault(col, _kind(values))
            if col not in tg:
                tg.create_array(col, shape=(n_old,), chunks=(65536,), dtype=kind if kind != "str" else str)
            arr = get_array(tg, col)
            arr.resize((n_old + len(table),))
            if len(table):
                if kind == "str":
                    arr[n_old:] = values.fillna("").astype(str).to_numpy()
                else:
                    arr[n_old:] = values.to_numpy(np.dtype(kind))
        tg.attrs.update({"n_rows": n_old + len(table), "n_appends": batch + 1, "columns": columns})


def read_row_table(url: str, name: str, subjects: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The table ``name`` of the connectome store ``url`` (None when it has none), restricted to
    ``subjects`` (committed rows) and to the last append of each subject."""
    root = open_group(url)
    if TABLES not in root or name not in get_group(root, TABLES):
        return None
    tg = get_group(get_group(root, TABLES), name)
    attrs: dict[str, Any] = dict(tg.attrs)
    columns: dict[str, str] = dict(attrs.get("columns", {}))
    n = int(attrs.get("n_rows", 0))
    data = {}
    for col, kind in columns.items():
        values = read_array(tg, col)[:n]
        data[col] = values.astype(object).astype(str) if kind == "str" else values
    table = pd.DataFrame(data)
    if subjects is not None:
        table = table[table[SUBJECT].isin(set(subjects))]
    if len(table):
        last = table.groupby(SUBJECT)[_APPEND].transform("max")
        table = table[table[_APPEND] == last]
    return table.drop(columns=[_APPEND]).reset_index(drop=True)
