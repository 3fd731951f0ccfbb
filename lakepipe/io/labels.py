"""Atlas label tables: BIDS ``_dseg.txt`` (line k names label k) or TSV (index, name[, network]).

Network and hemisphere are derived from well-known naming schemes when the table has no such
column: Schaefer (``7Networks_LH_Vis_1``), Tian (``HIP-rh``), and ``<Atlas>_<Network>_<n>`` names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lakepipe.errors import InputError

_SCHAEFER = re.compile(r"^(?:7|17)Networks_(?P<hemi>LH|RH)_(?P<net>[A-Za-z]+)_")
_TIAN = re.compile(r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*-(?P<hemi>lh|rh)$")
_INDEX_COLS = ("index", "label", "value", "id", "label_index")
_NAME_COLS = ("name", "label_name", "region", "roi", "region_name")


def parse_network(name: str) -> tuple[str | None, str | None]:
    """(network, hemisphere) from a region name when the naming scheme is known."""
    m = _SCHAEFER.match(name)
    if m:
        return m["net"], m["hemi"][0]
    m = _TIAN.match(name)
    if m:
        return "Subcortex", m["hemi"][0].upper()
    return None, None


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a label file into a table with columns ``index``, ``name``, ``network``, ``hemisphere``."""
    path = Path(path)
    if not path.exists():
        raise InputError("label file not found", path)
    suffix = "".join(path.suffixes[-1:]).lower()
    try:
        if suffix == ".txt":
            names = [ln.strip() for ln in path.read_text().splitlines()]
            while names and not names[-1]:
                names.pop()
            if not names or any(not n for n in names):
                raise InputError("a _dseg.txt label file needs one non-empty name per line", path)
            if any(len(n.split()) > 1 and n.split()[0].isdigit() for n in names[:3]):
                raise InputError(
                    "looks like an 'index name' table; write it as a TSV with index/name columns", path
                )
            table = pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names})
        elif suffix in (".tsv", ".csv"):
            table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
            table.columns = [c.strip().lower() for c in table.columns]
            icol = next((c for c in _INDEX_COLS if c in table.columns), None)
            ncol = next((c for c in _NAME_COLS if c in table.columns), None)
            if icol is None or ncol is None:
                raise InputError(
                    f"label TSV needs an index column ({'/'.join(_INDEX_COLS)}) and a name column "
                    f"({'/'.join(_NAME_COLS)}); found {list(table.columns)}",
                    path,
                )
            table = table.rename(columns={icol: "index", ncol: "name"})
            try:
                table["index"] = table["index"].astype(int)
            except ValueError as exc:
                raise InputError("label indices are not integers", path) from exc
        else:
            raise InputError(
                f"unknown label-file format {suffix!r}: use a BIDS _dseg.txt (one name per line) or a "
                "TSV with index/name[/network] columns",
                path,
            )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse label file ({exc})", path) from exc
    if table["index"].duplicated().any() or (table["index"] <= 0).any():
        raise InputError("label indices must be unique positive integers (0 is background)", path)
    parsed = [parse_network(str(n)) for n in table["name"]]
    if "network" not in table.columns:
        table["network"] = [p[0] for p in parsed]
    if "hemisphere" not in table.columns:
        table["hemisphere"] = [p[1] for p in parsed]
    out = table[["index", "name", "network", "hemisphere"]].copy()
    out["name"] = out["name"].astype(str)
    return out.sort_values("index").reset_index(drop=True)


def check_labels_match(table: pd.DataFrame, volume_labels: np.ndarray, path) -> list[int]:
    """Every label in the volume must be named in the table; returns table labels absent from it."""
    present = set(np.unique(volume_labels).tolist()) - {0}
    named = set(table["index"].tolist())
    unnamed = sorted(present - named)
    if unnamed:
        raise InputError(
            f"labels do not match the atlas volume: {len(unnamed)} label value(s) in the volume have "
            f"no name (e.g. {unnamed[:5]}); the table names {len(named)} labels",
            path,
        )
    return sorted(named - present)
