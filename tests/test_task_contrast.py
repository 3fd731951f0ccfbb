"""Task contrasts on the parcel series of an HCP release (``lakepipe task contrast``, ``task-contrast``).

The tutorial's synthetic HCP release (NMA layout) has a planted MOTOR effect: left-hand movement raises
the RIGHT hemisphere's hand parcels, right-hand movement the LEFT ones. Checked here:

- the pure compute (frames, condition means, contrasts, one-sample t, network groups) against
  straightforward loops and scipy;
- the lake's per-participant contrast against an NMA-style numpy loop over the release's files (mean
  model) and against nilearn's ``FirstLevelModel`` (glm model);
- the planted contrast is recovered with the right sign and hemisphere, from Python and the command
  line (TSV, bar plot), and the rest runs give the resting FC of the same parcels;
- bad input: one line, exit status 2, nothing registered.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lakepipe.cli.main import main
from lakepipe.compute.taskcontrast import (
    apply_contrast,
    condition_frames,
    condition_means,
    contrast_vector,
    group_summary,
    one_sample_t,
    parse_contrast,
)
from lakepipe.lake import Lake

TR = 0.72
MOTOR_RUNS = {5: "tfMRI_MOTOR_RL", 6: "tfMRI_MOTOR_LR"}
U32 = 2.0**-24


# ------------------------------------------------------------------------------------------ compute


def test_frames_means_contrasts_and_t_against_loops():
    rng = np.random.default_rng(0)
    onsets, durations = np.array([3.1, 20.0, 7.2 * 10]), np.array([12.0, 12.0, 3.0])
    frames, dropped = condition_frames(onsets, durations, TR, 5, 108)
    ref = set()
    n_out = 0
    for o, d in zip(onsets, durations, strict=True):
        for k in range(int(np.ceil(round(d / TR, 6)))):  # NMA: floor(onset / TR) + arange(ceil(d / TR))
            f = int(np.floor(round(o / TR, 6))) + 5 + k
            if f < 108:
                ref.add(f)
            else:
                n_out += 1
    assert frames.tolist() == sorted(ref) and dropped == n_out > 0
    assert condition_frames([7.2], [0.72], TR, 0, 50)[0].tolist() == [10]  # an exact multiple of the TR

    x = 1000 + rng.standard_normal((108, 4)) * 10
    sets = [frames, np.array([0, 1, 2]), np.array([], int)]
    means = condition_means(x, sets, "psc")
    for c, f in enumerate(sets):
        for p in range(4):
            m = x[:, p].mean()
            want = np.mean([100 * (x[t, p] / m - 1) for t in f]) if len(f) else np.nan
            assert np.allclose(means[c, p], want, equal_nan=True, rtol=0, atol=1e-10)
    raw = condition_means(x, sets[:2], "raw")
    assert np.allclose(raw[1], x[[0, 1, 2]].mean(0) - x.mean(0))
    with pytest.raises(ValueError, match="positive mean"):
        condition_means(x - 1000, sets[:1], "psc")

    w = parse_contrast("2*t - lh - rh", ["lh", "rh", "t", "cue"])
    assert w == {"t": 2.0, "lh": -1.0, "rh": -1.0}
    v = contrast_vector(w, ["lh", "rh", "t", "cue"])
    m = rng.standard_normal((3, 4, 5))
    assert np.allclose(apply_contrast(m, v), 2 * m[:, 2] - m[:, 0] - m[:, 1])
    m[0, 3, 0] = np.nan  # a condition without frames and without weight does not matter
    assert np.isfinite(apply_contrast(m, v)[0, 0])
    m[0, 0, 0] = np.nan
    assert np.isnan(apply_contrast(m, v)[0, 0])
    with pytest.raises(ValueError, match="unknown condition 'xx'.*known: lh, rh, t, cue"):
        parse_contrast("lh - xx", ["lh", "rh", "t", "cue"])
    with pytest.raises(ValueError, match="cannot read"):
        parse_contrast("lh rh", ["lh", "rh"])

    vals = rng.standard_normal((9, 6)) + np.arange(6)
    mean, sd, t, p = one_sample_t(vals)
    ref_t = stats.ttest_1samp(vals, 0.0, axis=0)
    assert np.allclose(t, ref_t.statistic) and np.allclose(p, ref_t.pvalue)
    assert np.allclose(sd, vals.std(axis=0, ddof=1)) and np.allclose(mean, vals.mean(axis=0))
    groups = [("A", "L"), ("A", "R"), ("B", "L"), ("A", "L"), ("B", "L"), ("A", "R")]
    keys, per, counts = group_summary(vals, groups)
    frame = (
        pd.DataFrame(vals.T, index=pd.MultiIndex.from_tuples(groups)).groupby(level=[0, 1], sort=False).mean()
    )
    assert keys == list(frame.index) and np.allclose(per, frame.to_numpy().T)
    assert counts.tolist() == [2, 2, 2]


def test_one_sample_t_is_calibrated_under_the_null():
    """Under the null (no effect, normal noise) two-sided p is uniform: P(p < a) ~ a."""
    rng = np.random.default_rng(1)
    _, _, _, p = one_sample_t(rng.standard_normal((8, 20000)))
    for a in (0.01, 0.05, 0.2):
        # binomial sd of a rate over 20000 draws: sqrt(a (1 - a) / 20000) <= 0.0036; 4 sd margin
        assert abs(np.mean(p < a) - a) < 4 * np.sqrt(a * (1 - a) / 20000)


# ------------------------------------------------------------------------------------- HCP lake


@pytest.fixture(scope="module")
def hcp(tmp_path_factory):
    from lakepipe.tutorial import write_tutorial

    tut = write_tutorial(
        tmp_path_factory.mktemp("hcp") / "t",
        participants=1,
        subjects=1,
        timepoints=5,
        batch_size=1,
        lnm=False,
        parcel_timeseries=False,
        hcp=True,
    )
    return {"root": tut.hcp, "info": json.loads(tut.manifest.read_text())["hcp"]}


@pytest.fixture(scope="module")
def lake(hcp, tmp_path_factory):
    from lakepipe.ingest import ingest_connectome

    lake = Lake(str(tmp_path_factory.mktemp("lake") / "lake"))
    ingest_connectome(lake, hcp["root"], name="motor", task="MOTOR")
    ingest_connectome(lake, hcp["root"], name="rest")  # the resting runs (default)
    return lake


def nma_contrast(root: Path, subject: str, weights: dict[str, float], delay: int) -> np.ndarray:
    """NMA's seminar recipe, written out: per MOTOR run, percent signal change, the mean of each
    condition's delayed frames (NMA's frame formula), the weighted sum; then the mean over the runs."""
    per_run = []
    for k, run in MOTOR_RUNS.items():
        ts = np.load(
            root / "subjects" / subject / "timeseries" / f"bold{k}_Atlas_MSMAll_Glasser360Cortical.npy"
        )
        ts = ts.astype(np.float64)
        n_t = ts.shape[1]
        pct = 100 * (ts / ts.mean(axis=1, keepdims=True) - 1)
        total = np.zeros(ts.shape[0])
        for cond, w in weights.items():
            ev = np.loadtxt(root / "subjects" / subject / "EVs" / run / f"{cond}.txt", ndmin=2)
            frames = set()
            for onset, duration, _ in ev:
                start = int(np.floor(onset / TR + 1e-6))
                for j in range(int(np.ceil(duration / TR - 1e-6))):
                    if start + delay + j < n_t:
                        frames.add(start + delay + j)
            total += w * pct[:, sorted(frames)].mean(axis=1)
        per_run.append(total)
    return np.mean(per_run, axis=0)


def test_mean_model_equals_the_seminars_loop_and_recovers_the_planted_contrast(lake, hcp):
    res = lake.run("task-contrast", connectome="motor", task="MOTOR", contrast="lh - rh")
    ds = res.outputs
    assert res.computed and ds.sizes["participant"] == 6 and ds.sizes["region"] == 360
    assert ds.attrs["parameters"]["delay_frames"] == 5 and np.isclose(
        ds.attrs["parameters"]["hrf_delay_s"], 5 * TR
    )
    assert (ds["n_runs"].values == 2).all()
    for i, subject in enumerate(hcp["info"]["subjects"]):
        ref = nma_contrast(hcp["root"], subject, {"lh": 1.0, "rh": -1.0}, delay=5)
        # the lake stores float32 unit-norm series: raw = unit * scale + mean is off by ~2u of |raw| (~1e4),
        # i.e. ~1.2e-7 relative, 1.2e-5 in % units per frame; the stored float32 result adds u |value|;
        # 1e-3 % leaves a wide margin while a wrong frame (one block frame ~ 0.1 %) fails it
        assert np.max(np.abs(ds["subject_contrast"].values[i] - ref)) < 1e-3, subject

    names = ds["region_name"].values
    truth = hcp["info"]["truth"]["effects_percent"]
    right_hand = np.isin(names, list(truth["lh"]))  # R_ hand parcels: raised by left-hand movement
    left_hand = np.isin(names, list(truth["rh"]))
    t, mean = ds["contrast_t"].values, ds["contrast_mean"].values
    print(
        f"\nmean model lh - rh: right-hemisphere hand parcels {mean[right_hand].mean():+.2f} % "
        f"(t {t[right_hand].min():.1f} to {t[right_hand].max():.1f}), left {mean[left_hand].mean():+.2f} % "
        f"(t {t[left_hand].min():.1f} to {t[left_hand].max():.1f})"
    )
    assert (mean[right_hand] > 0).all() and (mean[left_hand] < 0).all()
    assert np.median(t[right_hand]) > 3 and np.median(t[left_hand]) < -3
    # parcels without any planted effect: the contrast is small
    planted = np.isin(names, [n for cond in truth.values() for n in cond])
    assert np.abs(mean[~planted]).mean() < 0.25 * np.abs(mean[right_hand | left_hand]).mean()

    from lakepipe.methods.task_contrast import METHOD

    net = METHOD.network_table(ds).set_index(["network", "hemisphere"])
    print(net.loc["Somatomotor"][["n_regions", "mean", "sem", "t", "p"]].to_string())
    assert net.loc[("Somatomotor", "R"), "mean"] > 0 > net.loc[("Somatomotor", "L"), "mean"]
    assert net.loc[("Somatomotor", "R"), "p"] < 0.01 and net.loc[("Somatomotor", "L"), "p"] < 0.01

    again = lake.run("task-contrast", connectome="motor", task="MOTOR", contrast="lh - rh", outputs=False)
    assert again.skipped and not again.computed


def test_glm_equals_nilearns_first_level_model_and_recovers_the_contrast(lake, hcp):
    import nibabel as nib
    from nilearn.glm.first_level import FirstLevelModel

    from lakepipe.methods.task_contrast import glm_effect

    root = hcp["root"]
    ts = np.load(root / "subjects" / "0" / "timeseries" / "bold5_Atlas_MSMAll_Glasser360Cortical.npy")
    ts = ts.astype(np.float64)
    rows = []
    for ev_file in sorted((root / "subjects" / "0" / "EVs" / "tfMRI_MOTOR_RL").glob("*.txt")):
        for onset, duration, amplitude in np.loadtxt(ev_file, ndmin=2):
            rows.append((ev_file.stem, onset, duration, amplitude))
    events = pd.DataFrame(rows, columns=["condition", "onset", "duration", "amplitude"])
    mine = glm_effect(ts.T, events, TR, {"lh": 1.0, "rh": -1.0})
    # the parcels as the voxels of a (360, 1, 1, T) image, every one in the mask
    img = nib.Nifti1Image(ts[:, None, None, :], np.eye(4))
    mask = nib.Nifti1Image(np.ones((360, 1, 1), np.int8), np.eye(4))
    flm = FirstLevelModel(
        t_r=TR, hrf_model="glover", drift_model="cosine", high_pass=0.01, noise_model="ar1",
        signal_scaling=0, mask_img=mask,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flm.fit(
            img,
            events=events.rename(columns={"condition": "trial_type"})[["onset", "duration", "trial_type"]],
        )
        ref = np.asarray(flm.compute_contrast("lh - rh", output_type="effect_size").dataobj).ravel()
    # the same float64 computation on the same numbers: equal to a few ulps of the effects' scale
    assert np.max(np.abs(mine - ref)) <= 1e-9 * np.abs(ref).max()

    ds = lake.run("task-contrast", connectome="motor", task="MOTOR", contrast="lh - rh", model="glm").outputs
    assert "condition_mean" not in ds and ds.attrs["parameters"]["model"] == "glm"
    # subject 0's value is the mean of its two runs' effects; run RL as computed above from the files
    # (the lake's float32 storage: ~1e-5 % as in the mean model)
    names = ds["region_name"].values
    truth = hcp["info"]["truth"]["effects_percent"]
    right_hand, left_hand = np.isin(names, list(truth["lh"])), np.isin(names, list(truth["rh"]))
    t = ds["contrast_t"].values
    print(
        f"\nglm lh - rh: median t right-hemisphere hand parcels {np.median(t[right_hand]):.1f}, "
        f"left {np.median(t[left_hand]):.1f}"
    )
    assert (ds["contrast_mean"].values[right_hand] > 0).all() and (
        ds["contrast_mean"].values[left_hand] < 0
    ).all()
    assert np.median(t[right_hand]) > 3 and np.median(t[left_hand]) < -3
    lr = np.load(root / "subjects" / "0" / "timeseries" / "bold6_Atlas_MSMAll_Glasser360Cortical.npy")
    rows = []
    for ev_file in sorted((root / "subjects" / "0" / "EVs" / "tfMRI_MOTOR_LR").glob("*.txt")):
        for onset, duration, amplitude in np.loadtxt(ev_file, ndmin=2):
            rows.append((ev_file.stem, onset, duration, amplitude))
    other = glm_effect(
        lr.astype(np.float64).T, pd.DataFrame(rows, columns=events.columns), TR, {"lh": 1.0, "rh": -1.0}
    )
    assert np.max(np.abs(ds["subject_contrast"].values[0] - (mine + other) / 2)) < 1e-3


def test_command_line_tsv_bars_and_resting_fc(lake, tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "bids"
    argv = ["--lake", lake.url, "task", "contrast", "--connectome", "motor", "--task", "MOTOR",
            "--contrast", "lf - rf", "--hrf-delay", "5", "--bids-out", str(out)]  # fmt: skip
    assert main(["-q", *argv]) == 0
    text = capsys.readouterr().out
    assert "task contrast MOTOR 'lf - rf'" in text and "6 participants" in text, text
    stem = "task-MOTOR_contrast-lfMinusrf_method-taskcontrast"
    group = pd.read_csv(out / f"{stem}_desc-group_parcelstats.tsv", sep="\t")
    nets = pd.read_csv(out / f"{stem}_desc-networks_parcelstats.tsv", sep="\t")
    subjects = pd.read_csv(out / f"{stem}_desc-subjects_parcelstats.tsv", sep="\t")
    assert len(group) == 360 and subjects.shape == (6, 361)
    sidecar = json.loads((out / f"{stem}_desc-group_parcelstats.json").read_text())
    assert sidecar["Parameters"]["delay_frames"] == round(5 / TR) and sidecar["NumberOfSubjects"] == 6
    # feet: the left foot raises the right paracentral (5m) parcel
    assert group.set_index("name").loc["R_5m", "t"] > 3 and group.set_index("name").loc["L_5m", "t"] < -3
    assert set(nets.columns) >= {"network", "hemisphere", "mean", "sem", "t", "p"}

    png, tsv = tmp_path / "bars.png", tmp_path / "bars.tsv"
    plot = ["--lake", lake.url, "plot", "task", "--connectome", "motor", "--task", "MOTOR", "--contrast",
            "lf - rf", "--hrf-delay", "5", "--out", str(png), "--tsv", str(tsv)]  # fmt: skip
    assert main(["-q", *plot]) == 0
    px = mpimg.imread(io.BytesIO(png.read_bytes()))[..., :3]
    coloured = np.mean(px.max(axis=-1) - px.min(axis=-1) > 0.15)  # the hemispheres' bar colours
    assert px.std() > 0.05 and coloured > 0.005, coloured
    assert pd.read_csv(tsv, sep="\t").equals(nets)

    fc = lake.run("parcellate", connectome="rest").outputs
    z = fc["fcgroupz"].values
    nets_ = fc["region_network"].values
    same = (nets_[:, None] == nets_[None, :]) & ~np.eye(360, dtype=bool)
    assert fc.attrs["n_subjects"] == 6 and z[same].mean() > z[~same].mean() + 0.2


# ------------------------------------------------------------------------------------------ bad input


def _rejected(capsys, argv: list[str], *needles: str) -> str:
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("connectome", "task", "contrast", "needles"),
    [
        ("motor", "MOTOR", "lh - xx", ["unknown condition 'xx'", "known: cue, lf, lh, rf, rh, t"]),
        ("motor", "WM", "lh - rh", ["no runs of task 'WM'", "it has: MOTOR"]),
        ("rest", "MOTOR", "lh - rh", ["no runs of task 'MOTOR'", "it has: REST"]),
        ("motor", "MOTOR", "lh rh", ["cannot read the contrast"]),
    ],
)
def test_bad_contrasts_are_refused(lake, capsys, connectome, task, contrast, needles):
    before = len(lake.catalog.query(method="task-contrast"))
    argv = [
        "--lake",
        lake.url,
        "task",
        "contrast",
        "--connectome",
        connectome,
        "--task",
        task,
        "--contrast",
        contrast,
    ]
    _rejected(capsys, argv, *needles)
    assert len(lake.catalog.query(method="task-contrast")) == before


def test_event_files_outside_the_run_are_refused(hcp, tmp_path, capsys):
    root = tmp_path / "hcp"
    (root / "subjects").mkdir(parents=True)
    shutil.copy(hcp["root"] / "regions.npy", root / "regions.npy")
    (root / "subjects_list.txt").write_text("0\n")
    shutil.copytree(hcp["root"] / "subjects" / "0", root / "subjects" / "0")
    ev = root / "subjects" / "0" / "EVs" / "tfMRI_MOTOR_LR" / "lh.txt"
    ev.write_text(ev.read_text() + "200.0\t12.0\t1\n")  # ends at 212 s; the run: 284 x 0.72 = 204.5 s
    lake = tmp_path / "lake"
    argv = ["--lake", str(lake), "ingest", "connectome", str(root), "--name", "bad", "--task", "MOTOR"]
    _rejected(capsys, argv, "lh.txt", "ends at 212 s, after the run (284 frames x 0.72 s = 204.48 s)")
    assert not list(lake.rglob("*.zarr")) if lake.exists() else True
    # and the release without its region table is not an HCP release
    (root / "regions.npy").unlink()
    _rejected(capsys, [*argv[:-2], "--from", "hcp"], "needs a region table")
