"""Cortical surface figures from the command line and in the report (``--surface``, fsaverage5).

Figures are PNGs checked by their pixels: drawn (not blank, coloured), and, for AFNM scores that are
non-zero only in the left hemisphere's parcels (a group matrix that connects every parcel to the left
hemisphere's), coloured in the left-hemisphere panels and not in the right ones.
"""

from __future__ import annotations

import base64
import io
import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from lakepipe.cli.main import main
from lakepipe.lake import Lake

pytestmark = pytest.mark.integration  # a lake with AFNM and FNM outputs: ~30 s of setup

DPI = "40"  # small renders: the pixel statistics need only the panels' rough content
# the 2x2 layout (lakepipe.viz.surface): panels 3.2 in wide, a 0.9 in colour bar on the right
FIG_WIDTH_IN = 2 * 3.2 + 0.9


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tutorial):
    from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions

    root = tmp_path_factory.mktemp("surface")
    lake = Lake(str(root / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    atlas = lake.read_atlas("Seitzman2018")
    names = atlas.table["name"].tolist()
    left = (atlas.table["hemisphere"] == "L").to_numpy(float)
    matrix = root / "left.tsv"  # C[i, j] = 1 when region j is in the left hemisphere
    pd.DataFrame(np.tile(left, (len(names), 1)), index=pd.Index(names, name="region"), columns=names).to_csv(
        matrix, sep="\t"
    )
    lake.run("afnm", cohort="tutorial", atlas="Seitzman2018", matrix=str(matrix), outputs=False)
    lake.run("fnm", cohort="tutorial", connectome="tutorial", participants=("01", "02"), outputs=False)
    return lake


def _pixels(path) -> np.ndarray:
    return mpimg.imread(io.BytesIO(path.read_bytes() if hasattr(path, "read_bytes") else path))[..., :3]


def _coloured(px: np.ndarray) -> np.ndarray:
    """Pixels that are not grey (the sulcal background, text and paper are grey levels)."""
    return px.max(axis=-1) - px.min(axis=-1) > 0.15


def _columns(px: np.ndarray) -> tuple[float, float]:
    """Coloured share of the left-hemisphere column and of the right-hemisphere column (2x2 layout)."""
    w = px.shape[1]
    grid = int(w * (1 - 0.9 / FIG_WIDTH_IN))
    c = _coloured(px)
    return float(c[:, : grid // 2].mean()), float(c[:, grid // 2 : grid].mean())


def test_afnm_on_the_cortex_is_coloured_where_the_scores_are(lake, tmp_path, capsys):
    out = tmp_path / "afnm.png"
    argv = ["--lake", lake.url, "plot", "afnm", "--atlas", "Seitzman2018", "--participant", "01", "--surface",
            "--dpi", DPI, "--out", str(out)]  # fmt: skip
    assert main(["-q", *argv]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    px = _pixels(out)
    assert px.std() > 0.05
    left, right = _columns(px)
    print(f"\nAFNM scores only in left parcels: coloured pixels left column {left:.3f}, right {right:.3f}")
    assert left > 0.02 and right < 0.1 * left

    # the group mean of the cohort: the same lateralisation
    out = tmp_path / "group.png"
    argv = ["--lake", lake.url, "plot", "group", "--method", "afnm", "--atlas", "Seitzman2018", "--surface",
            "--layout", "2x2", "--dpi", DPI, "--out", str(out)]  # fmt: skip
    assert main(["-q", *argv]) == 0
    left, right = _columns(_pixels(out))
    assert left > 0.02 and right < 0.1 * left


def test_fnm_on_the_cortex(lake, tmp_path, capsys):
    out = tmp_path / "fnm.png"
    argv = ["--lake", lake.url, "plot", "fnm", "--participant", "01", "--surface", "--vmax", "0.1",
            "--dpi", DPI, "--out", str(out)]  # fmt: skip
    assert main(["-q", *argv]) == 0
    px = _pixels(out)
    left, right = _columns(px)
    print(f"\nFNM zmap of sub-01 (bilateral networks): coloured left column {left:.3f}, right {right:.3f}")
    assert px.std() > 0.05 and left > 0.01 and right > 0.01
    # 1x4 panels: a wider figure
    out2 = tmp_path / "fnm_1x4.png"
    assert main(["-q", *argv[:-2], "--layout", "1x4", "--out", str(out2)]) == 0
    wide = _pixels(out2)
    assert wide.shape[1] / wide.shape[0] > 2 * px.shape[1] / px.shape[0]


def _images(page: str) -> list[np.ndarray]:
    return [
        mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png")[..., :3]
        for b in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_report_surface_figures(lake):
    from lakepipe.viz.report import build_report

    plain = _images(build_report(lake, "afnm", cohort="tutorial", max_seeds=0))
    page = build_report(lake, "afnm", cohort="tutorial", max_seeds=0, surface=True)
    images = _images(page)
    assert len(images) == len(plain) + 1 and "inflated fsaverage5 cortex" in page
    surface = images[1]  # right after the group mean map
    left, right = _columns(surface)
    assert left > 0.02 and right < 0.1 * left, (left, right)

    page = build_report(lake, "fnm", cohort="tutorial", max_seeds=1, surface=True)
    assert "Cortical surface" in page and "projected onto the inflated fsaverage5 cortex" in page
    assert any(_coloured(px).mean() > 0.01 for px in _images(page))
