"""Figures and network summaries of the tutorial outputs: files exist, have the expected sizes, are not blank.

The lake is a private copy of the session's ``ingested`` lake (stores hard-linked, catalog copied)
with AFNM and FNM (the tutorial cohort plus one sphere seed) run on it, so these tests neither
depend on nor change what other test modules find in ``ingested``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lakepipe.lake import Lake
from tests.conftest import copy_lake_folder

SPHERE = (-40.0, -20.0, 50.0)
FRACTIONAL = {"weighting": "fractional"}
_LAKES: dict[str, Lake] = {}
#: the store of the fixture's own FNM run, by lake URL (tests that add runs to the lake leave it be)
FNM_STORES: dict[str, str] = {}


# ------------------------------------------------------------------------------------------ fixtures


def _private_copy(lake: Lake, dst: Path) -> Lake:
    """A copy of a local lake whose catalog can change freely (data files hard-linked, read-only use)."""
    src = Path(lake.url)
    catalog = src / "catalog.sqlite"
    if lake._catalog_url or os.environ.get("LAKEPIPE_CATALOG") or not catalog.exists():
        return lake  # catalog elsewhere: share the lake (our runs then only add outputs)

    return Lake(str(copy_lake_folder(src, dst, hard_links=True)))


def lake_with_outputs(ingested, dask_client, tmp_path_factory) -> Lake:
    """The tutorial lake with AFNM (fractional) and FNM (cohort + sphere 'motor', Seitzman summaries)."""
    if ingested.url not in _LAKES:
        lake = _private_copy(ingested, tmp_path_factory.mktemp("vizlake") / "lake")
        lake.run("afnm", cohort="tutorial", atlas="Seitzman2018", connectome="tutorial", client=dask_client)
        fnm = lake.run(
            "fnm",
            connectome="tutorial",
            cohort="tutorial",
            atlas="Seitzman2018",
            client=dask_client,
            sphere=[",".join(map(str, SPHERE))],
            radius=6.0,
            sphere_name=["motor"],
            recompute=True,  # all in this run's store, whatever FNM maps the copied lake already held
        )
        assert fnm.store is not None
        from lakepipe.io import layout

        FNM_STORES[lake.url] = layout.relative(lake.url, fnm.store)  # as the catalog's store_uri
        _LAKES[ingested.url] = lake
    return _LAKES[ingested.url]


@pytest.fixture(scope="module")
def lake(ingested, dask_client, tmp_path_factory) -> Lake:
    return lake_with_outputs(ingested, dask_client, tmp_path_factory)


@pytest.fixture(scope="module")
def atlas(lake):
    return lake.read_atlas("Seitzman2018")


# ---------------------------------------------------------------------------------- pixel statistics


def png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(str(path))[..., :3].astype(np.float64)


def assert_not_blank(
    path: Path,
    size: tuple[int, int] | None = None,
    min_std: float = 0.05,
    min_ink: float = 0.05,
    min_bytes: int = 5000,
) -> np.ndarray:
    """The PNG exists, has the expected (width, height), varies, and is not mostly background."""
    assert path.exists() and path.stat().st_size >= min_bytes, path
    px = png_pixels(path)
    if size is not None:
        assert (px.shape[1], px.shape[0]) == size
    assert px.std() > min_std, f"{path.name}: nearly uniform (std {px.std():.3f})"
    ink = 1.0 - np.mean(np.all(px > 0.96, axis=-1))
    assert ink > min_ink, f"{path.name}: {ink:.1%} non-white pixels"
    return px


def coloured_fraction(px: np.ndarray) -> float:
    """Share of saturated (not grey) pixels: drawn map values, not the grey template or the outlines."""
    return float(np.mean(px.max(axis=-1) - px.min(axis=-1) > 0.25))


def lime_pixels(px: np.ndarray) -> int:
    """Pixels of the seed marker colour."""
    return int(np.sum((px[..., 1] > 0.8) & (px[..., 0] < 0.35) & (px[..., 2] < 0.35)))


# --------------------------------------------------------------------------------------------- tests


def test_fc_matrix_by_network(lake, tmp_path):
    from lakepipe.viz import save_figure
    from lakepipe.viz.matrices import network_block_means, network_layout, plot_fc_matrix
    from lakepipe.viz.select import fc_dataset

    ds, _ = fc_dataset(lake, "tutorial", "Seitzman2018")
    order, blocks = network_layout(ds["fcgroupz"])
    nets = ds["region_network"].values[order]
    assert sorted(order.tolist()) == list(range(ds.sizes["region"]))
    assert [b[0] for b in blocks][-1] == "unassigned" and len(blocks) == len(set(nets))
    for name, start, stop in blocks:  # each network one contiguous block
        assert set(nets[start:stop]) == {name}

    fig = plot_fc_matrix(ds, "fcgroupr", dpi=60)
    clim = fig.axes[0].images[0].get_clim()
    off = ds["fcgroupr"].values[~np.eye(ds.sizes["region"], dtype=bool)]
    assert clim == pytest.approx((-np.abs(off).max(), np.abs(off).max()))  # symmetric, diagonal ignored
    assert len(fig.axes) == 4  # matrix, two network strips, colour bar
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [b[0] for b in blocks]
    png = assert_not_blank(save_figure(fig, tmp_path / "fc.png"), size=(9 * 60, 8 * 60))
    assert coloured_fraction(png) > 0.05
    pdf = save_figure(fig, tmp_path / "fc.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    svg = save_figure(fig, tmp_path / "fc.svg")
    assert "<svg" in svg.read_text()[:500] and svg.stat().st_size > 10_000

    blocks_table = network_block_means(ds)
    dmn = ds["region_network"].values == "DefaultMode"
    sub = ds["fcgroupz"].values[np.ix_(dmn, dmn)]
    expected = sub[~np.eye(dmn.sum(), dtype=bool)].mean()
    assert blocks_table.loc["DefaultMode", "DefaultMode"] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(blocks_table.to_numpy(float), blocks_table.to_numpy(float).T, atol=1e-6)


def test_fnm_sphere_map_threshold_and_marker(lake, tmp_path):
    from lakepipe.viz import save_figure
    from lakepipe.viz.maps import fnm_image, plot_fnm, sphere_markers
    from lakepipe.viz.select import select_seed

    sel = select_seed(lake, "fnm", label="motor")
    assert sel.key == "sphere-motor"
    assert sphere_markers(sel.dataset, sel.index) == [(SPHERE, 6.0)]
    img = fnm_image(sel.dataset, "zmap", sel.index)
    assert img.shape == (91, 109, 91)
    data = np.asarray(img.dataobj)
    peak = np.unravel_index(np.argmax(data), data.shape)
    assert np.linalg.norm(img.affine[:3, :3] @ peak + img.affine[:3, 3] - SPHERE) <= 10  # peak at the seed

    full = plot_fnm(sel.dataset, sel.index, view="glass", dpi=50)
    full = assert_not_blank(save_figure(full, tmp_path / "fnm.png"), size=(11 * 50, int(round(3.4 * 50))))
    thr = plot_fnm(sel.dataset, sel.index, view="glass", threshold="60%", dpi=50)
    thr = assert_not_blank(save_figure(thr, tmp_path / "fnm_thr.png"))
    assert lime_pixels(full) > 20 and lime_pixels(thr) > 20  # the sphere's centre is marked
    assert 0 < coloured_fraction(thr) < 0.8 * coloured_fraction(full)


def test_afnm_scores_painted_on_atlas(lake, atlas, tmp_path):
    from lakepipe.viz import save_figure
    from lakepipe.viz.maps import parcel_image, plot_afnm
    from lakepipe.viz.select import select_seed

    sel = select_seed(
        lake,
        "afnm",
        participant="02",
        session="01",
        label="acuteinfarct",
        cohort="tutorial",
        params=FRACTIONAL,
    )
    scores = sel.dataset["score"].isel(seed=sel.index).compute()
    img = parcel_image(scores, atlas)
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(img.affine, atlas.grid.affine)
    for r in (1, 57, 150, 300):  # every voxel of a region carries that region's score
        np.testing.assert_allclose(data[atlas.labels == r], float(scores.sel(region=r)))
    assert np.all(data[atlas.labels == 0] == 0)

    png = assert_not_blank(
        save_figure(plot_afnm(sel.dataset, atlas, sel.index, view="stat", dpi=50), tmp_path / "afnm.png"),
        size=(550, int(round(3.4 * 50))),
    )
    assert coloured_fraction(png) > 0.005


def test_group_means(lake, atlas, tmp_path):
    from lakepipe.collect import collect
    from lakepipe.viz import save_figure
    from lakepipe.viz.maps import collection_image, group_mean, plot_group_mean
    from lakepipe.viz.select import voxel_ijk

    maps = collect(lake, "fnm", statistic="zmap", cohort="tutorial")
    ijk = voxel_ijk(lake, maps)
    mean = group_mean(maps)
    values = np.asarray(maps.values, np.float64)
    np.testing.assert_allclose(mean.values, np.nanmean(values, axis=0), rtol=1e-5, atol=1e-6)
    img = np.asarray(collection_image(mean, ijk=ijk).dataobj)
    np.testing.assert_allclose(img[tuple(ijk[100])], mean.values[100], rtol=1e-6)

    scores = collect(lake, "afnm", atlas="Seitzman2018", cohort="tutorial", params=FRACTIONAL)
    region_mean = group_mean(scores)
    assert region_mean.dims == ("region",)
    np.testing.assert_allclose(region_mean.values, scores.values.mean(axis=0), rtol=1e-6)

    fig = plot_group_mean(maps, ijk=ijk, view="glass", threshold="20%", dpi=50)
    assert "over 10 seed(s)" in fig.texts[-1].get_text()
    assert_not_blank(save_figure(fig, tmp_path / "group.png"))


def test_network_summary_and_bar_plot(lake, tmp_path):
    from lakepipe.collect import collect
    from lakepipe.viz import save_figure
    from lakepipe.viz.networks import network_summary, plot_network_summary, summarize_seeds

    scores = collect(lake, "afnm", atlas="Seitzman2018", cohort="tutorial", params=FRACTIONAL).compute()
    table = network_summary(scores)
    assert list(table.columns) == [
        "seed",
        "participant",
        "session",
        "label",
        "network",
        "hemisphere",
        "n_regions",
        "mean",
        "sd",
    ]
    first = scores.isel(seed=0)
    manual = (
        pd.DataFrame(
            {
                "v": first.values,
                "net": first["region_network"].values,
                "hemi": first["region_hemisphere"].values,
            }
        )
        .groupby(["net", "hemi"])["v"]
        .mean()
    )
    mine = table[table["seed"] == str(first["seed"].values)].set_index(["network", "hemisphere"])["mean"]
    assert len(mine) == len(manual)
    for key, value in manual.items():
        assert mine.loc[key] == pytest.approx(value, rel=1e-6)
    assert table["network"].iloc[-1] == "unassigned"  # unassigned last
    assert table.groupby("seed")["n_regions"].sum().eq(scores.sizes["region"]).all()

    group = summarize_seeds(table)
    assert (group["n_seeds"] == scores.sizes["seed"]).all()
    pooled = network_summary(first, by_hemisphere=False)
    assert "hemisphere" not in pooled and pooled["n_regions"].sum() == scores.sizes["region"]

    fig = plot_network_summary(scores)
    bars = list(fig.axes[0].patches)
    assert len(bars) == len(group)
    # bars of one network share 0.8 of its unit slot (side by side per hemisphere): none overlaps another
    spans = sorted((b.get_x(), b.get_x() + b.get_width()) for b in bars)
    assert all(0 < b.get_width() <= 0.8 for b in bars)
    assert all(a1 <= b0 + 1e-9 for (_, a1), (b0, _) in zip(spans[:-1], spans[1:], strict=True))
    assert_not_blank(save_figure(fig, tmp_path / "networks.png", dpi=60), min_ink=0.03)


def test_network_summary_schaefer_names_and_no_networks():
    """Schaefer 17-network names give networks and hemispheres; an atlas without any is refused."""
    from lakepipe.errors import InputError
    from lakepipe.io.labels import parse_network
    from lakepipe.viz.networks import network_summary

    names = [
        "17Networks_LH_VisCent_ExStr_1",
        "17Networks_LH_VisCent_ExStr_2",
        "17Networks_RH_VisCent_ExStr_1",
        "17Networks_LH_DefaultA_pCunPCC_1",
        "17Networks_RH_DefaultA_PFCm_1",
        "Other_7",
    ]
    parsed = [parse_network(n) for n in names]
    da = xr.DataArray(
        [1.0, 3.0, 5.0, 2.0, 4.0, 7.0],
        dims="region",
        coords={
            "region": np.arange(1, 7),
            "region_name": ("region", names),
            "region_network": ("region", [p[0] or "" for p in parsed]),
            "region_hemisphere": ("region", [p[1] or "" for p in parsed]),
        },
    )
    t = network_summary(da)
    assert t[["network", "hemisphere", "n_regions", "mean"]].values.tolist() == [
        ["VisCent", "L", 2, 2.0],
        ["VisCent", "R", 1, 5.0],
        ["DefaultA", "L", 1, 2.0],
        ["DefaultA", "R", 1, 4.0],
        ["unassigned", "n/a", 1, 7.0],
    ]
    with pytest.raises(InputError, match="no network labels"):
        network_summary(da.assign_coords(region_network=("region", [""] * 6)))


def _cli(*argv) -> int:
    from lakepipe.cli.main import main

    return main(["-q", *map(str, argv)])


def test_plot_and_assign_cli(lake, tmp_path, capsys):
    L = ("--lake", lake.url)
    out = tmp_path / "cli"
    assert (
        _cli(
            "plot",
            "fc",
            *L,
            "--connectome",
            "tutorial",
            "--atlas",
            "Seitzman2018",
            "--dpi",
            "40",
            "--out",
            out / "fc.png",
        )
        == 0
    )
    assert_not_blank(out / "fc.png", size=(360, 320))
    assert (
        _cli(
            "plot",
            "fnm",
            *L,
            "--label",
            "motor",
            "--statistic",
            "tmap",
            "--threshold",
            "2",
            "--cut-coords",
            "-40,-20,50",
            "--view",
            "stat",
            "--out",
            out / "fnm.svg",
        )
        == 0
    )
    svg = (out / "fnm.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and len(svg) > 50_000
    assert (
        _cli(
            "plot",
            "group",
            *L,
            "--method",
            "afnm",
            "--atlas",
            "Seitzman2018",
            "--cohort",
            "tutorial",
            "--param",
            "weighting=fractional",
            "--view",
            "glass",
            "--dpi",
            "40",
            "--out",
            out / "group.pdf",
        )
        == 0
    )
    assert (out / "group.pdf").read_bytes()[:5] == b"%PDF-"
    assert (
        _cli(
            "plot",
            "networks",
            *L,
            "--method",
            "fnm",
            "--atlas",
            "Seitzman2018",
            "--cohort",
            "tutorial",
            "--tsv",
            out / "networks.tsv",
        )
        == 0
    )
    tsv = pd.read_csv(out / "networks.tsv", sep="\t")
    assert {"seed", "network", "hemisphere", "mean"} <= set(tsv.columns) and tsv["seed"].nunique() == 10
    assert (out / "networks.json").exists()
    assert (
        _cli(
            "assign",
            *L,
            "--label",
            "motor",
            "--atlas",
            "Seitzman2018",
            "--threshold",
            "0.5",
            "--out",
            out / "assign.tsv",
        )
        == 0
    )
    table = pd.read_csv(out / "assign.tsv", sep="\t", na_values="n/a")
    top = table[table["rank"] == 1].sort_values("component").iloc[0]
    assert np.linalg.norm(top[["peak_x", "peak_y", "peak_z"]].to_numpy(float) - SPHERE) <= 10
    assert top["network"] == "SomatomotorDorsal"
    assert "cluster(s) above 0.5" in capsys.readouterr().out
    # a figure name without a known extension is a one-line input error, before any work
    assert _cli("plot", "fc", *L, "--out", out / "fc.jpg") == 2
    assert "use one of .png, .pdf, .svg" in capsys.readouterr().err
    # many outputs match a one-seed plot (the README's `plot fnm --label acuteinfarct`): their mean is
    # drawn, and the user is told how to pick one
    many = ("--cohort", "tutorial", "--param", "weighting=fractional")
    assert _cli("plot", "afnm", *L, *many, "--out", out / "x.png") == 0
    assert "drawing their mean (pick one with --participant" in capsys.readouterr().err
    assert coloured_fraction(assert_not_blank(out / "x.png")) > 0.01
    assert _cli("plot", "fnm", *L, "--label", "acuteinfarct", "--out", out / "many.png") == 0
    err = capsys.readouterr().err
    assert "fnm outputs match: drawing their mean" in err
    assert coloured_fraction(assert_not_blank(out / "many.png")) > 0.01
