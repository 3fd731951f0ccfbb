"""Precomputed connectivity matrices from files: ``.mat``, ``.npy`` plus labels, labelled TSV.

:func:`align_to_atlas` maps a matrix given in another region order (for example the published
1054-region GSP1000 matrix, which lists subcortical regions first) onto an atlas's order, by
region name or by label index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lakepipe.errors import InputError


@dataclass(frozen=True)
class LabelledMatrix:
    """A square matrix with the region names (or label indices, as strings) of its rows/columns."""

    values: np.ndarray
    regions: list[str]
    source: str


def _read_names(path: Path) -> list[str]:
    if not path.exists():
        raise InputError("region label file not found", path)
    if path.suffix.lower() in (".tsv", ".csv"):
        from lakepipe.io.labels import read_label_table

        return read_label_table(path)["name"].tolist()
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def load_matrix(
    path: str | Path, *, variable: str | None = None, labels: str | Path | None = None
) -> LabelledMatrix:
    """Read a square matrix file.

    Parameters
    ----------
    path
        ``.mat`` (MATLAB, ``variable`` names the array when the file has several), ``.npy``
        (needs ``labels``), or ``.tsv`` with region labels as index and header.
    labels
        Region names in the matrix's order (one per line, or a label TSV); for ``.mat``/``.npy``.
        Without it, rows are taken to follow the atlas's label order 1..N.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("matrix file not found", path)
    suffix = path.suffix.lower()
    names: list[str] | None = None
    try:
        if suffix == ".mat":
            from scipy.io import loadmat

            content = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
            arrays = {k: v for k, v in content.items() if isinstance(v, np.ndarray) and v.ndim == 2}
            if variable:
                if variable not in arrays:
                    raise InputError(f"no 2D variable {variable!r} (has {sorted(arrays)})", path)
                values = arrays[variable]
            elif len(arrays) == 1:
                values = next(iter(arrays.values()))
            else:
                raise InputError(
                    f"several matrices {sorted(arrays)}: choose one with --matrix-variable", path
                )
        elif suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix in (".tsv", ".csv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", index_col=0)
            values, names = df.to_numpy(float), [str(c) for c in df.columns]
            if [str(i) for i in df.index] != names:
                raise InputError("TSV matrix rows and columns name different regions", path)
        else:
            raise InputError(f"unknown matrix format {suffix!r} (use .mat, .npy or .tsv)", path)
    except (ValueError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read matrix ({exc})", path) from exc
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise InputError(f"matrix must be square, got {values.shape}", path)
    if not np.all(np.isfinite(values)):
        raise InputError("matrix contains NaN or infinite values", path)
    if labels is not None:
        names = _read_names(Path(labels))
    if names is None:
        names = [str(i) for i in range(1, values.shape[0] + 1)]
    if len(names) != values.shape[0]:
        raise InputError(f"{len(names)} region labels for a {values.shape[0]}-region matrix", path)
    return LabelledMatrix(values, names, str(path))


def align_to_atlas(
    matrix: LabelledMatrix, table: pd.DataFrame, order: list[str] | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Reorder ``matrix`` onto the atlas table order.

    Regions are matched by name, else by label index (``"17"`` matches index 17). ``order``
    overrides the matrix's own region list (names or indices in matrix order). Returns the
    matrix restricted to atlas regions it covers, and that part of the table; atlas regions
    missing from the matrix are dropped (and should be reported by the caller).
    """
    names = order if order is not None else matrix.regions
    if len(names) != matrix.values.shape[0]:
        raise InputError(
            f"region order lists {len(names)} regions, matrix has {matrix.values.shape[0]}", matrix.source
        )
    pos = {str(n): i for i, n in enumerate(names)}
    rows, keep = [], []
    for k, row in enumerate(table.itertuples()):
        i = pos.get(str(row.name), pos.get(str(row.index)))
        if i is not None:
            rows.append(i)
            keep.append(k)
    if not rows:
        raise InputError("no region of the matrix matches the atlas (by name or label index)", matrix.source)
    rows_arr = np.asarray(rows)
    return matrix.values[np.ix_(rows_arr, rows_arr)], table.iloc[keep].reset_index(drop=True)
