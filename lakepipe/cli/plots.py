"""``lakepipe plot``, ``assign`` and ``report``: pictures, region assignment, run reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lakepipe._version import __version__
from lakepipe.cli.common import NEGATIVE_NUMBERS, lake_from_args, parse_key_values
from lakepipe.cli.main import add_global_options
from lakepipe.errors import InputError

PLOT_EPILOG = """\
examples:
  lakepipe plot fc --connectome gsp --atlas seitzman --out fc.png
  lakepipe plot fnm --participant 01 --session 01 --label acuteinfarct --threshold 0.2 --out fnm.pdf
  lakepipe plot fnm --label motor --statistic tmap --view glass --out motor.svg     (a sphere seed)
  lakepipe plot afnm --atlas seitzman --participant 01 --session 01 --out afnm.png
  lakepipe plot group --method afnm --atlas seitzman --cohort stroke --out mean.png
  lakepipe plot networks --method afnm --atlas seitzman --out networks.png --tsv networks.tsv
  lakepipe plot afnm --atlas seitzman --participant 01 --surface --out afnm_surface.png   (fsaverage5)
  lakepipe plot specificity --cases cohort=neglect --controls cohort=controls --out specificity.png
  lakepipe plot predict --cases cohort=neglect --score neglect_score --cv loo --out predict.png
  lakepipe plot task --connectome hcp --task MOTOR --contrast "lh - rh" --out motor.png --tsv motor.tsv
