"""Ingestion: lesion masks, connectomes and atlases into the lake, registered in the catalog.

The functions are imported from their modules on first use, so that a command importing one of
them (or :mod:`lakepipe.ingest.resolve`) does not import every reader and writer."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakepipe.ingest.atlas import ingest_atlas
    from lakepipe.ingest.connectome import ingest_connectome
    from lakepipe.ingest.fetch import fetch_gsp1000
    from lakepipe.ingest.inplace import ingest_in_place
    from lakepipe.ingest.lesions import ingest_lesions
    from lakepipe.ingest.resolve import resolve_inputs
    from lakepipe.ingest.result import IngestResult

_WHERE = {
    "IngestResult": "lakepipe.ingest.result",
    "fetch_gsp1000": "lakepipe.ingest.fetch",
    "ingest_atlas": "lakepipe.ingest.atlas",
    "ingest_connectome": "lakepipe.ingest.connectome",
    "ingest_in_place": "lakepipe.ingest.inplace",
    "ingest_lesions": "lakepipe.ingest.lesions",
    "resolve_inputs": "lakepipe.ingest.resolve",
}
__all__ = [
    "IngestResult",
    "fetch_gsp1000",
    "ingest_atlas",
    "ingest_connectome",
    "ingest_in_place",
    "ingest_lesions",
    "resolve_inputs",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
