"""Atlas stores (``atlases/<name>.zarr``): label volume, region table, space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lakepipe.errors import NotFoundError
from lakepipe.io import layout
from lakepipe.io.storage import exists, join, open_group, read_array
from lakepipe.io.stores.grids import grid_attrs, grid_from_attrs
from lakepipe.space import Grid


@dataclass(frozen=True)
class Atlas:
    """An atlas read from the lake: label volume, its grid, the region table and the space."""

    name: str
    labels: np.ndarray  #: int32 (i, j, k)
    grid: Grid
    table: pd.DataFrame  #: index, name, network, hemisphere
    space: str | None
    sha256: str

    @property
    def n_regions(self) -> int:
        return len(self.table)

    def dense_index(self) -> np.ndarray:
        """Map from label value to 1..N position in the table (0 = background/unnamed)."""
        lut = np.zeros(int(max(self.table["index"].max(), self.labels.max())) + 1, np.int32)
        lut[self.table["index"].to_numpy()] = np.arange(1, self.n_regions + 1, dtype=np.int32)
        return lut


def write_atlas(
    lake: str, name: str, labels: np.ndarray, grid: Grid, table: pd.DataFrame, space: str | None, meta: dict
) -> str:
    url = layout.atlas_store(lake, name)
    g = open_group(url, mode="w")
    g.create_array(
        "dseg", shape=labels.shape, chunks=(64, 64, 64), dtype="int32", dimension_names=["i", "j", "k"]
    )[:] = labels
    g.create_array("region", shape=(len(table),), dtype="int32", dimension_names=["region"])[:] = table[
        "index"
    ].to_numpy(np.int32)
    for col in ("name", "network", "hemisphere"):
        g.create_array(f"region_{col}", shape=(len(table),), dtype=str, dimension_names=["region"])[:] = (
            table[col].fillna("").astype(str).to_numpy()
        )
    g.attrs.update(
        {
            **meta,
            "space": space,
            "grid": grid_attrs(grid),
            "n_regions": len(table),
            "lakepipe_store": "atlas",
        }
    )
    return url


def read_atlas(lake: str, name: str) -> Atlas:
    url = layout.atlas_store(lake, name)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(
            f"unknown atlas '{name}': not in the lake (ingest it with `lakepipe ingest atlas`)"
        )
    g = open_group(url)
    attrs: dict[str, Any] = dict(g.attrs)
    table = pd.DataFrame(
        {
            "index": read_array(g, "region").astype(int),
            **{
                col: [str(v) or None for v in read_array(g, f"region_{col}")]
                for col in ("name", "network", "hemisphere")
            },
        }
    )
    table = table.replace({"": None})
    return Atlas(
        name,
        read_array(g, "dseg"),
        grid_from_attrs(attrs["grid"]),
        table,
        attrs.get("space"),
        attrs.get("sha256", ""),
    )
