"""``lakepipe fetch gsp1000``: the GSP1000 connectome from Harvard Dataverse, straight into the lake."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.common import lake_from_args, run_params
from lakepipe.cli.main import add_global_options

#: the options whose values are secrets: never recorded with the run, never printed
SECRET_OPTIONS = ("--api-key",)


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    p = sub.add_parser(
        name,
        help="download a public connectome into the lake (gsp1000)",
        description="Download a normative connectome from its public repository and ingest it as it "
        "arrives, batch by batch: a stopped fetch leaves a registered connectome of the batches done, "
        "and a re-run continues (nothing already ingested is downloaded again).",
    )
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    gsp = datasets.add_parser(
        "gsp1000",
        help="GSP1000 (Harvard Dataverse doi:10.7910/DVN/ILXIKS; needs an API key)",
        description="Fetch the GSP1000 preprocessed connectome (about 1,000 subjects, ~140 GB of tar "
        "archives of per-subject 4D NIfTI runs plus a brain mask) from Harvard Dataverse. Files are "
        "listed through the Dataverse native API, downloaded with range requests (an interrupted "
        "download resumes), checked against their published checksums, and each archive is read member "
        "by member into the connectome, registered per archive. Each archive is deleted once its "
        "subjects are in the lake unless --keep-downloads.",
    )
    gsp.add_argument(
        "--api-key",
        metavar="KEY",
        help="Dataverse API token; never printed, logged or stored (default $DATAVERSE_API_KEY, the "
        "safer way: a command line is visible to other users of the machine)",
    )
    gsp.add_argument("--test-mode", action="store_true", help="fetch one batch (the first archive) only")
    gsp.add_argument("--subjects", type=int, metavar="N", help="stop once the connectome holds N subjects")
    gsp.add_argument("--name", default="gsp1000", help="connectome name in the lake (default gsp1000)")
    gsp.add_argument(
        "--server",
        default="https://dataverse.harvard.edu",
        metavar="URL",
        help="Dataverse installation (default https://dataverse.harvard.edu)",
    )
    gsp.add_argument(
        "--persistent-id",
        default="doi:10.7910/DVN/ILXIKS",
        metavar="PID",
        help="the dataset's persistent identifier (default doi:10.7910/DVN/ILXIKS)",
    )
    gsp.add_argument(
        "--download-dir",
        metavar="DIR",
        help="where archives are downloaded (default <lake>/downloads/NAME for a local lake, else "
        "~/.cache/lakepipe/downloads/NAME)",
    )
    gsp.add_argument(
        "--keep-downloads",
        action="store_true",
        help="keep each archive after its subjects are ingested (default: delete it; a partial "
        "download is always kept to resume)",
    )
    gsp.add_argument(
        "--skip-checksum", action="store_true", help="do not verify the published checksums (warns)"
    )
    gsp.add_argument("--space", default="MNI152NLin6Asym", help="template space (default MNI152NLin6Asym)")
    add_global_options(gsp)
    gsp.set_defaults(func=_gsp1000)


def redacted_command(argv: list[str]) -> str:
    """The command as typed, with the value of every secret option replaced by ``***``."""
    out, hide = [], False
    for a in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        opt, eq, _ = a.partition("=")
        if opt in SECRET_OPTIONS:
            out.append(f"{opt}=***" if eq else a)
            hide = not eq
            continue
        out.append(a)
    return "lakepipe " + " ".join(a if a.endswith("***") else shlex.quote(a) for a in out)


def _gsp1000(args: argparse.Namespace) -> int:
    from lakepipe.ingest.fetch import fetch_gsp1000

    lake = lake_from_args(args, create=True)
    params = {k: v for k, v in run_params(args).items() if k != "api_key"}
    with lake.run_context(redacted_command(args._argv), params, scheduler=args.scheduler) as run:
        res = fetch_gsp1000(
            lake,
            api_key=args.api_key,
            server=args.server,
            persistent_id=args.persistent_id,
            name=args.name,
            test_mode=args.test_mode,
            subjects=args.subjects,
            download_dir=args.download_dir,
            keep_downloads=args.keep_downloads,
            skip_checksum=args.skip_checksum,
            space=args.space,
            run=run,
        )
    print(res.summary())
    return 0
