"""The README's first command: ``lakepipe demo`` runs the main job end to end (smaller data here)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration

SIZES = ("--participants", "4", "--subjects", "5", "--timepoints", "30")


def test_demo_end_to_end(tmp_path):
    local = {"LAKEPIPE_SCHEDULER": ""}  # as a user runs it: a local cluster of worker processes
    proc = run_cli("demo", tmp_path / "demo", *SIZES, cwd=tmp_path, env=local)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in (
        "tutorial",
        "ingest-lesions",
        "ingest-connectome",
        "ingest-atlas",
        "parcellate",
        "afnm",
        "fnm",
        "collect",
    ):
        assert re.search(rf"^\s+\d+\. {step}\b", out, re.M), (step, out)
    group = (
        tmp_path
        / "demo"
        / "derivatives"
        / "group"
        / "group_space-MNI152NLin6Asym_method-afnm_atlas-Seitzman2018_desc-afnmap_parcelstats.tsv"
    )
    table = pd.read_csv(group, sep="\t")
    assert list(table.columns[:3]) == ["participant_id", "session_id", "label"] and len(table) >= 4
    assert (tmp_path / "demo" / "lake" / "catalog.sqlite").exists()
    assert list(
        (tmp_path / "demo" / "derivatives").glob("sub-*/ses-*/anat/*_space-*_desc-zmap_statmap.nii.gz")
    )
    # the "Next" commands it prints work as written from the folder it ran in
    nxt = re.search(r"^\s+(lakepipe --lake \S+ catalog ls)$", out, re.M)
    assert nxt, out
    ls = run_cli(*nxt.group(1).split()[1:], cwd=tmp_path)
    assert ls.returncode == 0 and "afnm" in ls.stdout, ls.stderr
    # one job, one run: every output of the demo carries the same run id
    from lakepipe.lake import Lake

    rows = Lake(str(tmp_path / "demo" / "lake"), create=False).catalog.query()
    assert rows["run_id"].nunique() == 1 and rows["run_id"].notna().all()

    again = run_cli("demo", tmp_path / "demo", *SIZES, cwd=tmp_path, env=local)  # finds everything done
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished: 0 new" in again.stdout and "0 lesion(s) mapped" in again.stdout
