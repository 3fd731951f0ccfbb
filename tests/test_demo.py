"""The README's first command: ``lakepipe demo`` runs the main job end to end (smaller data here)."""

from __future__ import annotations

import pandas as pd

from tests.conftest import run_cli


def test_demo_end_to_end(tmp_path):
    proc = run_cli(
        "demo",
        tmp_path / "demo",
        "--participants",
        "4",
        "--subjects",
        "5",
        "--timepoints",
        "30",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in ("tutorial", "lesions", "connectome", "atlas", "parcellate", "afnm", "fnm", "collect"):
        assert f"  {step}" in out, out
    group = (
        tmp_path
        / "demo"
        / "bids"
        / "group"
        / "group_method-afnm_atlas-Seitzman2018_desc-afnmap_parcelstats.tsv"
    )
    table = pd.read_csv(group, sep="\t")
    assert list(table.columns[:3]) == ["participant_id", "session_id", "label"] and len(table) >= 4
    assert (tmp_path / "demo" / "lake" / "catalog.sqlite").exists()
    assert list((tmp_path / "demo" / "bids").glob("sub-*/ses-*/*_desc-zmap_statmap.nii.gz"))
    again = run_cli(
        "demo",
        tmp_path / "demo",
        "--participants",
        "4",
        "--subjects",
        "5",
        "--timepoints",
        "30",
        cwd=tmp_path,
    )  # a second run finds everything done
    assert again.returncode == 0 and "0 new" in again.stdout and "0 lesion(s) mapped" in again.stdout
