"""The tutorial's synthetic HCP release (``hcp/``, Neuromatch Academy layout): files, networks, MOTOR effect.

Read the way NMA's loaders read it (``np.load`` of ``bold<k>_...npy``, EVs with ``np.loadtxt(...,
ndmin=2, unpack=True)``, frames ``floor(onset / TR) + arange(ceil(duration / TR))``), then plain numpy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lakepipe.tutorial import write_tutorial
from lakepipe.tutorial.hcp import write_hcp

BASE = {"participants": 1, "subjects": 1, "timepoints": 5, "batch_size": 1, "lnm": False}
TR = 0.72
RUNS = [
    "rfMRI_REST1_LR",
    "rfMRI_REST1_RL",
    "rfMRI_REST2_LR",
    "rfMRI_REST2_RL",
    "tfMRI_MOTOR_RL",
    "tfMRI_MOTOR_LR",
]
CONDITIONS = ["lf", "rf", "lh", "rh", "t", "cue"]


@pytest.fixture(scope="module")
def tut(tmp_path_factory):
    return write_tutorial(tmp_path_factory.mktemp("hcp") / "t", **BASE, hcp=True)


@pytest.fixture(scope="module")
def info(tut) -> dict:
    return json.loads(tut.manifest.read_text())["hcp"]


@pytest.fixture(scope="module")
def regions(tut) -> np.ndarray:
    return np.load(tut.hcp / "regions.npy")


def load_single_timeseries(root, subject: str, bold_run: int, remove_mean: bool = True) -> np.ndarray:
    """NMA's loader (1-based run index across all runs)."""
    ts = np.load(
        root / "subjects" / subject / "timeseries" / f"bold{bold_run}_Atlas_MSMAll_Glasser360Cortical.npy"
    )
    ts = ts.astype(np.float64)
    if remove_mean:
        ts -= ts.mean(axis=1, keepdims=True)
    return ts


def load_evs(root, subject: str, run_name: str, condition: str) -> dict:
    ev = np.loadtxt(root / "subjects" / subject / "EVs" / run_name / f"{condition}.txt", ndmin=2, unpack=True)
    return dict(zip(["onset", "duration", "amplitude"], ev, strict=True))


def condition_frames(ev: dict, skip: int = 0) -> np.ndarray:
    """NMA's frames of a condition, shifted by ``skip`` frames (the haemodynamic delay)."""
    start = np.floor(ev["onset"] / TR).astype(int)
    duration = np.ceil(ev["duration"] / TR).astype(int)
    return np.concatenate([s + skip + np.arange(0, d) for s, d in zip(start, duration, strict=True)])


