"""Parcel-level connectomes: per-subject ``.npy`` or TSV arrays (parcels x time) and a region table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lakepipe.errors import InputError
from lakepipe.io.labels import read_label_table
from lakepipe.io.sources.base import ConnectomeSource, SubjectRef, register_source


def _load_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return pd.read_csv(path, sep="\t", header=None).to_numpy(np.float32)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read parcel time series ({exc})", path) from exc


@register_source("parcels")
@dataclass
class ParcelSource(ConnectomeSource):
    """Parcel-level series: per-subject ``.npy``/``.tsv`` (parcels x time) plus a region table."""

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(p.name.endswith((".npy", ".tsv")) for p in root.iterdir())

    @classmethod
    def open(cls, root: Path, regions: str | Path | None = None, **options: object) -> ParcelSource:
        if options:
            raise InputError(f"parcel series take no {'/'.join(options)} option", root)
        table_path = Path(regions) if regions else root / "regions.tsv"
        if not table_path.exists():
            raise InputError("parcel time series need a region table (regions.tsv or --regions)", root)
        table = read_label_table(table_path)
        files = sorted(
            p for p in root.iterdir() if p.suffix in (".npy", ".tsv") and p.resolve() != table_path.resolve()
        )
        src = cls(root=root, kind="parcel", regions=table)
        for path in files:
            arr = _load_array(path)
            if arr.ndim != 2 or arr.shape[0] != len(table):
                raise InputError(
                    f"expected (parcels={len(table)}, time) as in the region table, got {arr.shape}", path
                )
            src.add_subject_file(path, int(arr.shape[1]))
        if not src.subjects:
            raise InputError("no parcel time series files", root)
        return src

    def read(self, ref: SubjectRef) -> np.ndarray:
        return _load_array(ref.path).T  # (time, parcel)
