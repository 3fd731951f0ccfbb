"""Atlases derived from the connectome (``lakepipe atlas derive``, method ``derive-atlas``).

- the per-subject reduction equals nilearn's (``_fast_svd`` / ``_mask_and_reduce_single``);
- the streamed decomposition equals nilearn's ``DictLearning.fit`` / ``CanICA.fit`` on the same images;
- on the tutorial connectome the components recover the ground-truth network maps (each true network
  matched by a component with spatial correlation >= 0.6), and the derived atlas works with
  parcellate, afnm, plot fc and export;
- bad input: one line, exit status 2, nothing registered.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lakepipe.cli.main import main
from lakepipe.compute.decomposition import reduce_subject, regions_to_labels, spatial_correlation
from lakepipe.io.stores import grid_from_attrs
from lakepipe.io.stores.atlases import atlas_maps, component_names, read_atlas
from lakepipe.lake import Lake
from lakepipe.methods.common import atlas_identity

U32 = 2.0**-24
#: nilearn's lars solver (same maps as cd here, 40 % faster) and plain connected components (no random walker)
FAST_DICT = {"dict_method": "lars", "extractor": "connected_components"}


# ------------------------------------------------------------------------------------------ compute


def _structured(rng, t=30, v=400, k=3):
    """k planted smooth-ish maps with strong courses plus noise: a clear gap after k singular values."""
    maps = rng.standard_normal((k, v)) * np.linspace(3, 1, k)[:, None]
    return rng.standard_normal((t, k)) @ maps * 4 + rng.standard_normal((t, v))


def test_reduce_subject_equals_nilearns_svd():
    from nilearn.decomposition._base import _fast_svd

    rng = np.random.default_rng(0)
    x = _structured(rng).astype(np.float32)
    k = 3
    mine = reduce_subject(x, k)
    # nilearn's stage 1: U.T * S of the SVD of X.T (V, T); max(V, T) <= 500: LAPACK's full SVD
    u, s, _ = _fast_svd(x.T, k, random_state=0)
    ref = (u.T * s[:, None]).astype(np.float64)
    sv = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    gap = np.min(sv[:k] - sv[1 : k + 1])
    # float32 SVD: each singular vector is off by about u * sigma_1 / gap (Wedin), times sigma_i for
    # the scaled maps; 8x for the accumulation over T and V terms
    tol = 8 * U32 * sv[0] / gap * sv[0]
    assert mine.shape == (k, x.shape[1]) and mine.dtype == np.float32
    assert np.max(np.abs(mine - ref)) <= tol, (np.max(np.abs(mine - ref)), tol)
    # the sign rule (svd_flip): each map's largest |value| is positive
    assert np.all(mine[np.arange(k), np.argmax(np.abs(mine), axis=1)] > 0)
    # short runs keep all their frames, as nilearn's min(n_components, T)
    assert reduce_subject(x[:2], 5).shape == (2, x.shape[1])
    with pytest.raises(ValueError, match="n_components"):
        reduce_subject(x, 0)


@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_lasso_code_solves_sparse_encodes_problems(alpha):
    """Planted sparse codes on correlated atoms: every row's code meets the lasso's optimality
    conditions, and it is scikit-learn's ``sparse_encode`` (``lasso_cd``, a Lasso per row) within the
    distance its stopping rule allows, at no larger objective."""
    from sklearn.decomposition import sparse_encode

    from lakepipe.compute.decomposition import lasso_code

    rng = np.random.default_rng(3)
    k, f, n = 6, 40, 3000
    d = rng.standard_normal((k, f))
    d[1] += 0.8 * d[0]  # correlated atoms: coordinate descent needs many sweeps
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    planted = rng.standard_normal((n, k)) * (rng.random((n, k)) < 0.3) * 4
    x = (planted @ d + 0.2 * rng.standard_normal((n, f))).astype(np.float32)
    mine = lasso_code(x, d, alpha)
    x64 = x.astype(np.float64)
    # optimality (KKT): residual correlation alpha * sign(c) where c != 0, at most alpha in size where 0
    corr = (x64 - mine @ d) @ d.T
    nz = mine != 0
    assert 0.05 < nz.mean() < 0.95  # a real mix of zero and non-zero coefficients
    assert np.abs(corr[nz] - alpha * np.sign(mine[nz])).max() <= 1e-7 * alpha
    assert np.abs(corr[~nz]).max() <= alpha * (1 + 1e-7)
    # scikit-learn stops at a duality gap of tol ||x||^2 (tol 1e-4); the objective is strongly convex
    # with modulus lambda_min(D D.T), so its code lies within sqrt(2 gap / lambda_min) of the optimum
    ref = sparse_encode(x64, d, algorithm="lasso_cd", alpha=alpha)
    lam = np.linalg.eigvalsh(d @ d.T)[0]
    bound = np.sqrt(2 * 1e-4 * (x64**2).sum(axis=1) / lam)
    assert np.all(np.linalg.norm(mine - ref, axis=1) <= bound)

    def objective(c):
        return 0.5 * ((x64 - c @ d) ** 2).sum(axis=1) + alpha * np.abs(c).sum(axis=1)

    assert np.all(objective(mine) <= objective(ref) + 1e-9 * objective(ref))


def test_regions_to_labels_and_correlation_against_loops():
    rng = np.random.default_rng(1)
    maps = np.clip(rng.standard_normal((6, 5, 4, 3)), 0, None)
    maps[..., 2] = 0  # a region that never wins
    labels, counts = regions_to_labels(maps)
    ref = np.zeros(maps.shape[:3], int)
    for idx in np.ndindex(maps.shape[:3]):
        v = maps[idx]
        if v.max() > 0:
            ref[idx] = int(np.argmax(v)) + 1  # first maximum on ties
    assert np.array_equal(labels, ref)
    assert counts.tolist() == [int((ref == r + 1).sum()) for r in range(3)] and counts[2] == 0
    a, b = rng.standard_normal((3, 50)), rng.standard_normal((2, 50))
    r = spatial_correlation(a, b)
    for i in range(3):
        for j in range(2):
            # float64 sums of 50 products: well inside 1e-12
            assert abs(r[i, j] - np.corrcoef(a[i], b[j])[0, 1]) < 1e-12
    assert np.isnan(spatial_correlation(np.ones((1, 50)), b)).all()


def test_cropped_blockwise_smoothing_equals_nilearns():
    """Smoothing a subject a block of frames at a time inside the mask's box equals nilearn's
    ``smooth_img`` of the whole 4D image (exactly: the same filter sees the same zeros)."""
    from nilearn.image import smooth_img

    from lakepipe.methods.derive_atlas import SMOOTH_BLOCK, _smooth

    rng = np.random.default_rng(2)
    shape = (20, 22, 18)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    ijk = np.argwhere(np.linalg.norm(np.indices(shape).T - np.array([9, 12, 8]), axis=-1).T < 6)
    raw = rng.standard_normal((SMOOTH_BLOCK + 5, len(ijk))).astype(np.float32)
    vol = np.zeros((*shape, raw.shape[0]), np.float32)
    vol[tuple(ijk.T)] = raw.T
    ref = np.asarray(smooth_img(nib.Nifti1Image(vol, affine), 6.0).dataobj)[tuple(ijk.T)].T
    assert np.array_equal(_smooth(raw, ijk, shape, affine, 6.0), ref)


# ------------------------------------------------------------------------ streaming equals nilearn


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 624-voxel 4D NIfTI connectome (3 subjects x 30 frames, 3 planted networks) in a lake."""
    from lakepipe.ingest import ingest_connectome

    root = tmp_path_factory.mktemp("small")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    shape = (12, 12, 12)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -11
    ijk = np.indices(shape).reshape(3, -1).T
    mask = (np.linalg.norm(ijk - (np.array(shape) / 2 - 0.5), axis=1) <= 5.2).reshape(shape)
    centres = [(3, 6, 6), (8, 6, 6), (6, 3, 8)]
    maps = np.stack([np.exp(-np.sum((ijk - c) ** 2, 1) / (2 * 1.5**2)).reshape(shape) for c in centres])
    files = []
    for s in range(3):
        courses = rng.standard_normal((3, 30))
        data = 100 + 5 * np.einsum("kxyz,kt->xyzt", maps, courses) + rng.standard_normal((*shape, 30))
        path = src / f"sub-{s + 1:02d}_bold.nii.gz"
        nib.save(nib.Nifti1Image((data * mask[..., None]).astype(np.float32), affine), path)
        files.append(str(path))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), src / "brain_mask.nii.gz")
    lake = Lake(str(root / "lake"))
    ingest_connectome(lake, src, name="small", space="synthetic")
    return {"lake": lake, "files": files, "mask": nib.load(src / "brain_mask.nii.gz"), "mask_array": mask}


