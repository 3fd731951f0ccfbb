"""Network summaries of parcel-level outputs: mean per network and hemisphere, table and bar plot.

Works for anything with a ``region`` dimension whose coordinates carry the atlas's network labels
(``region_network``, ``region_hemisphere``): AFNM scores, FNM parcel summaries, collections of
either, a group mean. Networks come from the atlas's region table (a ``network`` column) or from
the region names when the naming scheme is known (Schaefer ``7Networks_LH_Vis_1``, 17 networks,
Seitzman, Tian subcortex), see :mod:`lakepipe.io.labels`.

Conventions: the mean per (network, hemisphere) is the plain mean over the regions of that network
and hemisphere (NaN regions ignored); with several seeds it is computed per seed first, and the
across-seed summary (:func:`summarize_seeds`) gives the mean, SD (ddof=1) and SEM of those seed
means. Regions without a network label are grouped as ``unassigned``; a missing hemisphere is
``n/a``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe.errors import InputError

UNASSIGNED = "unassigned"
NO_HEMISPHERE = "n/a"
_UNLABELLED = {"", "none", "nan", "n/a", "unassigned", "unknown", "unlabelled", "unlabeled"}
#: hemisphere display order
HEMISPHERE_ORDER = ("L", "R", "M", NO_HEMISPHERE)
_HEMI_COLOURS = {"L": "#4C72B0", "R": "#DD8452", "M": "#55A868", NO_HEMISPHERE: "#8C8C8C"}

SEED_COORDS = ("participant", "session", "label")


def clean_networks(values) -> np.ndarray:
    """Network labels as strings, every flavour of "no network" as :data:`UNASSIGNED`."""
    out = []
    for v in values:
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        out.append(UNASSIGNED if s.lower() in _UNLABELLED else s)
    return np.array(out, dtype=object)


def clean_hemispheres(values) -> np.ndarray:
    out = []
    for v in values:
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
        s = {"lh": "L", "left": "L", "rh": "R", "right": "R"}.get(s.lower(), s.upper() if len(s) == 1 else s)
        out.append(s or NO_HEMISPHERE)
    return np.array(out, dtype=object)


def network_order(networks) -> list[str]:
    """Networks in order of first appearance, ``unassigned`` last."""
    seen = list(dict.fromkeys(clean_networks(networks)))
    return [n for n in seen if n != UNASSIGNED] + ([UNASSIGNED] if UNASSIGNED in seen else [])


def region_sort_order(networks, hemispheres=None) -> np.ndarray:
    """Permutation putting regions in network order (see :func:`network_order`), then hemisphere
    (L, R, M, n/a), then their original order."""
    nets = clean_networks(networks)
    rank = {n: i for i, n in enumerate(network_order(nets))}
    hemis = clean_hemispheres(hemispheres if hemispheres is not None else [None] * len(nets))
    hrank = [HEMISPHERE_ORDER.index(h) if h in HEMISPHERE_ORDER else len(HEMISPHERE_ORDER) for h in hemis]
    return np.lexsort((np.arange(len(nets)), np.asarray(hrank), np.asarray([rank[n] for n in nets])))


def has_networks(da: xr.DataArray | xr.Dataset, dim: str = "region") -> bool:
    coord = f"{dim}_network"
    return coord in da.coords and any(n != UNASSIGNED for n in clean_networks(da[coord].values))


def _require_networks(da, dim: str = "region") -> None:
    if dim not in da.dims:
        raise InputError(
            f"a network summary needs a parcel-level output (a '{dim}' dimension); got dims {tuple(da.dims)}"
        )
    if not has_networks(da, dim):
        raise InputError(
            "the atlas of this output has no network labels (no network column in its region "
            "table and no known naming scheme such as Schaefer's '7Networks_LH_Vis_1')"
        )


def network_summary(da: xr.DataArray, *, by_hemisphere: bool = True) -> pd.DataFrame:
    """Mean per network (and hemisphere) of a parcel-level output.

    Parameters
    ----------
    da
        Values with a ``region`` dimension and ``region_network`` (``region_hemisphere``)
        coordinates; a ``seed`` dimension gives one summary per seed.
    by_hemisphere
        Split each network by hemisphere (default) or pool both.

    Returns
    -------
    pandas.DataFrame
        Columns ``[seed, participant, session, label,] network, [hemisphere,] n_regions, mean, sd``
        (``sd`` over the regions, ddof=1), networks in atlas order (unassigned last).
    """
    _require_networks(da)
    extra = [d for d in da.dims if d not in ("region", "seed")]
    if extra:
        raise InputError(f"network_summary: reduce the dimensions {extra} first")
    values = np.asarray(da.transpose(..., "region").values, dtype=np.float64)
    values = values.reshape(-1, da.sizes["region"])
    nets = clean_networks(da["region_network"].values)
    hemis = (
        clean_hemispheres(da["region_hemisphere"].values)
        if "region_hemisphere" in da.coords
        else np.full(nets.size, NO_HEMISPHERE, dtype=object)
    )
    order = network_order(nets)
    keys = ["network", "hemisphere"] if by_hemisphere else "network"
    groups = pd.DataFrame({"network": nets, "hemisphere": hemis}).groupby(keys, sort=False).indices
    present_hemis = [h for h in HEMISPHERE_ORDER if h in set(hemis)] + sorted(
        set(hemis) - set(HEMISPHERE_ORDER)
    )
    sorted_keys = sorted(
        groups,
        key=lambda k: (
            order.index(k[0] if by_hemisphere else k),
            present_hemis.index(k[1]) if by_hemisphere else 0,
        ),
    )
    seed_info = _seed_frame(da) if "seed" in da.dims else None
    rows = []
    for s in range(values.shape[0]):
        for key in sorted_keys:
            idx = groups[key]
            v = values[s, idx]
            v = v[np.isfinite(v)]
            row = {} if seed_info is None else seed_info.iloc[s].to_dict()
            row.update({"network": key[0] if by_hemisphere else key})
            if by_hemisphere:
                row["hemisphere"] = key[1]
            row.update(
                {
                    "n_regions": int(idx.size),
                    "mean": float(v.mean()) if v.size else np.nan,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else np.nan,
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def _seed_frame(da: xr.DataArray) -> pd.DataFrame:
    cols = {"seed": [str(s) for s in da["seed"].values]}
    for c in SEED_COORDS:
        if c in da.coords and da[c].dims == ("seed",):
            cols[c] = [str(v) for v in da[c].values]
    return pd.DataFrame(cols)


def summarize_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """Across-seed mean, SD and SEM of per-seed network means (identity for a single map)."""
    keys = [k for k in ("network", "hemisphere") if k in summary.columns]
    if "seed" not in summary.columns:
        out = summary[keys + ["n_regions", "mean"]].copy()
        out["n_seeds"], out["sd"], out["sem"] = 1, np.nan, np.nan
        return out[keys + ["n_regions", "n_seeds", "mean", "sd", "sem"]]
    g = summary.groupby(keys, sort=False)
    out = g.agg(
        n_regions=("n_regions", "first"), n_seeds=("mean", "count"), mean=("mean", "mean"), sd=("mean", "std")
    ).reset_index()
    out["sem"] = out["sd"] / np.sqrt(out["n_seeds"].clip(lower=1))
    return out


def plot_network_summary(
    data: xr.DataArray | pd.DataFrame,
    *,
    title: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
):
    """Bar plot of the mean per network and hemisphere (error bars: SEM across seeds when several).

    ``data`` is a parcel-level :class:`xarray.DataArray` (see :func:`network_summary`) or a table
    from :func:`network_summary` / :func:`summarize_seeds`.
    """
    from lakepipe.viz.figures import new_figure

    if isinstance(data, xr.DataArray):
        ylabel = ylabel or _value_label(data)
        table = summarize_seeds(network_summary(data))
    else:
        table = data if "n_seeds" in data.columns else summarize_seeds(data)
    if "hemisphere" not in table.columns:
        table = table.assign(hemisphere="both")
    nets = list(dict.fromkeys(table["network"]))
    hemis = list(dict.fromkeys(h for h in list(HEMISPHERE_ORDER) + ["both"] if h in set(table["hemisphere"])))
    hemis += sorted(set(table["hemisphere"]) - set(hemis))
    bar_width = 0.8 / max(len(hemis), 1)  # the bars of one network share 0.8 of its unit slot
    fig_width = min(12.0, max(6.0, 1.5 + 0.22 * len(nets) * max(len(hemis), 1)))
    fig = new_figure(figsize or (fig_width, 4.8), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(nets))
    for j, h in enumerate(hemis):
        sub = table[table["hemisphere"] == h].set_index("network")
        present = np.array([n in sub.index for n in nets])
        means = np.array([sub["mean"].get(n, np.nan) for n in nets], dtype=float)[present]
        errs = (
            np.array([sub["sem"].get(n, np.nan) for n in nets], dtype=float)[present]
            if "sem" in sub
            else None
        )
        if errs is not None and not np.isfinite(errs).any():
            errs = None
        ax.bar(
            x[present] + (j - (len(hemis) - 1) / 2) * bar_width,
            np.nan_to_num(means),
            bar_width,
            yerr=errs,
            label={"L": "left", "R": "right", "M": "midline", NO_HEMISPHERE: "n/a"}.get(h, h),
            color=_HEMI_COLOURS.get(h, "#8172B3"),
            edgecolor="white",
            linewidth=0.5,
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(nets, rotation=45, ha="right", fontsize=8 if len(nets) > 10 else 9)
    ax.set_xlim(-0.6, len(nets) - 0.4)
    ax.set_ylabel(ylabel or "mean over regions")
    n_seeds = int(table["n_seeds"].max()) if "n_seeds" in table else 1
    ax.set_title(
        title
        or (
            "mean per network and hemisphere"
            + (f" ({n_seeds} seeds, error bars: SEM)" if n_seeds > 1 else "")
        ),
        fontsize=10,
    )
    if len(hemis) > 1:
        ax.legend(title="hemisphere", fontsize=8, title_fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _value_label(da) -> str:
    stat = da.attrs.get("statistic") or getattr(da, "name", None) or "value"
    return f"{stat} (mean over regions)"
