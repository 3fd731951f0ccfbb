"""The group FC matrix, ordered by network, and its network block means.

Regions are put in network order (networks by first appearance in the atlas, ``unassigned`` last;
within a network left, right, midline, then the atlas order), network boundaries are drawn as
lines, each network is named on both axes next to a colour strip, and the colour scale is
symmetric around 0 (``vmax`` defaults to the largest absolute off-diagonal value, so the
diagonal of ``fcgroupr``, all ones, does not set the scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.colors import ListedColormap

from lakepipe.errors import InputError
from lakepipe.viz.figures import new_figure
from lakepipe.viz.networks import clean_networks, network_order, region_sort_order

_STAT_LABELS = {"fcgroupz": "mean Fisher z", "fcgroupr": "r = tanh(mean z)"}


def fc_matrix(fc: xr.Dataset | xr.DataArray, statistic: str | None = None) -> xr.DataArray:
    """The (source_region, region) matrix of a parcellate derivative (``fcgroupz`` by default)."""
    if isinstance(fc, xr.Dataset):
        statistic = statistic or "fcgroupz"
        if statistic not in fc:
            raise InputError(f"no {statistic!r} in this dataset (has {list(fc.data_vars)})")
        da = fc[statistic]
    else:
        da = fc
    if da.ndim != 2 or "region" not in da.dims:
        raise InputError(f"an FC matrix needs dims (source_region, region); got {da.dims}")
    row = [d for d in da.dims if d != "region"][0]
    return da.transpose(row, "region")


def network_layout(da: xr.DataArray) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Region permutation in network order and the (network, start, stop) blocks of that order."""
    nets = clean_networks(
        da["region_network"].values if "region_network" in da.coords else [None] * da.sizes["region"]
    )
    hemis = da["region_hemisphere"].values if "region_hemisphere" in da.coords else None
    order = region_sort_order(nets, hemis)
    sorted_nets = nets[order]
    blocks = []
    start = 0
    for i in range(1, len(sorted_nets) + 1):
        if i == len(sorted_nets) or sorted_nets[i] != sorted_nets[start]:
            blocks.append((str(sorted_nets[start]), start, i))
            start = i
    return order, blocks


def symmetric_vmax(values: np.ndarray, exclude_diagonal: bool = True) -> float:
    v = np.array(values, dtype=np.float64)
    if exclude_diagonal and v.ndim == 2 and v.shape[0] == v.shape[1]:
        np.fill_diagonal(v, np.nan)
    v = np.abs(v[np.isfinite(v)])
    vmax = float(v.max()) if v.size else 1.0
    return vmax if vmax > 0 else 1.0


