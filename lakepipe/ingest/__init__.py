"""Ingestion: lesion masks, connectomes and atlases into the lake, registered in the catalog."""

from lakepipe.ingest.atlas import ingest_atlas
from lakepipe.ingest.connectome import ingest_connectome
from lakepipe.ingest.lesions import ingest_lesions
from lakepipe.ingest.result import IngestResult

__all__ = ["IngestResult", "ingest_atlas", "ingest_connectome", "ingest_lesions"]
