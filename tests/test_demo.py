"""The README's first command: ``lakepipe demo`` runs the main job (the tutorial job spec,
``lakepipe jobs example tutorial``) end to end on a local cluster of worker processes (smaller data
here); a second run does nothing."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

SIZES = ("--participants", "4", "--subjects", "5", "--timepoints", "30")


def test_demo_end_to_end(tmp_path):
    local = {"LAKEPIPE_SCHEDULER": ""}  # as a user runs it: a local cluster of worker processes
    proc = run_cli("-v", "demo", tmp_path / "demo", *SIZES, cwd=tmp_path, env=local)
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
    from lakepipe.registry import method_names

    lake = Lake(str(tmp_path / "demo" / "lake"), create=False)
    rows = lake.catalog.query()
    assert rows["run_id"].nunique() == 1 and rows["run_id"].notna().all()
    n_entries = len(list((tmp_path / "demo" / "tutorial" / "bids").glob("sub-*/**/*_mask.nii.gz")))
    assert lake.catalog.count(kind="lesion", cohort="tutorial") == n_entries
    assert lake.catalog.count(method="afnm") == n_entries
    assert lake.catalog.count(method="fnm", statistic="zmap", atlas="Seitzman2018") == n_entries
    assert lake.catalog.count(method="parcellate") == 2
    assert len(table) == n_entries
    # every sidecar the job exported follows schemas/sidecar.schema.json
    import jsonschema

    schema = json.loads((ROOT / "schemas" / "sidecar.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    out_dir = tmp_path / "demo" / "derivatives"
    sidecars = [p for p in out_dir.rglob("*.json") if p.name != "dataset_description.json"]
    assert len(sidecars) > n_entries
    for path in sidecars:
        meta = json.loads(path.read_text())
        assert not list(validator.iter_errors(meta)), path
        assert meta["Method"] in method_names(), path
    # the job answered the tutorial's group question: group statistics files of every test
    for method in ("sensitivity", "conjunction", "symptom", "predict"):
        assert list(out_dir.rglob(f"*method-{method}_*")), method
    assert not (ROOT / "jobs" / "derivatives").exists() and not (ROOT / "jobs" / "tutorial").exists()

    n_rows = lake.catalog.count()
    again = run_cli("-v", "demo", tmp_path / "demo", *SIZES, cwd=tmp_path, env=local)  # finds everything done
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished: 0 new" in again.stdout and "0 lesion(s) mapped" in again.stdout
    assert "local Dask cluster" in proc.stderr and "local Dask cluster" not in again.stderr  # none needed
    assert Lake(str(tmp_path / "demo" / "lake")).catalog.count() == n_rows
    runs = Lake(str(tmp_path / "demo" / "lake")).catalog.runs()
    assert list(runs["status"]) == ["finished", "finished"]  # a job records every run, even a no-op
    # the run's counts are catalog records: every output the first run registered, none the second
    assert list(runs["n_outputs"]) == [lake.catalog.count(run_id=runs["run_id"].iloc[0]), 0]
