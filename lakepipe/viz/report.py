"""A self-contained HTML page per run: figures, tables and provenance, readable offline.

A *run* is one derivative store (what one ``parcellate``, ``run afnm`` or ``run fnm`` call wrote);
it is found through the catalog (:func:`select_run`). The page embeds every figure as a base64 PNG
``data:`` URI, its CSS and its one small script inline, and declares a Content-Security-Policy
that forbids loading anything from elsewhere, so it opens the same from a laptop, an archive or an
e-mail attachment. When the page has loaded, the script sets ``data-images`` (the number of
``<img>`` elements) and ``data-loaded`` (how many decoded, ``naturalWidth > 0``) on ``<body>``,
which the browser test reads back.

Contents per method:

- ``parcellate``: the group FC matrix by network, network block means (figure and table), the
  strongest region pairs;
- ``afnm``: the group mean score painted onto the atlas (with ``surface``, also drawn on the
  inflated fsaverage5 cortex, :mod:`lakepipe.viz.surface`: one parcel per vertex), one map per
  seed (the first ``max_seeds``), network summary (bar plot and table), the seeds and their top
  regions;
- ``fnm``: the group mean map (slices; with ``surface``, also on the cortex) and one map per seed
  (spheres marked), region assignment of the group mean (or single) map (threshold:
  ``threshold``, else the 99th percentile of ``|value|``; clusters of 10 voxels or more), a
  network summary when parcel summaries were computed;
- always: the run's catalog rows, its parameters and the store's attributes.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.collect import select_rows
from lakepipe.errors import InputError, NotFoundError
from lakepipe.io.bidsout import json_default
from lakepipe.io.storage import public_url
from lakepipe.lake import Lake
from lakepipe.registry import get_method
from lakepipe.viz.figures import png_data_uri
from lakepipe.viz.select import open_store

log = logging.getLogger(__name__)

REPORT_DPI = 72
#: smallest cluster listed in a report's region assignment
MIN_CLUSTER_VOXELS = 10

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;
background:#fff}
header{background:#16324f;color:#fff;padding:18px 28px}header h1{margin:0 0 4px 0;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}
main{padding:8px 28px 40px 28px;max-width:1180px}
h2{border-bottom:2px solid #16324f;padding-bottom:4px;margin-top:32px;font-size:18px}
h3{font-size:15px;margin:20px 0 6px 0}
figure{margin:12px 0 20px 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:12px;color:#555;margin-top:4px}
table.tbl{border-collapse:collapse;font-size:12px;margin:6px 0 14px 0}
table.tbl th,table.tbl td{border:1px solid #d5d5d5;padding:3px 7px;text-align:left;
font-variant-numeric:tabular-nums}table.tbl th{background:#eef2f6}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:3px 16px;font-size:13px}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:10px;font-size:11px;overflow:auto;max-height:420px}
p.note{font-size:12px;color:#555}div.tw{overflow-x:auto;max-width:100%}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-loaded', String(ok));
});
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


@dataclass
class Report:
    """An HTML page under construction: a title and an ordered list of sections."""

    title: str
    subtitle: str = ""
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    n_figures: int = 0

    def section(self, title: str) -> list[str]:
        body: list[str] = []
        self.sections.append((title, body))
        return body

    def figure(self, body: list[str], fig, caption: str, dpi: int = REPORT_DPI) -> None:
        uri = png_data_uri(fig, dpi=dpi)
        self.n_figures += 1
        body.append(
            f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>Figure {self.n_figures}. {html.escape(caption)}</figcaption></figure>"
        )

    def html(self) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>",
            "<body>",
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p></header>",
            "<main>",
        ]
        for title, body in self.sections:
            parts.append(f"<section><h2>{html.escape(title)}</h2>")
            parts.extend(body)
            parts.append("</section>")
        parts += ["</main>", f"<script>{_SCRIPT}</script>", "</body></html>"]
        return "\n".join(parts)


def table_html(df: pd.DataFrame, max_rows: int = 40, index: bool = False, digits: int = 4) -> str:
    """An escaped HTML table (first ``max_rows`` rows, with a note when cut)."""
    shown = df.head(max_rows)
    out = (
        '<div class="tw">'
        + shown.to_html(
            index=index,
            border=0,
            classes="tbl",
            na_rep="n/a",
            escape=True,
            float_format=lambda v: f"{v:.{digits}g}",
        )
        + "</div>"
    )
    if len(df) > max_rows:
        out += f'<p class="note">first {max_rows} of {len(df)} rows</p>'
    return out


def facts_html(facts: dict) -> str:
    items = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(_fmt(v))}</dd>"
        for k, v in facts.items()
        if v is not None
    )
    return f'<dl class="facts">{items}</dl>'


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def pre_json(obj) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2, sort_keys=True, default=json_default))}</pre>"


# --------------------------------------------------------------------------------------- selection


def select_run(
    lake: Lake,
    method: str,
    *,
    store: str | None = None,
    run: str | None = None,
    atlas: str | None = None,
    connectome: str | None = None,
    cohort: str | None = None,
    statistic: str | None = None,
    label: str | None = None,
    params: dict | None = None,
) -> tuple[str, pd.DataFrame]:
    """The store URI of one run of ``method`` and its catalog rows.

    ``store`` names the derivative store; ``run`` a recorded command's run id (``lakepipe catalog``
    runs; it must have written one ``method`` store); otherwise the newest store matching the filters.
    """
    get_method(method)  # an unknown method is an InputError listing the known ones
    if run is not None:
        by_run = lake.catalog.query(method=method, run_id=run)
        stores = sorted(by_run["store_uri"].unique())
        if not stores:
            raise NotFoundError(f"run {run!r} published no {method} output")
        if store is None and len(stores) > 1:
            raise InputError(
                f"run {run!r} wrote {len(stores)} {method} stores; choose one with --store: {stores}"
            )
        store = store or stores[0]
    if store is not None:
        rows = lake.catalog.query(method=method, store_uri=store)
        if rows.empty:
            raise NotFoundError(
                f"no published {method} output in store {store!r} (see `lakepipe catalog ls`)"
            )
        for col, value in (
            ("statistic", statistic),
            ("label", label),
            ("atlas", atlas),
            ("cohort", cohort),
            ("connectome", connectome),
        ):
            if value:
                rows = rows[rows[col] == value]
        if rows.empty:
            raise NotFoundError(f"no {method} output in store {store!r} matches the filters")
        return store, rows.reset_index(drop=True)
    rows = select_rows(
        lake,
        method,
        atlas=atlas if method != "fnm" else None,
        connectome=connectome,
        cohort=cohort,
        statistic=statistic,
        label=label,
        params=params,
    )
    newest = rows.groupby("store_uri")["created"].max().sort_values()
    uri = str(newest.index[-1])
    if len(newest) > 1:
        log.info(
            "report: %d %s runs match; reporting the newest (%s); pick another with --store",
            len(newest),
            method,
            uri,
        )
    return uri, rows[rows["store_uri"] == uri].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ report


def build_report(
    lake: Lake,
    method: str,
    *,
    store: str | None = None,
    run: str | None = None,
    atlas: str | None = None,
    connectome: str | None = None,
    cohort: str | None = None,
    statistic: str | None = None,
    label: str | None = None,
    params: dict | None = None,
    threshold: float | str | None = None,
    max_seeds: int = 4,
    surface: bool = False,
) -> str:
    """The HTML report of one run (see the module notes); returns the page as a string.

    ``surface`` adds the cortical surface figures of AFNM and FNM runs (a few seconds each)."""
    uri, rows = select_run(
        lake,
        method,
        store=store,
        run=run,
        atlas=atlas,
        connectome=connectome,
        cohort=cohort,
        statistic=statistic,
        label=label,
        params=params,
    )
    ds = open_store(lake, uri)
    created = rows["created"].max()
    rep = Report(
        title=f"lakepipe {method} report: {Path(uri).stem}",
        subtitle=f"lake {public_url(lake.url)} · store {uri} · "
        f"created {created:%Y-%m-%d %H:%M UTC} · "
        f"report made {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} with lakepipe "
        f"{__version__}",
    )
    if method == "parcellate":
        _parcellate_sections(rep, ds.load())
    elif method == "afnm":
        _afnm_sections(rep, lake, ds, rows, threshold, max_seeds, surface)
    elif method in STATS_METHODS:
        _stats_sections(rep, lake, ds.load(), threshold)
    else:
        _fnm_sections(rep, lake, ds, rows, statistic, threshold, max_seeds, surface)
    _provenance_section(rep, lake, ds, rows)
    return rep.html()


def write_report(lake: Lake, method: str, out: str | Path, **kwargs) -> Path:
    """:func:`build_report` written to ``out`` (UTF-8)."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"the report is an HTML page: name it *.html, not {out.name!r}")
    page = build_report(lake, method, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _parcellate_sections(rep: Report, ds: xr.Dataset) -> None:
    from lakepipe.viz.matrices import network_block_means, plot_fc_matrix, plot_network_blocks
    from lakepipe.viz.networks import has_networks

    p = ds.attrs.get("parameters", {})
    body = rep.section("Summary")
    body.append(
        facts_html(
            {
                "method": "parcellate (group functional connectivity)",
                "connectome": p.get("connectome"),
                "atlas": p.get("atlas"),
                "subjects": ds.attrs.get("n_subjects"),
                "regions": ds.sizes["region"],
                "dropped regions": ds.attrs.get("dropped_regions"),
                "definition": (ds.attrs.get("conventions") or {}).get("fcgroupz"),
            }
        )
    )
    body = rep.section("Group FC matrix")
    rep.figure(
        body,
        plot_fc_matrix(ds, "fcgroupz"),
        dpi=90,
        caption="fcgroupz (mean Fisher z over subjects), regions ordered by network; lines mark "
        "network boundaries; colour scale symmetric around 0.",
    )
    if has_networks(ds):
        blocks = network_block_means(ds, "fcgroupz")
        body = rep.section("Network block means")
        rep.figure(
            body,
            plot_network_blocks(blocks, label="mean Fisher z"),
            "Mean fcgroupz between and within networks (within: off-diagonal pairs only).",
        )
        body.append(table_html(blocks.round(4).reset_index(), max_rows=len(blocks)))
    body = rep.section("Strongest region pairs")
    body.append(table_html(strongest_pairs(ds), max_rows=20))


#: the group statistics (``lakepipe stats``): one result per store
STATS_METHODS = ("sensitivity", "specificity", "conjunction", "symptom", "predict")


def _stats_sections(rep: Report, lake: Lake, ds: xr.Dataset, threshold) -> None:
    """A group test result: what was tested on which maps, its figure(s), a summary of every
    statistic, and the maps it used (participants, cohorts, catalog output ids)."""
    from lakepipe.viz.stats import DEFAULT_VIEW, plot_prediction, plot_result

    method = str(ds.attrs.get("method"))
    p, inputs = ds.attrs.get("parameters", {}), ds.attrs.get("inputs", {})
    body = rep.section("Summary")
    facts = {"test": method, **{k: v for k, v in p.items() if v not in (None, [], ())}}
    facts.update({f"inputs: {k}": v for k, v in inputs.items() if not isinstance(v, (list, dict))})
    for key in ("permutations", "null"):
        if isinstance(ds.attrs.get(key), dict):
            facts.update(
                {f"{key}: {k}": v for k, v in ds.attrs[key].items() if not isinstance(v, (list, dict))}
            )
    body.append(facts_html(facts))
    atlas_name = ds.attrs.get("atlas") or p.get("atlas")
    atlas = lake.read_atlas(str(atlas_name)) if "region" in ds.dims and atlas_name else None
    body = rep.section("Result")
    if method == "predict":
        rep.figure(
            body, plot_prediction(ds), "Each held-out patient's prediction against the observed score."
        )
    shown, masked = DEFAULT_VIEW.get(method, ("", None))
    if shown in ds:
        rep.figure(
            body,
            plot_result(ds, shown, atlas=atlas, alpha=0.05, threshold=threshold),
            f"{shown}" + (f", only where {masked} < 0.05" if masked else "") + ".",
        )
    feature_dim = "region" if "region" in ds.dims else "voxel"
    summary = []
    for name, da in ds.data_vars.items():
        if da.dims != (feature_dim,):
            continue
        v = np.asarray(da.values, np.float64)
        row = {
            "statistic": name,
            "min": np.nanmin(v),
            "max": np.nanmax(v),
            "nonzero": int(np.count_nonzero(v)),
        }
        if name == "p" or str(name).startswith(("p_", "q_")) or str(name).endswith("_p"):  # p and q values
            row["below 0.05"] = int(np.sum(v < 0.05))
        summary.append(row)
    if summary:
        body.append(table_html(pd.DataFrame(summary), max_rows=len(summary)))
    scalars = {n: float(da.values) for n, da in ds.data_vars.items() if da.ndim == 0}
    if scalars:
        body.append(facts_html(scalars))
    body = rep.section("Maps tested")
    cols = [c for c in ("participant", "cohort", "session", "label", "group", "output_id") if c in ds.coords]
    if "map" in ds.dims and cols:
        body.append(table_html(pd.DataFrame({c: ds[c].values for c in cols}), max_rows=500))


def strongest_pairs(ds: xr.Dataset, statistic: str = "fcgroupz", n: int = 20) -> pd.DataFrame:
    """The ``n`` region pairs with the largest ``|value|`` (upper triangle)."""
    m = np.asarray(ds[statistic].values, np.float64)
    iu = np.triu_indices_from(m, k=1)
    vals = m[iu]
    top = np.argsort(-np.abs(np.nan_to_num(vals)), kind="stable")[:n]
    names, nets = ds["region_name"].values, ds["region_network"].values
    a, b = iu[0][top], iu[1][top]
    return pd.DataFrame(
        {
            "region_a": names[a],
            "network_a": nets[a],
            "region_b": names[b],
            "network_b": nets[b],
            statistic: vals[top],
        }
    )


def _seed_table(ds: xr.Dataset, extra: dict[str, np.ndarray | list[str]]) -> pd.DataFrame:
    table = pd.DataFrame({"seed": [str(s) for s in ds["seed"].values]})
    for c in ("participant", "session", "label"):
        if c in ds.coords:
            table[c] = [str(v) for v in ds[c].values]
    for k, v in extra.items():
        table[k] = v
    return table


def _top_regions(values: np.ndarray, names: np.ndarray, k: int = 3) -> list[str]:
    out = []
    for row in np.atleast_2d(values):
        if not np.any(np.nan_to_num(row)):
            out.append("none (all zero)")
            continue
        order = np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable")[:k]
        out.append("; ".join(f"{names[j]} ({row[j]:.3g})" for j in order))
    return out


def _network_section(rep: Report, da: xr.DataArray, what: str) -> None:
    from lakepipe.viz.networks import has_networks, network_summary, plot_network_summary, summarize_seeds

    if not has_networks(da):
        return
    body = rep.section("Network summary")
    table = summarize_seeds(network_summary(da))
    several = da.sizes.get("seed", 1) > 1
    rep.figure(
        body,
        plot_network_summary(table, ylabel=f"{what} (mean over regions)"),
        f"Mean {what} per network and hemisphere"
        + (", mean over seeds of the per-seed means; error bars: SEM across seeds." if several else "."),
    )
    body.append(table_html(table, max_rows=200))


def _surface_section(rep: Report, body: list[str], space: str | None, draw, caption: str) -> None:
    """A cortical surface figure (fsaverage5; MNI spaces only: fsaverage's coordinates are MNI305)."""
    from lakepipe.space import MNI_SPACES

    if space and space not in MNI_SPACES:
        body.append(f'<p class="note">no surface view: space {html.escape(space)} is not an MNI space</p>')
        return
    try:
        fig = draw()
    except InputError as exc:  # e.g. a map that is zero on the whole cortex
        body.append(f'<p class="note">no surface view: {html.escape(str(exc))}</p>')
        return
    rep.figure(body, fig, caption)


def _afnm_sections(
    rep: Report,
    lake: Lake,
    ds: xr.Dataset,
    rows: pd.DataFrame,
    threshold,
    max_seeds: int,
    surface: bool = False,
) -> None:
    from lakepipe.viz.maps import group_mean, plot_afnm, plot_parcel_map

    ds = ds.load()
    atlas = lake.read_atlas(ds.attrs["atlas"])
    p = ds.attrs.get("parameters", {})
    body = rep.section("Summary")
    empty = int((ds["n_touched"].values == 0).sum()) if "n_touched" in ds else None
    body.append(
        facts_html(
            {
                "method": "AFNM (score = m @ C)",
                "cohort": ds.attrs.get("cohort"),
                "atlas": atlas.name,
                "lesion weighting": p.get("weighting"),
                "matrix": p.get("matrix"),
                "seeds": ds.sizes["seed"],
                "lesions touching no region": empty,
                "definition": ds.attrs.get("description"),
            }
        )
    )
    score = ds["score"]
    mean = group_mean(score)
    body = rep.section("Group mean")
    rep.figure(
        body,
        plot_parcel_map(
            mean, atlas, threshold=threshold, title=f"mean AFNM score over {ds.sizes['seed']} lesion(s)"
        ),
        f"Mean AFNM score over the run's {ds.sizes['seed']} lesions, painted onto {atlas.name}"
        + (f"; |score| <= {threshold} hidden." if threshold is not None else "."),
    )
    if surface:
        from lakepipe.viz.maps import parcel_image, to_image
        from lakepipe.viz.surface import plot_parcel_surface

        _surface_section(
            rep,
            body,
            atlas.space,
            lambda: plot_parcel_surface(
                parcel_image(mean, atlas),
                labels_img=to_image(atlas.labels, atlas.grid.affine),
                threshold=threshold,
                title=f"mean AFNM score over {ds.sizes['seed']} lesion(s), fsaverage5",
            ),
            "The same mean on the inflated fsaverage5 cortex (left/right, lateral/medial): each vertex "
            "takes the score of the one parcel most of its samples across the cortical ribbon fall in.",
        )
    names = ds["region_name"].values
    top = pd.DataFrame(
        {
            "region": names,
            "network": ds["region_network"].values,
            "hemisphere": ds["region_hemisphere"].values,
            "mean score": mean.values,
        }
    )
    top = top.sort_values("mean score", ascending=False, kind="stable")
    body.append("<h3>Regions with the highest mean score</h3>" + table_html(top, max_rows=15))
    body = rep.section("Seeds")
    extra: dict[str, np.ndarray | list[str]] = {
        "touched regions": ds["n_touched"].values,
        "lesion voxels": ds["lesion_voxels"].values,
        "top regions (score)": _top_regions(score.values, names),
    }
    body.append(table_html(_seed_table(ds, extra), max_rows=100))
    for i in range(min(max_seeds, ds.sizes["seed"])):
        rep.figure(
            body,
            plot_afnm(ds, atlas, i, threshold=threshold, view="stat", figsize=(11, 3.4)),
            f"AFNM score of {ds['seed'].values[i]}.",
        )
    if ds.sizes["seed"] > max_seeds:
        body.append(
            f'<p class="note">maps of the first {max_seeds} of {ds.sizes["seed"]} seeds; '
            "`lakepipe plot afnm` draws any other</p>"
        )
    _network_section(rep, score, "AFNM score")


def _fnm_sections(
    rep: Report,
    lake: Lake,
    ds: xr.Dataset,
    rows: pd.DataFrame,
    statistic: str | None,
    threshold,
    max_seeds: int,
    surface: bool = False,
) -> None:
    from lakepipe.compute.assign import component_summary
    from lakepipe.viz.maps import collection_image, group_mean, plot_brain_map, plot_fnm, resolve_threshold

    stat = statistic or ("zmap" if "zmap" in ds else str(rows["statistic"].iloc[0]))
    shown = threshold if threshold is not None else "20%"
    relative = " of the largest |value|" if str(shown).endswith("%") else ""
    hidden = f"|value| <= {shown}{relative} hidden"
    if stat not in ds:
        raise InputError(f"this FNM run has no {stat!r} map")
    in_run = sorted({int(i) for i in rows["store_index"]})
    sub = ds.isel(seed=in_run)
    n = sub.sizes["seed"]
    body = rep.section("Summary")
    body.append(
        facts_html(
            {
                "method": "FNM (seed-to-voxel functional network mapping)",
                "connectome": ds.attrs.get("connectome"),
                "connectome subjects": ds.attrs.get("n_subjects"),
                "statistic shown": stat,
                "definition": (ds.attrs.get("conventions") or {}).get(stat),
                "seeds": n,
                "sphere seeds": sum(str(k) in (ds.attrs.get("spheres") or {}) for k in sub["seed"].values),
                "parcel summaries": ds.attrs.get("atlas") or "none",
            }
        )
    )
    maps = sub[stat]
    atlas_name = ds.attrs.get("atlas")
    atlas = lake.read_atlas(atlas_name) if atlas_name else None
    if n > 1:
        mean = group_mean(maps)
        mean.attrs["grid"] = ds.attrs["grid"]
        img = collection_image(mean, ijk=ds["ijk"].values)
        body = rep.section("Group mean")
        rep.figure(
            body,
            plot_brain_map(img, threshold=shown, title=f"mean {stat} over {n} seeds"),
            f"Mean {stat} over the run's {n} seeds; {hidden}.",
        )
    else:
        img = None
    if surface:
        from lakepipe.viz.maps import fnm_image
        from lakepipe.viz.surface import plot_voxel_surface

        surface_img = img if img is not None else fnm_image(sub, stat, 0)
        body = rep.section("Cortical surface")
        _surface_section(
            rep,
            body,
            ds.attrs.get("space"),
            lambda: plot_voxel_surface(
                surface_img,
                threshold=shown,
                title=f"{'mean ' if n > 1 else ''}{stat} on fsaverage5"
                + (f" ({n} seeds)" if n > 1 else f": {sub['seed'].values[0]}"),
            ),
            f"The {'group mean' if n > 1 else 'seed'}'s {stat} map projected onto the inflated fsaverage5 "
            f"cortex (linear interpolation across the cortical ribbon); {hidden}.",
        )
    body = rep.section("Seeds")
    peaks = np.nanmax(np.abs(maps.values), axis=1)
    extra = {
        "voxels dropped": sub["seed_voxels_dropped"].values if "seed_voxels_dropped" in sub else None,
        f"max |{stat}|": peaks,
        "sphere": [_sphere_text(ds, k) for k in sub["seed"].values],
    }
    body.append(table_html(_seed_table(sub, {k: v for k, v in extra.items() if v is not None}), max_rows=100))
    for i in range(min(max_seeds, n)):
        rep.figure(
            body,
            plot_fnm(
                sub,
                i,
                stat,
                threshold=shown,
                view="both" if n == 1 else "stat",
                figsize=None if n == 1 else (11, 3.4),
            ),
            f"{stat} of seed {sub['seed'].values[i]}; {hidden}"
            + (" (green: sphere centre)." if _sphere_text(ds, sub["seed"].values[i]) else "."),
        )
    if n > max_seeds:
        body.append(
            f'<p class="note">maps of the first {max_seeds} of {n} seeds; `lakepipe plot fnm` '
            "draws any other</p>"
        )
    if atlas is not None:
        from lakepipe.viz.maps import assign_image

        if img is None:
            from lakepipe.viz.maps import fnm_image

            img = fnm_image(sub, stat, 0)
        data = np.asarray(img.dataobj)
        data_max = float(np.nanmax(np.abs(data)))
        if threshold is not None:
            thr = resolve_threshold(threshold, data_max)
        else:  # robust to the seed's own peak (z of r near 1 at the seed)
            nonzero = np.abs(data[np.isfinite(data) & (data != 0)])
            thr = float(np.percentile(nonzero, 99)) if nonzero.size else 0.0
        table = assign_image(img, atlas, threshold=thr, min_voxels=MIN_CLUSTER_VOXELS)
        body = rep.section("Region assignment")
        how = "given threshold" if threshold is not None else "the 99th percentile of |value| over the brain"
        body.append(
            f'<p class="note">Clusters of the {"group mean " if n > 1 else ""}{stat} map with '
            f"|value| &gt; {thr:.3g} ({how}; 26-connectivity; clusters of at least "
            f"{MIN_CLUSTER_VOXELS} voxels), "
            f"and the {html.escape(atlas.name)} regions they overlap, ranked by the share of the "
            "cluster inside each region. Correlation: Pearson r between the (signed) map and the "
            "region's indicator over the brain: how much higher the map is inside the region than "
            "elsewhere.</p>"
        )
        best = component_summary(table)
        best.insert(
            4,
            "centroid (mm)",
            [
                f"({x:.0f}, {y:.0f}, {z:.0f})"
                for x, y, z in best[["centroid_x", "centroid_y", "centroid_z"]].to_numpy()
            ],
        )
        body.append(
            "<h3>Clusters (best region)</h3>"
            + table_html(
                best[
                    [
                        "component",
                        "sign",
                        "n_voxels",
                        "volume_mm3",
                        "centroid (mm)",
                        "peak_value",
                        "region_name",
                        "network",
                        "overlap_fraction",
                        "correlation",
                    ]
                ],
                max_rows=20,
                digits=3,
            )
        )
        overlaps = table[
            [
                "component",
                "rank",
                "region_name",
                "network",
                "hemisphere",
                "overlap_voxels",
                "overlap_fraction",
                "region_coverage",
                "mean_value",
                "correlation",
            ]
        ]
        body.append("<h3>Overlaps</h3>" + table_html(overlaps, max_rows=40, digits=3))
        parcel = f"parcel_{stat}"
        if parcel in sub:
            _network_section(rep, sub[parcel].assign_attrs(statistic=stat), f"FNM {stat}")


def _sphere_text(ds: xr.Dataset, key) -> str:
    s = (ds.attrs.get("spheres") or {}).get(str(key))
    if not s:
        return ""
    return f"{tuple(s['center_mm'])} mm, r = {s.get('radius_mm')} mm"


def _provenance_section(rep: Report, lake: Lake, ds: xr.Dataset, rows: pd.DataFrame) -> None:
    body = rep.section("Provenance")
    run_ids = sorted({str(r) for r in rows.get("run_id", pd.Series(dtype=object)).dropna() if r})
    if run_ids:
        runs = lake.catalog.runs()
        runs = runs[runs["run_id"].isin(run_ids)]
        if len(runs):
            body.append(
                "<h3>Recorded runs</h3>"
                + table_html(
                    runs[
                        [
                            "run_id",
                            "command",
                            "started",
                            "finished",
                            "status",
                            "n_outputs",
                            "n_skipped",
                            "lakepipe_version",
                        ]
                    ],
                    max_rows=20,
                )
            )
    cols = [
        c
        for c in (
            "id",
            "participant",
            "session",
            "label",
            "statistic",
            "atlas",
            "connectome",
            "cohort",
            "params_hash",
            "inputs_hash",
            "store_index",
            "created",
            "status",
            "run_id",
            "lakepipe_version",
        )
        if c in rows.columns
    ]
    view = rows[cols].copy()
    for c in ("params_hash", "inputs_hash", "run_id"):
        if c in view:
            view[c] = [str(v)[:12] if isinstance(v, str) else v for v in view[c]]
    body.append(f"<h3>Catalog rows ({len(rows)})</h3>" + table_html(view, max_rows=60))
    if len(rows):
        body.append("<h3>Parameters</h3>" + pre_json(rows["params"].iloc[0]))
        body.append("<h3>Inputs (content hashes, first output)</h3>" + pre_json(rows["inputs"].iloc[0]))
    body.append("<h3>Store attributes</h3>" + pre_json(dict(ds.attrs)))