The format follows the extension of --out: .png, .pdf or .svg.
"""


def _selection(p: argparse.ArgumentParser, *, seed: bool = True, atlas_help: str | None = None) -> None:
    g = p.add_argument_group("selection (catalog filters)")
    if seed:
        g.add_argument("--participant", help="participant label (sub-<label> accepted)")
        g.add_argument("--session", help="session label")
        g.add_argument(
            "--seed", help="seed key as stored, e.g. sub-01_ses-01_label-acuteinfarct or sphere-motor"
        )
    g.add_argument("--label", help="lesion label or sphere name")
    g.add_argument("--atlas", help=atlas_help or "atlas name")
    g.add_argument("--cohort", help="lesion cohort")
    g.add_argument("--connectome", help="connectome name")
    g.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="only outputs with this parameter value (e.g. weighting=fractional)",
    )


def _map_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("display")
    g.add_argument(
        "--threshold",
        help="hide |value| <= THRESHOLD; a percentage (20%%) is relative to the "
        "largest |value| (default: only zeros hidden)",
    )
    g.add_argument(
        "--view",
        default="both",
        choices=("both", "stat", "glass"),
        help="stat-map slices, glass brain, or both stacked (default)",
    )
    g.add_argument(
        "--display-mode",
        help="nilearn display mode, e.g. ortho, x, y, z, mosaic (slices) or lyrz (glass brain)",
    )
    g.add_argument("--cut-coords", help="slice positions in mm, comma separated (e.g. -40,-20,50)")
    g.add_argument("--vmax", type=float, help="colour scale limit (symmetric)")
    # let "--cut-coords -40,-20,50" read the coordinates as a value, not as an unknown option
    p._negative_number_matcher = NEGATIVE_NUMBERS


def _surface_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cortical surface (fsaverage5, shipped with nilearn)")
    g.add_argument(
        "--surface",
        action="store_true",
        help="draw on the inflated fsaverage5 cortex (left/right, lateral/medial) instead of slices",
    )
    g.add_argument(
        "--layout",
        default="2x2",
        choices=("2x2", "1x4"),
        help="surface panels: 2x2 (columns left/right, rows lateral/medial; default) or 1x4",
    )


def _surface_display(args) -> dict:
    return {"threshold": args.threshold, "vmax": args.vmax, "title": args.title, "layout": args.layout}


def _stats_help(name: str) -> str:
    return f"the {name} result of a group test (lakepipe stats {name})"


def _stats_parser(kinds: Any, method: Any) -> None:
    """``lakepipe plot <test>``: a group statistics result already in the lake, selected by the
    options that made it (``lakepipe stats <test>``)."""
    from lakepipe.cli.common import add_param_options
    from lakepipe.viz.stats import DEFAULT_VIEW

    shown, masked = DEFAULT_VIEW.get(method.name, ("", None))
    p = kinds.add_parser(
        method.name,
        help=_stats_help(method.name),
        description=f"The {method.name} result already in the lake (the options of `lakepipe stats "
        f"{method.name}` select it): "
        + (
            "held-out predictions against the observed scores (--show model: the model map)."
            if method.name == "predict"
            else f"its {shown} map on the brain" + (", only where its FWE p < --alpha." if masked else ".")
        ),
    )
    add_param_options(p, method.params_type)
    g = p.add_argument_group("display")
    names = ", ".join(s.name for s in method.statistics)
    g.add_argument(
        "--show",
        metavar="NAME",
        help=f"the result variable drawn (default {'the scatter' if method.name == 'predict' else shown}; "
        f"one of {names})",
    )
    if "--alpha" not in p._option_string_actions:  # a test's own --alpha (conjunction) also masks its map
        g.add_argument(
            "--alpha",
            type=float,
            help="maps of tests with an FWE p: only features with p below this (default 0.05; 1 shows all)",
        )
    g.add_argument("--hide", metavar="VALUE", help="also hide |value| <= VALUE (or a percentage, 20%%)")
    g.add_argument(
        "--view", default="both", choices=("both", "stat", "glass"), help="slices, glass brain or both"
    )
    g.add_argument("--vmax", type=float, help="colour scale limit (symmetric)")
    _output(p)
    add_global_options(p)
    p.set_defaults(func=_plot_stats, _method=method.name)


def _plot_stats(args) -> int:
    _agg()
    from lakepipe.cli.common import params_from_args
    from lakepipe.registry import get_method
    from lakepipe.viz.stats import plot_result

    _check_out(args)
    lake = lake_from_args(args)
    method: Any = get_method(args._method)
    params = method.params(params_from_args(args, method.params_type))
    ds = method.outputs(lake, method.plan(lake, params))
    if args.show is not None and args.show not in ds and args.show != "prediction":
        known = ", ".join(sorted(str(v) for v in ds.data_vars))
        raise InputError(f"--show {args.show}: the {method.name} result has {known}")
    atlas_name = ds.attrs.get("atlas") or ds.attrs.get("parameters", {}).get("atlas")
    atlas = lake.read_atlas(str(atlas_name)) if "region" in ds.dims and atlas_name else None
    alpha = 0.05 if args.alpha is None else args.alpha
    alpha = None if alpha >= 1 else alpha
    fig = plot_result(
        ds,
        args.show,
        atlas=atlas,
        alpha=alpha,
        threshold=args.hide,
        view=args.view,
        vmax=args.vmax,
        title=args.title,
    )
    return _save(fig, args)


def _output(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--out", required=required, metavar="FILE", help="figure file: .png, .pdf or .svg")
    p.add_argument("--dpi", type=int, default=150, help="resolution of PNG output (default 150)")
    p.add_argument("--title", help="figure title")


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    """``plot``, ``assign`` and ``report``. Of ``plot``, the kinds drawn from another method's results
    (``task``, the group statistics) import that method only when ``rest`` names the kind, or names
    none (``plot --help`` lists them all)."""
    word = rest[0] if rest and not rest[0].startswith("-") else None

    def wanted(kind: str) -> bool:
        return word is None or word == kind

    if name == "plot":
        plot = sub.add_parser(
            name,
            help="figures: group FC matrix, FNM and AFNM maps, group means, networks",
            description="Draw lakepipe outputs with matplotlib/nilearn (no display needed).",
            epilog=PLOT_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        kinds = plot.add_subparsers(dest="plot", metavar="WHAT", required=True)

        fc = kinds.add_parser(
            "fc",
            help="group FC matrix ordered by network",
            description="The group FC matrix (parcellate output), regions ordered by network, "
            "network boundaries and names drawn, colour scale symmetric around 0.",
        )
        fc.add_argument("--connectome", help="connectome name")
        fc.add_argument("--atlas", help="atlas name")
        fc.add_argument("--statistic", default="fcgroupz", choices=("fcgroupz", "fcgroupr"))
        fc.add_argument(
            "--vmax", type=float, help="colour scale limit (default: largest |off-diagonal value|)"
        )
        _output(fc)
        add_global_options(fc)
        fc.set_defaults(func=_plot_fc)

        fnm = kinds.add_parser(
            "fnm",
            help="one seed's FNM map (slices and/or glass brain)",
            description="One seed's FNM map; sphere seeds are marked at their centre.",
        )
        _selection(fnm, atlas_help=None)
        fnm.add_argument("--statistic", default="zmap", help="zmap (default), rmap, tmap, pmap or avgr")
        _map_options(fnm)
        _surface_options(fnm)
        _output(fnm)
        add_global_options(fnm)
        fnm.set_defaults(func=_plot_fnm)

        afnm = kinds.add_parser(
            "afnm",
            help="one lesion's AFNM scores painted onto the atlas",
            description="One lesion's AFNM scores painted back onto the atlas volume and drawn like a voxel "
            "map; several matching outputs: their mean.",
        )
        _selection(afnm)
        _map_options(afnm)
        _surface_options(afnm)
        _output(afnm)
        add_global_options(afnm)
        afnm.set_defaults(func=_plot_afnm)

        group = kinds.add_parser(
            "group",
            help="group mean map of a collection",
            description="The mean over seeds of a collection (`lakepipe collect` query): "
            "parcel level painted onto the atlas, voxel level on its grid.",
        )
        group.add_argument("--method", required=True, choices=("afnm", "fnm"))
        _selection(group, seed=False, atlas_help="atlas name (fnm: parcel summaries instead of voxel maps)")
        group.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
        group.add_argument("--statistic", help="statistic (default afnmap / zmap)")
        _map_options(group)
        _surface_options(group)
        _output(group)
        add_global_options(group)
        group.set_defaults(func=_plot_group)

        nets = kinds.add_parser(
            "networks",
            help="mean per network and hemisphere (bar plot and TSV)",
            description="Mean per network and hemisphere of a parcel-level output whose "
            "atlas has network labels; several seeds: mean of the per-seed "
            "means, error bars SEM. For parcellate: the network block means of "
            "the FC matrix.",
        )
        nets.add_argument("--method", required=True, choices=("afnm", "fnm", "parcellate"))
        _selection(nets, atlas_help="atlas name (required for fnm parcel summaries)")
        nets.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
        nets.add_argument("--statistic", help="statistic (default afnmap / zmap / fcgroupz)")
        nets.add_argument("--no-hemisphere", action="store_true", help="pool the hemispheres")
        nets.add_argument(
            "--tsv", metavar="FILE", help="also write the table (per seed) as TSV + JSON sidecar"
        )
        _output(nets, required=False)
        add_global_options(nets)
        nets.set_defaults(func=_plot_networks)

        from lakepipe.cli.common import add_param_options
        from lakepipe.registry import get_method, get_params, method_command, method_names

        if wanted("task"):
            task = kinds.add_parser(
                "task",
                help="a task contrast per network and hemisphere (bar plot and TSV)",
                description="The network x hemisphere summary of a task contrast already in the lake "
                "(`lakepipe task contrast`, the same options select it): per participant the mean over "
                "each group's parcels, bars the mean over participants, error bars SEM.",
            )
            add_param_options(task, get_params("task-contrast"))
            task.add_argument(
                "--tsv", metavar="FILE", help="also write the summary table (TSV + JSON sidecar)"
            )
            _output(task, required=False)
            add_global_options(task)
            task.set_defaults(func=_plot_task)
        else:
            kinds.add_parser("task", add_help=False)
        # a group test's plot parser needs the test's statistics (the method itself): built only when
        # that plot is asked for; `plot --help` lists the tests from their names
        for n in (n for n in method_names() if method_command(n)[0] == "stats"):
            if word == n:
                _stats_parser(kinds, get_method(n))
            else:
                kinds.add_parser(n, add_help=False, help=_stats_help(n))

    elif name == "assign":
        asg = sub.add_parser(
            name,
            help="clusters of a voxel map and the atlas regions they overlap",
            description="Region assignment in the manner of siibra's assign: threshold a voxel "
            "map, split it into connected components (26-connectivity), and report "
            "per component its centroid (mm), volume, peak and the atlas regions it "
            "overlaps ranked by overlap fraction, with the correlation of the map "
            "with each region (Pearson r with the region's indicator over the "
            "brain). The map is a NIfTI file (--map), one seed's FNM map, or the "
            "group mean of FNM maps (--group). With a probabilistic atlas (or --metrics siibra) "
            "each (cluster, region) row has siibra's metrics instead.",
        )
        src = asg.add_argument_group("map")
        src.add_argument("--map", metavar="NIFTI", help="a voxel map file")
        src.add_argument("--group", action="store_true", help="the group mean of the selected FNM maps")
        _selection(asg, atlas_help="atlas name in the lake (required)")
        asg.add_argument("--statistic", default="zmap", help="FNM statistic (default zmap)")
        asg.add_argument("--threshold", type=float, required=True, help="cluster-forming threshold (>= 0)")
        asg.add_argument(
            "--mode",
            default="signed",
            choices=("signed", "absolute", "positive", "negative"),
            help="signed: positive and negative clusters apart (default); absolute: |value|",
        )
        asg.add_argument("--min-voxels", type=int, default=1, help="smallest cluster kept (voxels)")
        asg.add_argument("--max-regions", type=int, help="regions listed per cluster")
        asg.add_argument(
            "--metrics",
            choices=("overlap", "siibra"),
            help="overlap: overlap counts and indicator correlation (default for label atlases); siibra: "
            "siibra's assign metrics (correlation, intersection over union, map value, map/input-weighted "
            "means and containedness; the only choice for probabilistic atlases, whose maps they use)",
        )
        asg.add_argument("--out", metavar="TSV", help="write the table (+ JSON sidecar)")
        add_global_options(asg)
        asg.set_defaults(func=_assign)

    else:
        rep = sub.add_parser(
            name,
            help="HTML report of a run (figures, tables, provenance), opens offline",
            description="A self-contained HTML page for one run (one derivative store): figures "
            "embedded, tables, catalog provenance. Without --store, the newest run "
            "matching the filters.",
        )
        rep.add_argument(
            "--method",
            required=True,
            choices=(
                "afnm",
                "fnm",
                "parcellate",
                "sensitivity",
                "specificity",
                "conjunction",
                "symptom",
                "predict",
            ),
        )
        rep.add_argument(
            "--store", help="the run's store URI as in `lakepipe catalog ls` (default: the newest match)"
        )
        rep.add_argument("--run", help="a recorded run id (the command that wrote the store)")
        rep.add_argument("--atlas", help="atlas name")
        rep.add_argument("--connectome", help="connectome name")
        rep.add_argument("--cohort", help="lesion cohort")
        rep.add_argument("--label", help="lesion label or sphere name")
        rep.add_argument("--statistic", help="statistic to show (fnm: zmap by default)")
        rep.add_argument(
            "--param", action="append", metavar="KEY=VALUE", help="only runs with this parameter value"
        )
        rep.add_argument(
            "--threshold",
            help="map display threshold, a number or a percentage of the largest "
            "|value| (default 20%% for FNM maps, none for AFNM scores); also "
            "the FNM assignment threshold (default: 99th percentile)",
        )
        rep.add_argument("--max-seeds", type=int, default=4, help="per-seed maps drawn (default 4)")
        rep.add_argument(
            "--surface",
            action="store_true",
            help="also draw AFNM and FNM maps on the inflated fsaverage5 cortex (left/right, lateral/medial)",
        )
        rep.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
        add_global_options(rep)
        rep.set_defaults(func=_report)


# ----------------------------------------------------------------------------------------- helpers


def _agg() -> None:
    """Draw off-screen whatever the environment's matplotlib backend (nilearn imports pyplot)."""
    import matplotlib

    matplotlib.use("Agg", force=True)


