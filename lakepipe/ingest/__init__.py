"""Ingestion: lesion masks, connectomes and atlases into the lake, registered in the catalog."""

from typing import Any

from lakepipe.ingest.atlas import ingest_atlas
from lakepipe.ingest.connectome import ingest_connectome
from lakepipe.ingest.inplace import ingest_in_place, resolve_inputs
from lakepipe.ingest.lesions import ingest_lesions
from lakepipe.ingest.result import IngestResult

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
    if name == "fetch_gsp1000":  # imported on first use: the HTTP client is needed by fetch only
        from lakepipe.ingest.fetch import fetch_gsp1000

        return fetch_gsp1000
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
