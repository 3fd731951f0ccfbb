"""Run reports: self-contained HTML (figures, tables, provenance) that a headless browser displays offline."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_viz import FNM_STORES, assert_not_blank, coloured_fraction, lake_with_outputs

IMG_SRC = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def lake(ingested, dask_client, tmp_path_factory):
    return lake_with_outputs(ingested, dask_client, tmp_path_factory)


def chromium() -> str:
    """Debian's chromium; skipped where absent, except in CI (``$CI`` set), where it must be installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/install.sh --test installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    return path


def run_chromium(browser: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def check_offline_page(page: str) -> list[np.ndarray]:
    """Nothing is fetched from elsewhere, and every embedded figure is a real, non-blank PNG."""
    import matplotlib.image as mpimg

    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "<link" not in page and "@import" not in page
    images = []
    for b64 in IMG_SRC.findall(page):
        px = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")[..., :3]
        assert px.shape[0] > 150 and px.shape[1] > 300
        assert px.std() > 0.05 and np.mean(np.all(px > 0.96, axis=-1)) < 0.97
        images.append(px)
    assert len(images) == page.count("<img ")
    return images


def test_parcellate_and_afnm_reports(lake, tmp_path):
    from lakepipe.viz.report import build_report, select_run, write_report

    page = build_report(lake, "parcellate", connectome="tutorial", atlas="Seitzman2018")
    images = check_offline_page(page)
    assert len(images) == 2  # FC matrix, network block means
    rows = lake.catalog.query(method="parcellate", connectome="tutorial", atlas="Seitzman2018")
    for needle in (
        "Group FC matrix",
        "Network block means",
        "Strongest region pairs",
        "Provenance",
        rows["store_uri"].iloc[0],
        rows["params_hash"].iloc[0][:12],
        "mean-fisher-z",
        "DefaultMode",
    ):
        assert needle in page, needle

    path = write_report(
        lake,
        "afnm",
        tmp_path / "afnm.html",
        cohort="tutorial",
        params={"weighting": "fractional"},
        max_seeds=0,
    )
    page = path.read_text(encoding="utf-8")
    images = check_offline_page(page)
    assert len(images) == 2  # group mean map, network bar plot
    assert max(coloured_fraction(px) for px in images) > 0.02
    uri, afnm_rows = select_run(lake, "afnm", cohort="tutorial", params={"weighting": "fractional"})
    for needle in (
        "Group mean",
        "Seeds",
        "Network summary",
        "sub-01_ses-01_label-acuteinfarct",
        "fractional",
        f"Catalog rows ({len(afnm_rows)})",
        "none (all zero)",
        uri,
    ):
        assert needle in page, needle
    for cid in afnm_rows["id"]:
        assert f"<td>{cid}</td>" in page

    from lakepipe.errors import InputError, NotFoundError

    with pytest.raises(InputError, match="HTML"):
        write_report(lake, "afnm", tmp_path / "afnm.pdf", cohort="tutorial")
    with pytest.raises(NotFoundError, match="no afnm output"):
        select_run(lake, "afnm", run="0" * 32)


def test_fnm_report_renders_in_chromium(lake, tmp_path, capsys):
    browser = chromium()
    from lakepipe.cli.main import main

    out = tmp_path / "report" / "fnm.html"
    assert (
        main(
            [
                "-q",
                "--lake",
                lake.url,
                "report",
                "--method",
                "fnm",
                "--store",  # the fixture's run (test_viz.py adds others to the shared lake)
                FNM_STORES[lake.url],
                "--cohort",
                "tutorial",
                "--max-seeds",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    n_images = len(check_offline_page(page))
    assert n_images == 3  # group mean, one seed, network summary
    for needle in ("Region assignment", "Clusters (best region)", "Seitzman_", "zmap", "Provenance"):
        assert needle in page, needle

    # the browser decodes every embedded image (the page's own script counts them once loaded)
    dom = run_chromium(browser, out, tmp_path, "--virtual-time-budget=10000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stdout[:500]
    tag = body.group(0)
    assert f'data-images="{n_images}"' in tag and f'data-loaded="{n_images}"' in tag, tag

    # and draws them: the screenshot is not blank and shows the maps' colours
    shot = tmp_path / "shot.png"
    res = run_chromium(
        browser, out, tmp_path, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,2000"
    )
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    px = assert_not_blank(shot, size=(1200, 2000), min_ink=0.1)
    assert coloured_fraction(px) > 0.003  # the maps' reds and blues (the page itself has no saturated colour)
    top = px[:60]  # the header band is drawn in the page's dark blue
    assert np.mean(np.abs(top - np.array([0x16, 0x32, 0x4F]) / 255).max(axis=-1) < 0.1) > 0.5