@pytest.mark.parametrize("method", ["dictlearning", "canica"])
def test_streaming_equals_nilearns_fit(small, method):
    from nilearn.decomposition import CanICA, DictLearning
    from scipy.optimize import linear_sum_assignment

    lake: Lake = small["lake"]
    extra = {"alpha": 1.0} if method == "dictlearning" else {}
    res = lake.run(
        "derive-atlas",
        connectome="small",
        n_components=3,
        decomposition=method,
        min_region_size=10,
        outputs=False,
        **extra,
    )
    assert res.details["n_subjects"] == 3 and res.details["n_regions"] >= 3
    mine = np.asarray(atlas_maps(lake.url, f"small{method}3")[:])[small["mask_array"]].T
    cls = DictLearning if method == "dictlearning" else CanICA
    est = cls(n_components=3, mask=small["mask"], random_state=0, smoothing_fwhm=4 if extra else 6, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(small["files"])
    ref = est.components_
    # The streamed reductions equal nilearn's up to float32 rounding (raw = unit * scale + mean), but
    # the group stage (coordinate-descent lasso, FastICA) amplifies rounding into another local
    # solution: with the default OpenBLAS kernel of an AVX-512 CPU nilearn's own fit and this one
    # differed by components' order and by matched |r| 0.9995 / 0.953 / 0.987 (DictLearning), while
    # with the Haswell kernel they were equal to 1e-4. So components are matched up to order and
    # sign (Hungarian on |r|): a wrong smoothing (2 or 10 mm instead of 4 or 6) gave matched means of
    # 0.64-0.91 (DictLearning) and 0.42-0.47 (CanICA) over both kernels, against a worst right
    # one of 0.98 (each >= 0.953): mean >= 0.95 sits between them with room on both sides, and
    # each >= 0.93 catches one lost component
    r = np.abs(np.corrcoef(mine, ref)[:3, 3:])
    rows, cols = linear_sum_assignment(-r)
    matched = r[rows, cols]
    assert matched.mean() >= 0.95 and matched.min() >= 0.93, np.round(r, 4)


# ---------------------------------------------------------------------------- tutorial connectome


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tutorial):
    from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions

    lake = Lake(str(tmp_path_factory.mktemp("derive") / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    return lake


def _network_match(lake: Lake, atlas: str) -> dict[str, tuple[float, str]]:
    """Each ground-truth network's best spatial correlation with a component, and which component."""
    from lakepipe.tutorial.model import build_latent_model

    model = build_latent_model(0)
    maps = np.asarray(atlas_maps(lake.url, atlas)[:])
    comps = maps[tuple(model.ijk.T)].T  # (K, V) on the model's voxels (the connectome's mask)
    r = spatial_correlation(model.loadings, comps)
    names = component_names(lake.url, atlas)
    return {
        n.name: (float(np.nanmax(r[k])), names[int(np.nanargmax(r[k]))]) for k, n in enumerate(model.networks)
    }


def _print_match(what: str, match: dict[str, tuple[float, str]]) -> None:
    print(f"\n{what}: " + ", ".join(f"{n} r={r:.2f} ({c})" for n, (r, c) in match.items()))


@pytest.mark.integration
def test_dictlearning_recovers_the_networks_and_the_atlas_works_everywhere(lake, tmp_path):
    res = lake.run("derive-atlas", connectome="tutorial", n_components=7, name="dict7", **FAST_DICT)
    match = _network_match(lake, "dict7")
    _print_match("DictLearning K=7, 8 subjects", match)
    assert all(r >= 0.6 for r, _ in match.values()), match
    # every network has its own component
    assert len({c for _, c in match.values()}) == len(match)

    atlas = read_atlas(lake.url, "dict7")
    assert atlas.kind == "derived" and atlas.n_regions == res.details["n_regions"] > 7
    assert set(atlas.table["network"]) == set(component_names(lake.url, "dict7"))  # component = network
    assert atlas.grid.same_as(grid_from_attrs(lake.open_connectome("tutorial").attrs["grid"]))
    labels = np.unique(atlas.labels)
    assert labels[0] == 0 and labels[1:].tolist() == atlas.table["index"].tolist()
    rows = lake.catalog.query(kind="atlas", atlas="dict7")
    assert set(rows["statistic"]) == {"dseg", "components"} and set(rows["method"]) == {"derive-atlas"}
    assert res.outputs["components"].shape == (*atlas.grid.shape, 7)

    # the same call again: already in the lake
    again = lake.run("derive-atlas", connectome="tutorial", n_components=7, name="dict7", **FAST_DICT)
    assert again.skipped and not again.computed

    # parcellate, afnm and plot fc work on it unchanged
    fc = lake.run("parcellate", connectome="tutorial", atlas="dict7").outputs
    assert fc["fcgroupz"].shape == (atlas.n_regions, atlas.n_regions)
    z = fc["fcgroupz"].values
    nets = fc["region_network"].values
    off = ~np.eye(len(nets), dtype=bool)
    same = (nets[:, None] == nets[None, :]) & off
    within, between = z[same].mean(), z[~same & off].mean()
    print(f"FC (mean z) between regions of one component {within:.3f}, of different components {between:.3f}")
    assert within > between + 0.1
    afnm = lake.run("afnm", cohort="tutorial", atlas="dict7", connectome="tutorial")
    assert afnm.computed and afnm.outputs.sizes["region"] == atlas.n_regions
    # its outputs record the atlas's content hash (from the store: the catalog rows of a derived
    # atlas name the connectome it came from), the one an FNM or AFNM re-run derives its keys from
    assert atlas_identity(lake, "dict7").sha256 == atlas.sha256 != ""
    recorded = lake.catalog.query(method="afnm", atlas="dict7")["inputs"]
    assert {r["atlas"] for r in recorded} == {atlas.sha256}
    out = tmp_path / "fc.png"
    assert (
        main(
            [
                "-q",
                "--lake",
                lake.url,
                "plot",
                "fc",
                "--connectome",
                "tutorial",
                "--atlas",
                "dict7",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.stat().st_size > 10_000
    files = lake.run(
        "derive-atlas",
        connectome="tutorial",
        n_components=7,
        name="dict7",
        bids_out=tmp_path / "bids",
        **FAST_DICT,
        outputs=False,
    ).files
    names = sorted(p.name for p in files)
    assert names == [
        "space-MNI152NLin6Asym_atlas-dict7_desc-components_statmap.nii.gz",
        "space-MNI152NLin6Asym_atlas-dict7_dseg.nii.gz",
        "space-MNI152NLin6Asym_atlas-dict7_dseg.tsv",
    ]
    assert nib.load(tmp_path / "bids" / names[0]).shape == (*atlas.grid.shape, 7)


@pytest.mark.integration
def test_canica_from_the_command_line(lake, capsys):
    argv = ["--lake", lake.url, "atlas", "derive", "--connectome", "tutorial", "--method", "canica",
            "--n-components", "7", "--subjects", "4", "--n-init", "1", "--extractor", "connected_components",
            "--name", "ica7"]  # fmt: skip
    assert main(["-q", *argv]) == 0
    out = capsys.readouterr().out
    assert "atlas 'ica7'" in out and "7 canica components of 4 subjects" in out, out
    match = _network_match(lake, "ica7")
    _print_match("CanICA K=7, 4 subjects, 1 FastICA run", match)
    assert all(r >= 0.6 for r, _ in match.values()), match
    assert read_atlas(lake.url, "ica7").attrs["n_subjects"] == 4


# ------------------------------------------------------------------------------------------ bad input


def _rejected(capsys, argv: list[str], *needles: str) -> str:
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _derive(lake: Lake, *extra: str) -> list[str]:
    return [
        "--lake",
        lake.url,
        "atlas",
        "derive",
        "--connectome",
        "small",
        "--n-components",
        "3",
        "--name",
        "bad",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--n-components", "31"], ["--n-components 31 is more than the data allow", "30 time", "K <= 30"]),
        (["--subjects", "9"], ["--subjects 9", "has 3 subjects"]),
        (["--method", "canica", "--n-init", "1", "--thresholding-strategy", "img_value",
          "--threshold", "1e6"], ["no region left after extraction", "lower --threshold"]),
        (["--method", "canica", "--n-init", "1", "--min-region-size", "1e7"],
         ["no region left after extraction", "lower --min-region-size"]),
        (["--alpha", "1e4"], ["all-zero maps", "lower --alpha"]),
        (["--smoothing-fwhm", "-1"], ["--smoothing-fwhm must be >= 0"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_registers_nothing(small, capsys, extra, needles):
    lake: Lake = small["lake"]
    before = lake.catalog.query(kind="atlas")
    stores = sorted(Path(lake.url).rglob("atlases/*.zarr"))
    _rejected(capsys, _derive(lake, *extra), *needles)  # a repeated option: the last one counts
    after = lake.catalog.query(kind="atlas")
    assert len(after) == len(before) and sorted(Path(lake.url).rglob("atlases/*.zarr")) == stores


def test_name_taken_and_parcel_connectomes_are_refused(small, tmp_path, capsys):
    lake: Lake = small["lake"]
    lake.run("derive-atlas", connectome="small", n_components=3, decomposition="canica", n_init=1,
             min_region_size=10, name="taken", outputs=False)  # fmt: skip
    _rejected(
        capsys, _derive(lake, "--name", "taken", "--method", "canica"), "atlas 'taken' is already in the lake"
    )
    # a parcel-level connectome has no voxels to decompose
    parcels = tmp_path / "parcels"
    parcels.mkdir()
    (parcels / "regions.tsv").write_text("index\tname\n1\ta\n2\tb\n")
    np.save(parcels / "sub-01.npy", np.random.default_rng(0).standard_normal((2, 20)).astype(np.float32))
    from lakepipe.ingest import ingest_connectome

    ingest_connectome(lake, parcels, name="parc", space="synthetic")
    _rejected(
        capsys,
        ["--lake", lake.url, "atlas", "derive", "--connectome", "parc", "--n-components", "2"],
        "parcel series",
        "voxel-level connectome",
    )
