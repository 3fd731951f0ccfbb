"""``lakepipe`` entry point: global options, sub-command registry, error handling.

Each sub-command lives in a small module of this package exposing ``register(subparsers)``;
commands set ``func(args) -> int``. User errors (:class:`~lakepipe.errors.InputError`) print one
line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lakepipe.blas import tune_blas_for_this_process

tune_blas_for_this_process()  # before anything imports numpy

import lakepipe  # noqa: E402
from lakepipe.errors import LakepipeError  # noqa: E402

COMMAND_MODULES = ("tutorial", "ingest", "analyses", "catalog", "jobs", "plots")

DESCRIPTION = """\
lakepipe: lesion network mapping at cohort scale.

Lesion masks and normative connectomes go into a chunked Zarr lake (a folder, or s3://);
group FC (parcellate), AFNM and FNM run lazily on Dask; every output is catalogued with its
provenance and collected into one table or xarray object per group question.

Typical session:
  lakepipe tutorial ./tutorial                                   # example inputs
  lakepipe ingest lesions ./tutorial/bids --cohort stroke
  lakepipe ingest connectome ./tutorial/connectome --name gsp
  lakepipe ingest atlas ATLAS.nii.gz --labels ATLAS.tsv --name seitzman
  lakepipe parcellate --connectome gsp --atlas seitzman
  lakepipe run afnm --cohort stroke --atlas seitzman --connectome gsp
  lakepipe run fnm --cohort stroke --connectome gsp --atlas seitzman
  lakepipe collect --method afnm --atlas seitzman --out group/
or simply `lakepipe demo`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakepipe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lakepipe {lakepipe.__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lakepipe.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not yet present in this build
            if exc.name != f"lakepipe.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def add_global_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("lake and cluster")
    g.add_argument(
        "--lake",
        default=argparse.SUPPRESS,
        help="lake URL: folder, s3://bucket/prefix or memory://name (default $LAKEPIPE_LAKE or ./lake)",
    )
    g.add_argument(
        "--catalog",
        default=argparse.SUPPRESS,
        help="catalog database URL (default $LAKEPIPE_CATALOG, else <lake>/catalog.sqlite)",
    )
    g.add_argument(
        "--scheduler",
        default=argparse.SUPPRESS,
        help="address of an existing Dask scheduler (default $LAKEPIPE_SCHEDULER, "
        "else a local cluster sized to this machine)",
    )
    g.add_argument(
        "--s3-endpoint",
        default=argparse.SUPPRESS,
        help="S3 endpoint URL for non-AWS object stores (or $LAKEPIPE_S3_ENDPOINT)",
    )
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings only")
    g.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors"
    )


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    if verbose < 2:
        for noisy in ("distributed", "bokeh", "tornado", "botocore", "s3fs", "aiobotocore", "fsspec"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    for opt, default in (
        ("lake", None),
        ("catalog", None),
        ("scheduler", None),
        ("s3_endpoint", None),
        ("verbose", 0),
        ("quiet", False),
        ("debug", False),
    ):
        if not hasattr(args, opt):
            setattr(args, opt, default)
    if args.verbose < 2:  # distributed configures its loggers from its config when first imported
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    configure_logging(args.verbose, args.quiet)
    if args.s3_endpoint:
        os.environ["LAKEPIPE_S3_ENDPOINT"] = args.s3_endpoint
    status = "failed"
    try:
        code = int(args.func(args) or 0)
        status = "finished" if code == 0 else "failed"
        return code
    except LakepipeError as exc:
        if args.debug:
            raise
        print(f"lakepipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        status = "interrupted"
        print("lakepipe: interrupted", file=sys.stderr)
        return 130
    finally:
        lake = getattr(args, "_lake", None)
        if lake is not None and lake.run_id is not None:
            lake.finish_run(status)


#: commands whose work is recorded as a run in the catalog (outputs point to their run)
RECORDED = ("ingest", "parcellate", "run", "jobs")


def lake_from_args(args):
    """The :class:`~lakepipe.lake.Lake` named by the global options (a recorded run for commands that
    publish outputs; :func:`main` finishes it with the command's outcome)."""
    from lakepipe.lake import Lake

    lake = Lake(args.lake, catalog=args.catalog)
    if args.command in RECORDED and not getattr(args, "dry_run", False):
        params = {
            k: v for k, v in vars(args).items() if k not in ("func", "catalog") and not k.startswith("_")
        }
        lake.start_run("lakepipe " + " ".join(map(str, args._argv)), params)
    args._lake = lake
    return lake


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
