"""The lake: a storage URL plus its catalog, the object both the CLI and notebooks work through."""

from __future__ import annotations

import logging
from functools import cached_property

import pandas as pd
import xarray as xr

from lakepipe.io import stores
from lakepipe.io.storage import lake_url, public_url

log = logging.getLogger(__name__)


class Lake:
    """A lakepipe data lake.

    Parameters
    ----------
    url
        Local folder (default ``$LAKEPIPE_LAKE`` or ``./lake``), ``s3://bucket/prefix`` or ``memory://name``.
    catalog
        SQLAlchemy URL of the catalog (default ``$LAKEPIPE_CATALOG``, else ``<lake>/catalog.sqlite``
        for local lakes). A team's S3 lake needs a PostgreSQL catalog URL.
    """

    def __init__(self, url: str | None = None, catalog: str | None = None):
        self.url = lake_url(url)
        self._catalog_url = catalog
        self.run_id: str | None = None
        self._published = [0, 0]  # outputs registered, skipped (already published) in this run

    # ---- publishing ---------------------------------------------------------------------------
    def publish(self, records):
        """Register ``records`` in one transaction (the publish step), attributed to the current run."""
        res = self.catalog.register(records, run_id=self.run_id)
        self._published[0] += res.inserted
        self._published[1] += res.skipped
        return res

    def start_run(self, command: str, params: dict) -> str:
        """Record a run in the catalog; outputs published until :meth:`finish_run` point to it."""
        self.run_id = self.catalog.start_run(command, params)
        self._published = [0, 0]
        return self.run_id

    def finish_run(self, status: str = "finished") -> None:
        if self.run_id is not None:
            self.catalog.finish_run(self.run_id, *self._published, status=status)
            self.run_id = None

    @cached_property
    def catalog(self):
        from lakepipe.catalog import Catalog

        return Catalog.for_lake(self.url, self._catalog_url)

    def __repr__(self) -> str:
        return f"<lakepipe.Lake {public_url(self.url)}>"

    def _repr_html_(self) -> str:
        summary = self.catalog.summary()
        table = summary.to_html(index=False) if len(summary) else "<p><i>empty</i></p>"
        return f"<b>lakepipe lake</b> <code>{public_url(self.url)}</code>{table}"

    # ---- readers ------------------------------------------------------------------------------
    def open_connectome(self, name: str) -> xr.Dataset:
        """The connectome ``name`` as a lazy :class:`xarray.Dataset` (dims subject, time, voxel|region)."""
        return stores.open_connectome(self.url, name)

    def read_atlas(self, name: str) -> stores.Atlas:
        return stores.read_atlas(self.url, name)

    def lesions(self, cohort: str, participants: list[str] | None = None) -> pd.DataFrame:
        """Registered lesion entries of a cohort (one row per participant/session/label)."""
        df = self.catalog.query(kind="lesion", cohort=cohort, participant=participants)
        return df

    def participants(self, cohort: str) -> pd.DataFrame:
        """The cohort's ``participants.tsv`` as ingested (one row per participant, clinical columns)."""
        return stores.read_participants(self.url, cohort)

    def collect(self, **query):
        """Outputs matching ``query`` as one :class:`xarray.DataArray`.

        See :func:`lakepipe.pipelines.collect.collect`.
        """
        from lakepipe.pipelines.collect import collect

        return collect(self, **query)