def _params(args) -> dict | None:
    return parse_key_values(getattr(args, "param", None)) or None


def _cut_coords(text: str | None):
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--cut-coords expects numbers separated by commas, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def _display(args) -> dict:
    return {
        "threshold": args.threshold,
        "view": args.view,
        "display_mode": args.display_mode,
        "cut_coords": _cut_coords(args.cut_coords),
        "vmax": args.vmax,
        "title": args.title,
    }


def _save(fig, args) -> int:
    from lakepipe.viz.figures import figure_format, save_figure

    figure_format(args.out)  # a bad extension is an input error before any drawing
    path = save_figure(fig, args.out, dpi=args.dpi)
    print(f"wrote {path}")
    return 0


def _check_out(args) -> None:
    if getattr(args, "out", None):
        from lakepipe.viz.figures import figure_format

        figure_format(args.out)


# ---------------------------------------------------------------------------------------- commands


def _plot_fc(args) -> int:
    _agg()
    from lakepipe.viz.matrices import plot_fc_matrix
    from lakepipe.viz.select import fc_dataset

    _check_out(args)
    ds, _ = fc_dataset(lake_from_args(args), args.connectome, args.atlas)
    return _save(plot_fc_matrix(ds, args.statistic, vmax=args.vmax, title=args.title), args)


