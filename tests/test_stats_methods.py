"""The group statistics as lake methods (sensitivity, specificity, conjunction, symptom, predict) on
the tutorial's neglect question: the methods against the kernels and against straightforward
per-voxel references on the collected maps, the planted network recovered, the prediction
significant on the real scores and not on shuffled ones, the permutations spread over a real
cluster without changing the result, idempotent runs, exports, and bad input (one line, exit 2,
nothing registered).

The kernels themselves (GLM vs lstsq/statsmodels/permuted_ols, FWE vs a naive loop, calibration
under the null) are tested in tests/test_compute_stats_*.py; here the question is whether the
lake feeds them the right maps, labels, scores and covariates, and stores what they return.
"""

from __future__ import annotations

import json
import shutil

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lakepipe.compute import stats
from lakepipe.lake import Lake


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process (its parser, error handling and exit status; the README test
    and tests/test_cli.py run it as a process): exit status, stdout, stderr."""
    from lakepipe.cli.main import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


N_PERM = 499
CASES = "cohort=neglect"
CONTROLS = "cohort=controls"


def _with_columns(src, dst, extra):
    """A copy of a BIDS lesion folder whose participants.tsv has extra columns."""
    shutil.copytree(src, dst)
    table = pd.read_csv(dst / "participants.tsv", sep="\t")
    for name, values in extra(table).items():
        table[name] = values
    table.to_csv(dst / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    return dst


@pytest.fixture(scope="module")
def lnm(tutorial, tmp_path_factory):
    """A lake with the neglect cases and stroke controls mapped by FNM and AFNM on the tutorial
    connectome (cases' participants.tsv with a shuffled, a constant and a partly missing score)."""
    from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions

    root = tmp_path_factory.mktemp("lnm")
    rng = np.random.default_rng(7)

    def case_columns(t):
        n = len(t)
        partial = t["neglect_score"].astype(float).copy()
        partial.iloc[[1, 4]] = np.nan
        return {
            "shuffled": t["neglect_score"].to_numpy()[rng.permutation(n)],
            "constant": np.full(n, 5),
            "partial": partial,
            "is_case": np.ones(n, int),
        }

    cases = _with_columns(tutorial.lnm_cases, root / "cases", case_columns)
    controls = _with_columns(
        tutorial.lnm_controls, root / "controls", lambda t: {"is_case": np.zeros(len(t), int)}
    )
    lake = Lake(str(root / "lake"))
    ingest_lesions(lake, cases, cohort="neglect")
    ingest_lesions(lake, controls, cohort="controls")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    for cohort in ("neglect", "controls"):
        lake.run("fnm", cohort=cohort, connectome="tutorial")
        lake.run("afnm", cohort=cohort, connectome="tutorial", atlas="Seitzman2018")
    return lake


def _maps(lake, cohort, statistic="tmap", method="fnm", atlas=None):
    """The cohort's maps as collected, sorted like the group tests sort them (participant, session, label)."""
    da = lake.collect(method, statistic=statistic, cohort=cohort, atlas=atlas).load()
    order = np.lexsort((da["label"].values, da["session"].values, da["participant"].values))
    return da.isel(seed=order)


def _truth(tutorial, ijk):
    meta = json.loads((tutorial.lnm_truth / "truth.json").read_text())
    maps = {
        n: nib.load(tutorial.root / "lnm" / f).get_fdata()[tuple(ijk.T)]
        for n, f in meta["loading_maps"].items()
    }
    return meta["target_network"], maps


def _volume_mm3(path) -> float:
    img = nib.load(path)
    return float(np.count_nonzero(img.get_fdata())) * abs(float(np.linalg.det(img.affine[:3, :3])))


# ------------------------------------------------------------------------------- against the kernels


def test_sensitivity_is_the_kernel_on_the_cases_maps(lnm):
    res = lnm.run("sensitivity", cases=CASES, threshold=4.0)
    ds = res.outputs
    m = _maps(lnm, "neglect")
    expect = stats.sensitivity(m.values, 4.0)
    for name in ("pos", "neg", "combined", "dominant"):
        np.testing.assert_array_equal(ds[name].values, expect.__dict__[name].astype(np.float32))
    assert list(ds["participant"].values) == list(m["participant"].values)
    assert ds.attrs["inputs"]["output_ids"] == [int(i) for i in m["catalog_id"].values]
    assert int((ds["group"].values == "case").sum()) == m.sizes["seed"]


def test_specificity_on_the_cluster_equals_reference_and_any_split(lnm, dask_client, tutorial):
    kw = {
        "cases": CASES,
        "controls": CONTROLS,
        "covariates": ["lesion_volume"],
        "n_permutations": N_PERM,
        "seed": 3,
    }
    on_cluster = lnm.run("specificity", client=dask_client, **kw).outputs
    # the lesion volume covariate: voxel count x voxel volume of the very mask files
    vols = []
    for cohort, folder in (("neglect", tutorial.lnm_cases), ("controls", tutorial.lnm_controls)):
        for p in sorted(set(_maps(lnm, cohort)["participant"].values)):
            (mask,) = sorted(folder.glob(f"sub-{p}/**/*_mask.nii.gz"))
            vols.append(_volume_mm3(mask))
    y = np.concatenate([_maps(lnm, "neglect").values, _maps(lnm, "controls").values])
    n_cases = _maps(lnm, "neglect").sizes["seed"]
    group = np.r_[np.ones(n_cases), np.zeros(y.shape[0] - n_cases)]
    cov = np.asarray(vols)
    # t of the group in an ordinary least-squares fit per voxel (numpy lstsq), on 300 voxels
    rng = np.random.default_rng(0)
    vox = rng.choice(y.shape[1], 300, replace=False)
    x = np.column_stack([np.ones_like(group), group, (cov - cov.mean()) / cov.std()])
    beta, res, *_ = np.linalg.lstsq(x, y[:, vox], rcond=None)
    df = y.shape[0] - 3
    se = np.sqrt(res / df * np.linalg.inv(x.T @ x)[1, 1])
    # the observed statistic is float64 from float32 maps: relative 1e-6 covers the residualisation
    np.testing.assert_allclose(on_cluster["t"].values[vox], beta[1] / se, rtol=1e-5, atol=1e-5)
    # the same test in this process (one worker: other blocks) and the kernel in one call give the
    # same null; float32 products may round differently with the BLAS thread count (~1e-6 in u)
    here = lnm.run("specificity", recompute=True, **kw).outputs
    kernel = stats.specificity(y, group.astype(bool), cov[:, None], ["lesion_volume"], N_PERM, 3)
    for other in (here["null_max_u"].values, _u_of(kernel)):
        np.testing.assert_allclose(on_cluster["null_max_u"].values, other, rtol=1e-5, atol=1e-6)
    # p_fwe counts null maxima >= |u| - tie_tol: a null value within the rounding of an observed
    # one may count in one run and not in another, moving p by 1/(1 + n_perm) per such value
    assert np.max(np.abs(on_cluster["p_fwe"].values - here["p_fwe"].values)) <= 2 / (1 + N_PERM)
    assert np.max(np.abs(on_cluster["p_fwe"].values - kernel.p_fwe)) <= 2 / (1 + N_PERM)
    np.testing.assert_allclose(
        on_cluster["q_fdr"].values, sps.false_discovery_control(on_cluster["p"].values), rtol=1e-5
    )


def _u_of(result):
    """Null maxima of a kernel result in partial-correlation units (u = t / sqrt(t^2 + df))."""
    t = result.null_max
    return t / np.sqrt(t * t + result.df)


def test_planted_network_is_recovered(lnm, tutorial):
    ds = lnm.run("specificity", cases=CASES, controls=CONTROLS, n_permutations=N_PERM).outputs
    target, loading = _truth(tutorial, ds["ijk"].values.astype(int))
    top = np.argsort(-ds["t"].values)[:2000]
    means = {n: float(m[top].mean()) for n, m in loading.items()}
    best = max(means, key=means.get)
    assert best == target, means
    others = max(v for n, v in means.items() if n != target)
    assert means[target] > 3 * others, means
    assert (ds["p_fwe"].values[top[:100]] < 0.05).all()


def test_symptom_map_is_pearson_and_spearman(lnm):
    m = _maps(lnm, "neglect")
    scores = (
        lnm.participants("neglect")
        .set_index("participant_id")
        .loc[[f"sub-{p}" for p in m["participant"].values], "neglect_score"]
        .to_numpy(float)
    )
    vox = np.random.default_rng(1).choice(m.sizes["voxel"], 200, replace=False)
    for corr, ref in (("pearson", sps.pearsonr), ("spearman", sps.spearmanr)):
        ds = lnm.run(
            "symptom", cases=CASES, score="neglect_score", correlation=corr, n_permutations=N_PERM
        ).outputs
        expect = np.array([ref(m.values[:, v], scores)[0] for v in vox])
        # float64 correlation of float32 maps: 1e-6 of the unit-norm products
        np.testing.assert_allclose(ds["r"].values[vox], expect, atol=2e-6)
        assert (ds["p_fwe"].values >= ds["p"].values - 1e-7).all()  # FWE never below uncorrected


def test_prediction_is_significant_on_the_scores_and_not_on_shuffled_ones(lnm):
    real = lnm.run("predict", cases=CASES, score="neglect_score", n_permutations=N_PERM).outputs
    assert float(real["r"].values) > 0.4 and float(real["p"].values) < 0.05
    shuffled = lnm.run("predict", cases=CASES, score="shuffled", n_permutations=N_PERM).outputs
    assert float(shuffled["p"].values) > 0.05
    # leave-one-out by hand: the training patients' Pearson map, then each held-out map's spatial r
    m = _maps(lnm, "neglect").values
    s = real["score"].values
    pred = []
    for i in range(len(s)):
        tr = np.delete(np.arange(len(s)), i)
        a = m[tr] - m[tr].mean(0)
        b = s[tr] - s[tr].mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            model = np.nan_to_num(a.T @ b / (np.linalg.norm(a, axis=0) * np.linalg.norm(b)))
        pred.append(np.corrcoef(m[i], model)[0, 1])
    # float64 sums over 235k voxels of float32 maps: 1e-6 relative
    np.testing.assert_allclose(real["prediction"].values, pred, atol=1e-6)
    assert float(real["r"].values) == pytest.approx(np.corrcoef(pred, s)[0, 1], abs=1e-6)


def test_conjunction_combines_the_results_it_reuses(lnm):
    kw = {"cases": CASES, "controls": CONTROLS, "n_permutations": N_PERM, "threshold": 4.0}
    first = lnm.run("conjunction", **kw).outputs
    n_sens = len(lnm.catalog.query(method="sensitivity", statistic="dominant"))
    n_spec = len(lnm.catalog.query(method="specificity", statistic="t"))
    second = lnm.run("conjunction", alpha=0.01, **kw).outputs  # another alpha: same parts, reused
    assert len(lnm.catalog.query(method="sensitivity", statistic="dominant")) == n_sens
    assert len(lnm.catalog.query(method="specificity", statistic="t")) == n_spec
    sens = lnm.run("sensitivity", cases=CASES, threshold=4.0).outputs
    spec = lnm.run("specificity", cases=CASES, controls=CONTROLS, n_permutations=N_PERM).outputs
    for ds, alpha in ((first, 0.05), (second, 0.01)):
        c = stats.conjunction(sens["dominant"].values, spec["t"].values, spec["p_fwe"].values, 0.75, alpha)
        np.testing.assert_array_equal(ds["conjunction"].values != 0, c.mask)
        np.testing.assert_allclose(ds["agreement"].values, c.agreement, rtol=1e-6, atol=1e-6)
    assert (second["conjunction"].values != 0).sum() <= (first["conjunction"].values != 0).sum()


def test_random_lesion_null_is_the_matched_sets_sensitivity(lnm):
    ds = lnm.run(
        "sensitivity", cases=CASES, controls=CONTROLS, threshold=4.0, null="random-lesions", n_null=40
    ).outputs
    cases, controls = _maps(lnm, "neglect").values, _maps(lnm, "controls").values
    from lakepipe.methods.stats.groups import GroupQuery, select_maps

    # the volumes the lake computes are checked against the mask files in the specificity test
    maps = select_maps(
        lnm,
        source="fnm",
        statistic=None,
        atlas=None,
        connectome=None,
        cases=GroupQuery.parse(CASES, "cases"),
        controls=GroupQuery.parse(CONTROLS, "controls"),
        volumes=True,
    )
    v = maps.table["lesion_volume"].to_numpy()
    draws = stats.random_lesion_sets(v[maps.is_case], v[~maps.is_case], 40, 0)
    null = np.stack([np.abs(stats.sensitivity(controls[d], 4.0).dominant) for d in draws])
    observed = np.abs(stats.sensitivity(cases, 4.0).dominant)
    expect = stats.null_percentile(observed, null)
    np.testing.assert_allclose(ds["null_percentile"].values, expect.percentile, rtol=1e-6)
    np.testing.assert_allclose(ds["null_p"].values, expect.p_greater, rtol=1e-6)
    assert 0 <= ds.attrs["null"]["extent_p"] <= 1


def test_parcel_scores_work_like_voxel_maps(lnm):
    ds = lnm.run(
        "specificity",
        cases=CASES,
        controls=CONTROLS,
        maps="afnm",
        atlas="Seitzman2018",
        n_permutations=N_PERM,
    ).outputs
    assert ds["t"].dims == ("region",) and ds.sizes["region"] > 200
    a = _maps(lnm, "neglect", "afnmap", "afnm", "Seitzman2018").values
    b = _maps(lnm, "controls", "afnmap", "afnm", "Seitzman2018").values
    y = np.concatenate([a, b])
    expect = stats.specificity(y, np.r_[np.ones(len(a)), np.zeros(len(b))].astype(bool), n_perm=N_PERM)
    np.testing.assert_allclose(ds["t"].values, expect.statistic, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ lake behaviour


def test_reruns_skip_and_recompute_replaces(lnm):
    kw = {"cases": CASES, "score": "neglect_score", "n_permutations": N_PERM}
    lnm.run("symptom", **kw)
    again = lnm.run("symptom", **kw)
    assert again.skipped and not again.computed
    before = lnm.catalog.query(method="symptom", statistic="r")
    redo = lnm.run("symptom", recompute=True, **kw)
    after = lnm.catalog.query(method="symptom", statistic="r")
    assert redo.computed and len(after) == len(before)
    assert set(after["store_uri"]) != set(before["store_uri"])


def test_cli_writes_bids_files_and_the_figure(lnm, tmp_path, capsys):
    out = tmp_path / "bids"
    rc, stdout, stderr = _cli(
        capsys,
        "--lake",
        lnm.url,
        "stats",
        "specificity",
        "--cases",
        CASES,
        "--controls",
        CONTROLS,
        "--n-permutations",
        str(N_PERM),
        "--bids-out",
        out,
    )
    assert rc == 0, stderr
    assert "specificity:" in stdout
    (tmap,) = out.glob("*desc-t_statmap.nii.gz")
    ds = lnm.run("specificity", cases=CASES, controls=CONTROLS, n_permutations=N_PERM).outputs
    img = nib.load(tmap).get_fdata()
    ijk = ds["ijk"].values.astype(int)
    np.testing.assert_array_equal(img[tuple(ijk.T)].astype(np.float32), ds["t"].values)
    meta = json.loads(tmap.with_name(tmap.name.replace(".nii.gz", ".json")).read_text())
    assert meta["Inputs"]["n_cases"] == 16 and meta["Parameters"]["n_permutations"] == N_PERM
    rc, stdout, stderr = _cli(
        capsys,
        "--lake",
        lnm.url,
        "stats",
        "predict",
        "--cases",
        CASES,
        "--score",
        "neglect_score",
        "--n-permutations",
        str(N_PERM),
        "--bids-out",
        out,
    )
    assert rc == 0, stderr
    (table,) = out.glob("*method-predict*_stats.tsv")
    assert len(pd.read_csv(table, sep="\t")) == 16
    # the figures and the report of the results just made, selected by the same options
    sel = ["--cases", CASES, "--controls", CONTROLS, "--n-permutations", str(N_PERM)]
    for method, extra in (
        ("specificity", sel),
        ("predict", sel[:2] + ["--score", "neglect_score", *sel[4:]]),
    ):
        png = tmp_path / f"{method}.png"
        rc, stdout, stderr = _cli(capsys, "--lake", lnm.url, "plot", method, *extra, "--out", png)
        assert rc == 0, stderr
        pixels = plt.imread(png)[..., :3]
        assert pixels.std() > 0.05  # not blank: a brain map or a scatter
        page = tmp_path / f"{method}.html"
        # the store of the result just drawn (other tests made other results of this test in the lake)
        rows = lnm.catalog.query(method=method).sort_values("created")
        store = str(rows["store_uri"].iloc[-1])
        rc, stdout, stderr = _cli(
            capsys, "--lake", lnm.url, "report", "--method", method, "--store", store, "--out", page
        )
        assert rc == 0, stderr
        html = page.read_text()
        assert html.count("<img") >= 1 and "Maps tested" in html
    # a result never computed: one line saying how to compute it
    rc, stdout, stderr = _cli(
        capsys, "--lake", lnm.url, "plot", "specificity", *sel[:4], "--n-permutations", "7", "--out", png
    )
    assert rc == 2 and "lakepipe stats specificity" in stderr
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------ bad input


def _refused(lake, capsys, *args):
    runs = len(lake.catalog.runs())
    rc, _, stderr = _cli(capsys, "--lake", lake.url, "stats", *args)
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("lakepipe: error:"), stderr
    assert len(lake.catalog.runs()) == runs  # nothing registered, not even a run record
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(lnm, capsys):
    assert "at least 3" in _refused(
        lnm,
        capsys,
        "specificity",
        "--cases",
        "cohort=neglect,participants=case01+case02",
        "--controls",
        CONTROLS,
    )
    line = _refused(lnm, capsys, "symptom", "--cases", CASES, "--score", "constant")
    assert "constant" in line
    line = _refused(lnm, capsys, "symptom", "--cases", CASES, "--score", "partial")
    assert "missing" in line and "sub-case02" in line and "sub-case05" in line
    line = _refused(
        lnm, capsys, "specificity", "--cases", CASES, "--controls", CONTROLS, "--covariates", "is_case"
    )
    assert "is_case" in line and "collinear" in line
    assert "no score column" in _refused(lnm, capsys, "symptom", "--cases", CASES, "--score", "nope")
    assert "share maps" in _refused(lnm, capsys, "specificity", "--cases", CASES, "--controls", CASES)
    assert "--controls" in _refused(lnm, capsys, "specificity", "--cases", CASES)
    assert "KEY=VALUE" in _refused(lnm, capsys, "sensitivity", "--cases", "neglect")


def test_maps_of_two_connectomes_are_refused(lnm, capsys, tutorial, copy_lake):
    from lakepipe.ingest import ingest_connectome

    lake = Lake(copy_lake(lnm))
    ingest_connectome(lake, tutorial.connectome, name="other")
    lake.run("fnm", cohort="controls", connectome="other")
    line = _refused(lake, capsys, "specificity", "--cases", CASES, "--controls", CONTROLS)
    assert "2 connectomes" in line and "other" in line and "tutorial" in line


def test_more_permutations_than_relabellings_run_them_all(lnm):
    small = "cohort=neglect,participants=case01+case02+case03"
    ctrl = "cohort=controls,participants=ctrl01+ctrl02+ctrl03"
    res = lnm.run("specificity", cases=small, controls=ctrl, n_permutations=5000)
    assert "20 distinct relabellings" in res.message and "exact" in res.message
    ds = res.outputs
    assert ds.attrs["permutations"]["exact_enumeration"] and ds.attrs["permutations"]["n_permutations"] == 19
    assert ds["p_fwe"].values.min() >= 1 / 20