def plot_fc_matrix(
    fc: xr.Dataset | xr.DataArray,
    statistic: str | None = None,
    *,
    vmax: float | None = None,
    cmap: str = "RdBu_r",
    title: str | None = None,
    figsize: tuple[float, float] = (9.0, 8.0),
    dpi: int = 100,
    network_labels: bool = True,
):
    """Group FC matrix ordered by network, boundaries and names drawn, symmetric colour scale.

    Parameters
    ----------
    fc
        A parcellate derivative (:class:`xarray.Dataset`, with ``statistic`` choosing ``fcgroupz``
        or ``fcgroupr``) or a (source_region, region) :class:`xarray.DataArray` with
        ``region_network`` coordinates.
    vmax
        Colour scale limit; the scale is ``[-vmax, vmax]``.
    """
    da = fc_matrix(fc, statistic)
    stat = statistic or da.name or da.attrs.get("statistic") or "FC"
    values = np.asarray(da.values, dtype=np.float64)
    order, blocks = network_layout(da)
    m = values[np.ix_(order, order)]
    vmax = float(vmax) if vmax else symmetric_vmax(m)
    n = m.shape[0]
    has_nets = network_labels and not (len(blocks) == 1 and blocks[0][0] == "unassigned")

    fig = new_figure(figsize, dpi=dpi)
    strip = 0.018 if has_nets else 0.0
    left, bottom, size = 0.17 if has_nets else 0.08, 0.04, 0.66 if has_nets else 0.75
    ax = fig.add_axes((left + strip, bottom, size, size * figsize[0] / figsize[1]))
    im = ax.imshow(m, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if has_nets:
        for _, start, _ in blocks[1:]:
            ax.axhline(start - 0.5, color="black", linewidth=0.6)
            ax.axvline(start - 0.5, color="black", linewidth=0.6)
        _network_strips(fig, ax, blocks, n, strip)
    cax = fig.add_axes((ax.get_position().x1 + 0.02, ax.get_position().y0, 0.02, ax.get_position().height))
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(_STAT_LABELS.get(str(stat), str(stat)))
    n_subj = da.attrs.get("n_subjects")
    default = f"group FC ({stat}), {n} regions" + (f", {n_subj} subjects" if n_subj else "")
    fig.suptitle(title or default, fontsize=11, x=0.02, y=0.985, ha="left")
    return fig


def _network_strips(fig, ax, blocks, n, strip) -> None:
    """Colour strip and network name per block, left of and above the matrix."""
    # tab20 is a ListedColormap of RGB triples; matplotlib's stubs type registry entries as Colormap
    colours = colormaps["tab20"].colors  # type: ignore[attr-defined]
    codes = np.concatenate([np.full(stop - start, k) for k, (_, start, stop) in enumerate(blocks)])
    cmap = ListedColormap([colours[k % len(colours)] for k in range(len(blocks))])
    pos = ax.get_position()
    left = fig.add_axes([pos.x0 - strip, pos.y0, strip * 0.8, pos.height])
    left.imshow(
        codes[:, None], cmap=cmap, aspect="auto", interpolation="nearest", vmin=-0.5, vmax=len(blocks) - 0.5
    )
    top = fig.add_axes([pos.x0, pos.y1 + strip * 0.2, pos.width, strip * 0.8])
    top.imshow(
        codes[None, :], cmap=cmap, aspect="auto", interpolation="nearest", vmin=-0.5, vmax=len(blocks) - 0.5
    )
    fontsize = 8 if len(blocks) <= 12 else 6.5
    mids = [(start + stop - 1) / 2 for _, start, stop in blocks]
    names = [name for name, _, _ in blocks]
    left.set_yticks(mids)
    left.set_yticklabels(names, fontsize=fontsize)
    left.set_xticks([])
    top.set_xticks(mids)
    top.set_xticklabels(names, fontsize=fontsize, rotation=60, ha="left")
    top.xaxis.tick_top()
    top.set_yticks([])
    for a in (left, top):
        a.tick_params(length=0, pad=2)
        for s in a.spines.values():
            s.set_visible(False)


def network_block_means(
    fc: xr.Dataset | xr.DataArray, statistic: str | None = None, include_diagonal: bool = False
) -> pd.DataFrame:
    """Mean connectivity between (and within) networks: a networks x networks table.

    Within-network cells average the off-diagonal region pairs (the diagonal of ``fcgroupz`` is 0
    and of ``fcgroupr`` 1 by definition) unless ``include_diagonal``.
    """
    da = fc_matrix(fc, statistic)
    values = np.asarray(da.values, dtype=np.float64).copy()
    if not include_diagonal and values.shape[0] == values.shape[1]:
        np.fill_diagonal(values, np.nan)
    nets = clean_networks(
        da["region_network"].values if "region_network" in da.coords else [None] * da.sizes["region"]
    )
    order = network_order(nets)
    out = pd.DataFrame(index=pd.Index(order, name="network"), columns=order, dtype=float)
    for a in order:
        ia = nets == a
        for b in order:
            block = values[np.ix_(ia, nets == b)]
            block = block[np.isfinite(block)]
            out.loc[a, b] = block.mean() if block.size else np.nan
    return out


def plot_network_blocks(
    table: pd.DataFrame,
    *,
    title: str | None = None,
    label: str = "mean FC",
    dpi: int = 100,
    figsize: tuple[float, float] | None = None,
):
    """Heat map of :func:`network_block_means` with the values written in the cells."""
    k = len(table)
    fig = new_figure(figsize or (max(5.0, 0.45 * k + 3), max(4.2, 0.4 * k + 2.2)), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    v = table.to_numpy(float)
    vmax = symmetric_vmax(v, exclude_diagonal=False)
    im = ax.imshow(v, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_xticks(range(k))
    ax.set_xticklabels(table.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k))
    ax.set_yticklabels(table.index, fontsize=7)
    if k <= 18:
        for i in range(k):
            for j in range(k):
                if np.isfinite(v[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{v[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=5.5,
                        color="white" if abs(v[i, j]) > 0.6 * vmax else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(label)
    ax.set_title(title or "network block means", fontsize=10)
    fig.tight_layout()
    return fig