def test_layout(tut, info, regions):
    root = tut.hcp
    subjects = (root / "subjects_list.txt").read_text().split()
    assert subjects == [str(s) for s in range(6)] == info["subjects"]
    assert regions.shape == (360, 3)  # name, network, myelin, as NMA's regions.npy
    names, networks = regions[:, 0], regions[:, 1]
    assert all(n.startswith("R_") for n in names[:180]) and all(n.startswith("L_") for n in names[180:])
    assert [n[2:] for n in names[:180]] == [n[2:] for n in names[180:]]  # hemispheres in the same order
    assert len(set(names)) == 360 and len(set(networks)) == 12
    assert (networks[:180] == networks[180:]).all()
    assert np.char.str_len(networks.astype(str)).max() <= 12  # NMA's truncated network names
    assert (regions[:, 2].astype(float) > 0).all()
    table = (root / "regions.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["index", "name", "network", "hemisphere", "myelin"]
    for line, name in zip(table[1:], names, strict=True):
        _, n, _, hemi, _ = line.split("\t")
        assert n == name and hemi == ("Right" if name.startswith("R_") else "Left")
    for s in subjects:
        for k, run in enumerate(RUNS, start=1):
            ts = np.load(
                root / "subjects" / s / "timeseries" / f"bold{k}_Atlas_MSMAll_Glasser360Cortical.npy"
            )
            assert ts.dtype == np.float32 and ts.shape == (360, 284 if "MOTOR" in run else 240)
            assert 5000 < np.median(ts) < 15000  # HCP-like grand-mean scaling
        for run in RUNS[4:]:
            blocks = []
            for cond in CONDITIONS:
                ev = load_evs(root, s, run, cond)
                assert (ev["amplitude"] == 1).all() and len(ev["onset"]) == (10 if cond == "cue" else 2)
                assert np.allclose(ev["duration"], 3.0 if cond == "cue" else 12.0)
                blocks += list(zip(ev["onset"], ev["onset"] + ev["duration"], strict=True))
            blocks.sort()
            assert all(a[1] <= b[0] + 0.2 for a, b in zip(blocks, blocks[1:], strict=False))  # no overlap
            assert blocks[-1][1] < 284 * TR


def test_resting_correlations_follow_networks(tut, regions):
    networks = regions[:, 1]
    same = networks[:, None] == networks[None, :]
    off = ~np.eye(360, dtype=bool)
    homotopic = np.zeros((360, 360), bool)
    homotopic[np.arange(180), np.arange(180) + 180] = True
    for s in range(6):
        c = np.corrcoef(np.concatenate([load_single_timeseries(tut.hcp, str(s), k) for k in (1, 2, 3, 4)], 1))
        within, between = c[same & off].mean(), c[~same].mean()
        assert within > 0.25 and abs(between) < 0.1, (s, within, between)
        assert c[homotopic].mean() > 0.25
    # a correlation of the latent model carried over: default mode and dorsal attention anticorrelated
    dmn, dan = networks == "Default", networks == "Dorsal-atten"
    assert c[np.ix_(dmn, dan)].mean() < -0.05


def test_motor_contrast_is_lateralised(tut, info, regions):
    """lh - rh (frames shifted by the delay): positive in right somatomotor parcels, negative in left."""
    names, networks = regions[:, 0], regions[:, 1]
    sm = networks == "Somatomotor"
    right, left = sm & np.char.startswith(names, "R_"), sm & np.char.startswith(names, "L_")
    truth = info["truth"]
    hand_r = np.isin(names, list(truth["effects_percent"]["lh"]))
    hand_l = np.isin(names, list(truth["effects_percent"]["rh"]))
    assert hand_r.any() and (hand_r <= right).all() and (hand_l <= left).all()  # somatomotor parcels
    assert all(n.startswith("R_") for n in names[hand_r]) and all(n.startswith("L_") for n in names[hand_l])
    delay = truth["delay_frames"]
    assert delay == round(truth["delay_s"] / TR) and 3 <= truth["delay_s"] <= 7

    def contrast(skip: int) -> np.ndarray:
        """Subjects x (right SM, left SM, right hand, left hand) lh - rh, % signal change."""
        effects = []
        for s in info["subjects"]:
            diffs = []
            for k, run in ((5, "tfMRI_MOTOR_RL"), (6, "tfMRI_MOTOR_LR")):
                ts = load_single_timeseries(tut.hcp, s, k, remove_mean=False)
                pct = 100 * (ts - ts.mean(axis=1, keepdims=True)) / ts.mean(axis=1, keepdims=True)
                lh = condition_frames(load_evs(tut.hcp, s, run, "lh"), skip=skip)
                rh = condition_frames(load_evs(tut.hcp, s, run, "rh"), skip=skip)
                lh, rh = lh[lh < ts.shape[1]], rh[rh < ts.shape[1]]
                diffs.append(pct[:, lh].mean(axis=1) - pct[:, rh].mean(axis=1))
            d = np.mean(diffs, axis=0)
            effects.append([d[right].mean(), d[left].mean(), d[hand_r].mean(), d[hand_l].mean()])
        return np.array(effects)

    e, e0 = contrast(delay), contrast(0)
    lateral = e[:, 2] - e[:, 3]
    t = lateral.mean() / lateral.std(ddof=1) * np.sqrt(len(lateral))
    print(
        "\nlh - rh (% signal), delay-shifted frames: right SM "
        + " ".join(f"{v:+.2f}" for v in e[:, 0])
        + " | left SM "
        + " ".join(f"{v:+.2f}" for v in e[:, 1])
        + f" | hand parcels R {e[:, 2].mean():+.2f} L {e[:, 3].mean():+.2f}"
        + f" (unshifted R {e0[:, 2].mean():+.2f} L {e0[:, 3].mean():+.2f})"
        + f" | t over subjects of R - L hand {t:.1f}"
    )
    assert ((e[:, 0] > 0) & (e[:, 1] < 0)).sum() >= 5  # most subjects, both hemispheres
    assert (e[:, 2] > 0).all() and (e[:, 3] < 0).all()  # the parcels that carry it: every subject
    assert t > 5
    # the response takes a few seconds to rise: frames not shifted by the delay see less of it
    assert (e[:, 2] - e[:, 3]).mean() > 1.2 * (e0[:, 2] - e0[:, 3]).mean()


def test_deterministic_and_nested(tut, tmp_path):
    write_hcp(tmp_path / "hcp", 0, 2, 240)
    for rel in sorted(p.relative_to(tmp_path / "hcp") for p in (tmp_path / "hcp").rglob("*") if p.is_file()):
        if rel.name != "subjects_list.txt":  # the same subjects whatever their number, byte for byte
            assert (tmp_path / "hcp" / rel).read_bytes() == (tut.hcp / rel).read_bytes(), rel