def _plot_fnm(args) -> int:
    _agg()
    from lakepipe.viz.maps import plot_fnm
    from lakepipe.viz.select import select_seed

    _check_out(args)
    lake = lake_from_args(args)
    if _many(lake, args, "fnm"):
        return _plot_many(lake, args, "fnm")
    sel = select_seed(
        lake,
        "fnm",
        participant=args.participant,
        session=args.session,
        label=args.label,
        seed=args.seed,
        statistic=args.statistic,
        cohort=args.cohort,
        connectome=args.connectome,
        params=_params(args),
    )
    if args.surface:
        from lakepipe.viz.maps import fnm_image
        from lakepipe.viz.surface import plot_voxel_surface

        display = _surface_display(args)
        display["title"] = display["title"] or f"FNM {args.statistic}: {sel.key}"
        return _save(plot_voxel_surface(fnm_image(sel.dataset, args.statistic, sel.index), **display), args)
    return _save(plot_fnm(sel.dataset, sel.index, args.statistic, **_display(args)), args)


def _plot_afnm(args) -> int:
    _agg()
    from lakepipe.viz.maps import plot_afnm
    from lakepipe.viz.select import select_seed

    _check_out(args)
    lake = lake_from_args(args)
    if _many(lake, args, "afnm"):
        return _plot_many(lake, args, "afnm")
    sel = select_seed(
        lake,
        "afnm",
        participant=args.participant,
        session=args.session,
        label=args.label,
        seed=args.seed,
        atlas=args.atlas,
        cohort=args.cohort,
        connectome=args.connectome,
        params=_params(args),
    )
    atlas = lake.read_atlas(sel.dataset.attrs.get("atlas") or args.atlas)
    if args.surface:
        row = sel.dataset["score"].isel(seed=sel.index).compute()
        display = _surface_display(args)
        display["title"] = display["title"] or f"AFNM score: {sel.key} on {atlas.name}"
        return _save(_parcel_surface(row, atlas, display), args)
    return _save(plot_afnm(sel.dataset, atlas, sel.index, **_display(args)), args)


