"""What an ingest did."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestResult:
    """Keys written and skipped (already in the lake, unchanged) by one ingest."""

    what: str
    name: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    store: str = ""
    read: list[str] = field(default_factory=list)  #: entries read from the source (validated)

    def summary(self) -> str:
        return f"{self.what} '{self.name}': {len(self.written)} new, {len(self.skipped)} already in the lake"
