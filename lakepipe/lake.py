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
        """Outputs matching ``query`` as one :class:`xarray.DataArray`; see :func:`lakepipe.pipelines.collect.collect`."""
        from lakepipe.pipelines.collect import collect

        return collect(self, **query)