def _parcel_surface(values: Any, atlas: Any, display: dict) -> Any:
    """Parcel values (a 1D region array) painted on ``atlas``, drawn on the cortex (one parcel a vertex)."""
    from lakepipe.viz.maps import parcel_image, to_image
    from lakepipe.viz.surface import plot_parcel_surface

    return plot_parcel_surface(
        parcel_image(values, atlas), labels_img=to_image(atlas.labels, atlas.grid.affine), **display
    )


def _surface_image(lake: Any, da: Any, atlas: Any, display: dict) -> Any:
    """A group mean (region or voxel level) on the cortex."""
    from lakepipe.viz.maps import collection_image, group_mean
    from lakepipe.viz.select import voxel_ijk
    from lakepipe.viz.surface import plot_voxel_surface

    mean = group_mean(da)
    if "region" in da.dims:
        return _parcel_surface(mean, atlas, display)
    return plot_voxel_surface(collection_image(mean, ijk=voxel_ijk(lake, da)), **display)


def _many(lake: Any, args: argparse.Namespace, method: str) -> int:
    """How many outputs a one-seed plot's filters match, when more than one (0 otherwise)."""
    from lakepipe.collect import select_rows

    if args.seed:
        return 0
    rows = select_rows(
        lake,
        method,
        atlas=getattr(args, "atlas", None) if method == "afnm" else None,
        label=args.label,
        statistic=getattr(args, "statistic", None),
        session=args.session,
        participants=[args.participant] if args.participant else None,
        cohort=args.cohort,
        connectome=args.connectome,
        params=_params(args),
    )
    return len(rows) if len(rows) > 1 else 0


