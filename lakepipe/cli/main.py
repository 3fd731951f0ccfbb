"""``lakepipe`` entry point: global options, the command table, error handling.

Commands live in small modules of this package; each exposes ``register(subparsers, name)`` for
the command names the table below gives it, and sets ``func(args) -> int``. Only the module of the
command being run is imported, so commands that compute nothing answer at once.

Errors: bad input (:class:`~lakepipe.errors.InputError`) prints one line and exits with status 2;
environment failures (catalog or storage unreachable, incomplete installation) and unexpected
errors print one line and exit with status 1; Ctrl-C prints one line and exits with 130.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lakepipe._version import __version__
from lakepipe.blas import tune_blas_for_this_process

tune_blas_for_this_process()  # before anything imports numpy

from lakepipe.errors import LakepipeError  # noqa: E402

#: command -> (module in lakepipe.cli, one-line help); the help is shown without importing the module
COMMANDS: dict[str, tuple[str, str]] = {
    "tutorial": ("tutorial", "write realistic example inputs (no download)"),
    "demo": ("tutorial", "run the main job end to end on the example data"),
    "ingest": ("ingest", "bring lesion masks, connectomes and atlases into the lake"),
    "fetch": ("fetch", "download a public connectome (GSP1000) into the lake, resumably"),
    "parcellate": ("methods", "group FC matrix (fcgroupz, fcgroupr) of a connectome under an atlas"),
    "run": ("methods", "lesion network mapping: afnm or fnm"),
    "stats": ("methods", "group statistics: sensitivity, specificity, conjunction, symptom, predict"),
    "atlas": ("methods", "atlases from the data: derive (DictLearning/CanICA regions of a connectome)"),
    "task": ("methods", "task contrasts on parcel series (HCP task runs and their events)"),
    "collect": ("catalog", "one group table (TSV + JSON) for a group question"),
    "export": ("catalog", "BIDS-derivative files of outputs already in the lake"),
    "catalog": ("catalog", "browse and maintain the catalog (ls, show, runs, gc)"),
    "jobs": ("jobs", "run or check a job spec (YAML): ingest + follow-on runs, incremental"),
    "plot": ("plots", "figures: group FC matrix, FNM and AFNM maps, group means, networks"),
    "assign": ("plots", "clusters of a voxel map and the atlas regions they overlap"),
    "report": ("plots", "HTML report of a run (figures, tables, provenance), opens offline"),
}

DESCRIPTION = """\
lakepipe: lesion network mapping at cohort scale.

Lesion masks and normative connectomes go into a chunked Zarr lake (a folder, or s3://);
group FC (parcellate), AFNM and FNM run on Dask; every output is catalogued with its
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

GLOBAL_DEFAULTS = {
    "lake": None,
    "catalog": None,
    "scheduler": None,
    "s3_endpoint": None,
    "verbose": 0,
    "quiet": False,
    "debug": False,
}


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--lake``, ``--catalog``, ``--scheduler``, ``--s3-endpoint``, ``-v``, ``-q``, ``--debug``
    (accepted before and after the command)."""
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
        help="address of an existing Dask scheduler (default $LAKEPIPE_SCHEDULER), 'synchronous' "
        "to run in this process, else a local cluster sized to this machine (started only if "
        "there is something to compute)",
    )
    g.add_argument(
        "--s3-endpoint",
        default=argparse.SUPPRESS,
        help="S3 endpoint URL for non-AWS object stores (or $LAKEPIPE_S3_ENDPOINT)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-v progress and steps, -vv debug)",
    )
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only")
    g.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors"
    )


def build_parser(command: str | None = None, rest: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (the others get placeholder parsers). Its
    ``register(sub, name, rest)`` gets ``rest``, the words after ``command``: the analysis commands and
    ``plot`` import only the method that they name."""
    parser = argparse.ArgumentParser(
        prog="lakepipe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lakepipe {__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, text) in COMMANDS.items():
        if name == command:
            importlib.import_module(f"lakepipe.cli.{module}").register(sub, name, rest)
        else:
            sub.add_parser(name, help=text, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The command word of ``argv`` (global options and their values skipped), if any, and the words
    after it. Help, version and usage errors are left to the real parse (they would print twice)."""
    pre = build_parser()
    words = [a for a in argv if a not in ("-h", "--help", "--version")]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            known, rest = pre.parse_known_args(words)
    except SystemExit:
        return None, []
    return getattr(known, "command", None), rest


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Warnings by default (``-v``: progress and steps; ``-vv``: debug, Dask's own logs too)."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    if verbose < 2:
        for noisy in (
            "distributed",
            "bokeh",
            "tornado",
            "botocore",
            "s3fs",
            "aiobotocore",
            "fsspec",
            "asyncio",
        ):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


def _environment_error(exc: BaseException) -> str | None:
    """One line for failures of the environment (storage, network, database), else None."""
    from lakepipe.io.storage import public_url

    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        where = getattr(exc, "filename", None)
        text = (
            exc.strerror if getattr(exc, "strerror", None) else str(exc).splitlines()[0] if str(exc) else ""
        )
        return f"{public_url(str(where))}: {text}" if where else (text or type(exc).__name__)
    module = type(exc).__module__ or ""
    if module.startswith(
        ("botocore", "aiobotocore", "aiohttp", "sqlalchemy", "psycopg", "requests", "urllib3")
    ):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return text
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line (only the module of its command is imported); global defaults filled in."""
    argv = list(argv)
    command, rest = _command_of(argv)
    args = build_parser(command, rest).parse_args(argv)
    args._argv = argv
    for opt, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, opt):
            setattr(args, opt, default)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.verbose < 2:  # distributed configures its loggers from its config when first imported
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    configure_logging(args.verbose, args.quiet)
    if args.s3_endpoint:
        os.environ["LAKEPIPE_S3_ENDPOINT"] = args.s3_endpoint
    try:
        return int(args.func(args) or 0)
    except LakepipeError as exc:
        if args.debug:
            raise
        print(f"lakepipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        _quiet_shutdown()
        print("lakepipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one-line contract; --debug shows the traceback
        if args.debug:
            raise
        env = _environment_error(exc)
        if env is not None:
            print(f"lakepipe: error: {env}", file=sys.stderr)
        else:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"lakepipe: error: {type(exc).__name__}: {text} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


def entry() -> NoReturn:
    """The ``lakepipe`` command: :func:`main`, then exit without the interpreter's last garbage
    collections over every object the imports made (pandas, SQLAlchemy, Zarr...): ``gc.freeze``
    skips them, which takes ~0.25 s off every command (atexit handlers still run, objects are still
    released by reference counting)."""
    code = main()
    gc.freeze()
    sys.exit(code)


def _quiet_shutdown() -> None:
    """After Ctrl-C: no log or traceback noise from Dask workers and clients shutting down."""
    logging.disable(logging.CRITICAL)
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).disabled = True


if __name__ == "__main__":  # pragma: no cover
    entry()