def _plot_many(lake: Any, args: argparse.Namespace, method: str) -> int:
    """Several outputs match a one-seed plot: draw their group mean, and say how to pick one."""
    from lakepipe.viz.maps import plot_group_mean
    from lakepipe.viz.select import voxel_ijk

    args.participant_label = None
    args.statistic = getattr(args, "statistic", None)
    if method == "fnm":
        args.atlas = None
    da = _collection(lake, args, method)
    print(
        f"{da.sizes['seed']} {method} outputs match: drawing their mean (pick one with --participant, "
        "--session, --label or --seed)",
        file=sys.stderr,
    )
    atlas = lake.read_atlas(da.attrs["atlas"]) if "region" in da.dims else None
    title = args.title or f"mean of {da.sizes['seed']} {method} {da.attrs['statistic']} maps"
    if args.surface:
        return _save(_surface_image(lake, da, atlas, {**_surface_display(args), "title": title}), args)
    display = _display(args)
    display["title"] = title
    return _save(plot_group_mean(da, atlas=atlas, ijk=voxel_ijk(lake, da), **display), args)


def _collection(lake, args, method: str):
    from lakepipe.collect import collect

    one = getattr(args, "participant", None)
    return collect(
        lake,
        method,
        atlas=args.atlas,
        label=args.label,
        statistic=args.statistic,
        participants=args.participant_label or ([one] if one else None),
        session=getattr(args, "session", None),
        cohort=args.cohort,
        connectome=args.connectome,
        params=_params(args),
    )


def _plot_group(args) -> int:
    _agg()
    from lakepipe.viz.maps import plot_group_mean
    from lakepipe.viz.select import voxel_ijk

    _check_out(args)
    lake = lake_from_args(args)
    da = _collection(lake, args, args.method)
    atlas = lake.read_atlas(da.attrs["atlas"]) if "region" in da.dims else None
    if args.surface:
        display = _surface_display(args)
        display["title"] = display["title"] or (
            f"group mean of {args.method.upper()} {da.attrs.get('statistic')} "
            f"over {da.sizes.get('seed', 1)} seed(s)"
        )
        return _save(_surface_image(lake, da, atlas, display), args)
    fig = plot_group_mean(da, atlas=atlas, ijk=voxel_ijk(lake, da), **_display(args))
    return _save(fig, args)


def _plot_task(args) -> int:
    _agg()
    from pathlib import Path

    from lakepipe.cli.common import params_from_args
    from lakepipe.io.bidsout import write_tsv
    from lakepipe.registry import get_method
    from lakepipe.viz.regions import plot_task_contrast

    if not args.out and not args.tsv:
        raise InputError("nothing to write: give --out FILE (figure) and/or --tsv FILE")
    _check_out(args)
    lake = lake_from_args(args)
    method: Any = get_method("task-contrast")
    params = method.params(params_from_args(args, method.params_type))
    ds = method.outputs(lake, method.plan(lake, params))
    if args.tsv:
        write_tsv(
            Path(args.tsv),
            method.network_table(ds),
            {
                "Description": f"task contrast '{ds.attrs['contrast']}' of the {ds.attrs['task']} runs: per "
                "participant the mean over each network x hemisphere group's parcels; mean, sd, SEM, "
                "one-sample t and p over participants",
                "Connectome": ds.attrs["connectome"],
                "Parameters": ds.attrs["parameters"],
                "LakepipeVersion": __version__,
            },
        )
        print(f"wrote {args.tsv}")
    return _save(plot_task_contrast(ds, title=args.title), args) if args.out else 0


def _plot_networks(args) -> int:
    _agg()
    from pathlib import Path

    from lakepipe.io.bidsout import write_tsv
    from lakepipe.viz.networks import network_summary, plot_network_summary, summarize_seeds

    if not args.out and not args.tsv:
        raise InputError("nothing to write: give --out FILE (figure) and/or --tsv FILE")
    _check_out(args)
    lake = lake_from_args(args)
    if args.method == "parcellate":
        from lakepipe.viz.matrices import network_block_means, plot_network_blocks
        from lakepipe.viz.select import fc_dataset

        ds, _ = fc_dataset(lake, args.connectome, args.atlas)
        stat = args.statistic or "fcgroupz"
        table = network_block_means(ds, stat)
        if args.tsv:
            write_tsv(
                Path(args.tsv),
                table,
                {
                    "Description": f"mean {stat} between and within networks (within: off-diagonal pairs)",
                    "Parameters": ds.attrs.get("parameters"),
                    "LakepipeVersion": __version__,
                },
                index=True,
            )
            print(f"wrote {args.tsv}")
        return _save(plot_network_blocks(table, title=args.title, label=stat), args) if args.out else 0
    if args.method == "fnm" and not args.atlas:
        raise InputError("FNM network summaries use the parcel summaries: give --atlas")
    da = _collection(lake, args, args.method).compute()
    table = network_summary(da, by_hemisphere=not args.no_hemisphere)
    if args.tsv:
        write_tsv(
            Path(args.tsv),
            table,
            {
                "Description": "mean over the regions of each network (and hemisphere), per seed",
                "Method": args.method,
                "Statistic": da.attrs.get("statistic"),
                "Atlas": da.attrs.get("atlas"),
                "Sources": da.attrs.get("sources"),
                "Parameters": da.attrs.get("parameters"),
                "LakepipeVersion": __version__,
            },
        )
        print(f"wrote {args.tsv}")
    if args.out:
        return _save(
            plot_network_summary(
                summarize_seeds(table),
                title=args.title,
                ylabel=f"{da.attrs.get('statistic')} (mean over regions)",
            ),
            args,
        )
    return 0


def _assign(args) -> int:
    _agg()
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from lakepipe.compute.assign import COLUMN_DESCRIPTIONS, component_summary
    from lakepipe.io.bidsout import write_tsv
    from lakepipe.viz.maps import assign_image, collection_image, fnm_image, group_mean
    from lakepipe.viz.select import select_seed, voxel_ijk

    if not args.atlas:
        raise InputError("assign needs --atlas NAME (an atlas in the lake)")
    lake = lake_from_args(args)
    atlas = lake.read_atlas(args.atlas)
    if args.map:
        from lakepipe.io.nifti import load_image

        img = load_image(args.map)
        if img.ndim != 3:
            raise InputError(f"a 3D map is needed, got shape {img.shape}", args.map)
        source = str(args.map)
    elif args.group or _many(lake, args, "fnm"):
        from lakepipe.collect import collect

        if not args.group:
            print(
                "several FNM maps match: assigning their group mean (pick one with --participant, --session, "
                "--label or --seed)",
                file=sys.stderr,
            )

        da = collect(
            lake,
            "fnm",
            label=args.label,
            statistic=args.statistic,
            cohort=args.cohort,
            connectome=args.connectome,
            session=args.session,
            params=_params(args),
            participants=[args.participant] if args.participant else None,
        )
        img = collection_image(group_mean(da), ijk=voxel_ijk(lake, da))
        source = f"group mean of {da.sizes['seed']} FNM {args.statistic} maps"
    else:
        sel = select_seed(
            lake,
            "fnm",
            participant=args.participant,
            session=args.session,
            label=args.label,
            seed=args.seed,
            statistic=args.statistic,
            cohort=args.cohort,
            connectome=args.connectome,
            params=_params(args),
        )
        img = fnm_image(sel.dataset, args.statistic, sel.index)
        source = f"FNM {args.statistic} of {sel.key}"
    metrics = args.metrics or ("siibra" if atlas.probabilistic else "overlap")
    if atlas.probabilistic and metrics != "siibra":
        raise InputError(f"atlas '{atlas.name}' is probabilistic: its assignment uses --metrics siibra")
    if metrics == "siibra":
        return _assign_siibra(args, lake, atlas, img, source)
    try:
        table = assign_image(
            img,
            atlas,
            threshold=args.threshold,
            mode=args.mode,
            min_voxels=args.min_voxels,
            max_regions=args.max_regions,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    best = component_summary(table)
    print(
        f"{source}: {best.shape[0]} cluster(s) above {args.threshold:g} ({args.mode}) on atlas {atlas.name}"
    )
    if len(best):
        cols = [
            "component",
            "n_voxels",
            "volume_mm3",
            "centroid_x",
            "centroid_y",
            "centroid_z",
            "peak_value",
            "region_name",
            "overlap_fraction",
            "correlation",
        ]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(best[cols].head(20).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        write_tsv(
            Path(args.out),
            table,
            {
                "Description": "region assignment of a thresholded voxel map (lakepipe.compute.assign)",
                "Source": source,
                "Atlas": atlas.name,
                "Threshold": args.threshold,
                "Mode": args.mode,
                "Connectivity": 26,
                "MinVoxels": args.min_voxels,
                "Columns": COLUMN_DESCRIPTIONS,
                "Affine": np.asarray(img.affine).tolist(),
                "LakepipeVersion": __version__,
            },
        )
        print(f"wrote {args.out}")
    return 0


def _assign_siibra(args, lake: Any, atlas: Any, img: Any, source: str) -> int:
    """``assign`` with siibra's metrics: every (cluster, region) pair that overlaps."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from lakepipe.compute.assign import MAPS_COLUMN_DESCRIPTIONS, SIIBRA_COLUMN_NAMES
    from lakepipe.io.bidsout import write_tsv
    from lakepipe.io.stores.atlases import atlas_maps
    from lakepipe.viz.regions import SIIBRA_PRINT_COLUMNS, assign_image_maps

    maps = atlas_maps(lake.url, atlas.name) if atlas.probabilistic else None
    try:
        table = assign_image_maps(
            img,
            atlas,
            maps,
            threshold=args.threshold,
            mode=args.mode,
            min_voxels=args.min_voxels,
            max_regions=args.max_regions,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    kind = "probabilistic" if atlas.probabilistic else "label"
    n = int(table["component"].nunique()) if len(table) else 0
    print(
        f"{source}: {n} cluster(s) above {args.threshold:g} ({args.mode}) on {kind} atlas {atlas.name} "
        "(siibra's assign metrics, one row per cluster and region)"
    )
    if len(table):
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(
                table[list(SIIBRA_PRINT_COLUMNS)]
                .head(40)
                .to_string(index=False, float_format=lambda v: f"{v:.3g}")
            )
    if args.out:
        write_tsv(
            Path(args.out),
            table,
            {
                "Description": "siibra-style region assignment of a thresholded voxel map "
                "(lakepipe.compute.assign.assign_maps)",
                "Source": source,
                "Atlas": atlas.name,
                "AtlasKind": kind,
                "Threshold": args.threshold,
                "Mode": args.mode,
                "Connectivity": 26,
                "MinVoxels": args.min_voxels,
                "Columns": MAPS_COLUMN_DESCRIPTIONS,
                "SiibraColumnNames": SIIBRA_COLUMN_NAMES,
                "Affine": np.asarray(img.affine).tolist(),
                "LakepipeVersion": __version__,
            },
        )
        print(f"wrote {args.out}")
    return 0


def _report(args) -> int:
    _agg()
    from lakepipe.viz.report import write_report

    path = write_report(
        lake_from_args(args),
        args.method,
        args.out,
        store=args.store,
        run=args.run,
        atlas=args.atlas,
        connectome=args.connectome,
        cohort=args.cohort,
        statistic=args.statistic,
        label=args.label,
        params=_params(args),
        threshold=args.threshold,
        max_seeds=args.max_seeds,
        surface=args.surface,
    )
    print(f"wrote {path}")
    return 0
