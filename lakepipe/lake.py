"""The lake: a storage URL plus its catalog, the object the command line, jobs and notebooks use.

>>> lake = lakepipe.open_lake("lakepipe-demo/lake")                          # doctest: +SKIP
>>> lake.run("fnm", cohort="tutorial", connectome="tutorial")                # doctest: +SKIP
>>> lake.collect("afnm", atlas="Seitzman2018", label="acuteinfarct")         # doctest: +SKIP

Analyses go through the method registry (:mod:`lakepipe.registry`): :meth:`Lake.plan` says what a
run would do, :meth:`Lake.run` runs it in a :meth:`Lake.run_context` (one catalog run record, one
Dask runtime) and returns the published outputs as xarray objects, exactly as the command line
does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import layout
from lakepipe.io.storage import exists, is_local, join, lake_url, public_url
from lakepipe.registry import get_method
from lakepipe.runtime import RunContext, Runtime

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from lakepipe.catalog import Catalog, OutputRecord
    from lakepipe.io.stores import Atlas
    from lakepipe.methods.base import MethodResult, Plan

log = logging.getLogger(__name__)


class Lake:
    """A lakepipe data lake.

    Parameters
    ----------
    url
        Local folder (default ``$LAKEPIPE_LAKE`` or ``./lake``), ``s3://bucket/prefix`` or
        ``memory://name``.
    catalog
        SQLAlchemy URL of the catalog (default ``$LAKEPIPE_CATALOG``, else ``<lake>/catalog.sqlite``
        for local lakes). A team's S3 lake needs a PostgreSQL catalog URL.
    create
        Create the lake (its catalog) if it does not exist yet. Commands that only read refuse a
        lake that does not exist (``create=False``), so a mistyped ``--lake`` is an error, not a
        new empty lake.
    """

    def __init__(self, url: str | None = None, catalog: str | None = None, *, create: bool = True):
        self.url = lake_url(url)
        self._catalog_url = catalog
        self._create = create
        if not create:
            self._check_exists()

    def _check_exists(self) -> None:
        if is_local(self.url):
            path = Path(self.url)
            if path.exists() and not path.is_dir():
                raise InputError("the lake must be a folder, but this is a file", self.url)
            if not path.is_dir():
                raise NotFoundError(
                    "no lake here (create one with `lakepipe ingest ...` or `lakepipe demo`)", self.url
                )
        # the catalog is opened without creating it: a missing catalog is a NotFoundError
        _ = self.catalog

    @cached_property
    def catalog(self) -> Catalog:
        """The lake's catalog (opened on first use)."""
        from lakepipe.catalog import Catalog
        from lakepipe.catalog.urls import catalog_url_for_lake

        if is_local(self.url) and Path(self.url).exists() and not Path(self.url).is_dir():
            raise InputError("the lake must be a folder, but this is a file", self.url)
        url = catalog_url_for_lake(self.url, self._catalog_url)
        if self._create:
            return Catalog(url)
        try:
            return Catalog(url, create=False)
        except NotFoundError:
            raise NotFoundError(
                "no lakepipe catalog for this lake (nothing was ingested yet?)", public_url(self.url)
            ) from None

    def __repr__(self) -> str:
        return f"<lakepipe.Lake {public_url(self.url)}>"

    def _repr_html_(self) -> str:
        summary = self.catalog.summary()
        table = summary.to_html(index=False) if len(summary) else "<p><i>empty</i></p>"
        return f"<b>lakepipe lake</b> <code>{public_url(self.url)}</code>{table}"

    # ---- runs -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def run_context(
        self,
        command: str,
        params: Mapping[str, Any] | None = None,
        *,
        scheduler: str | None = None,
        client: Any = None,
        runtime: Runtime | None = None,
    ) -> Iterator[RunContext]:
        """One run: a catalog run record (written when the run first publishes) and one runtime
        (a Dask client started only when a graph runs, or in-process), closed at the end.

        The record ends ``finished``, ``failed`` (an exception) or ``interrupted`` (Ctrl-C).
        """
        rt = runtime or Runtime(scheduler, lake_url=self.url, client=client)
        ctx = RunContext(self.catalog, command, dict(params or {}), rt)
        try:
            yield ctx
        except KeyboardInterrupt:
            ctx.finish("interrupted")
            raise
        except BaseException:
            ctx.finish("failed")
            raise
        else:
            ctx.finish("finished")
        finally:
            if runtime is None:
                rt.close()

    @contextlib.contextmanager
    def joined_run(
        self, run: RunContext | None, command: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[RunContext]:
        """``run`` if given (a job's steps share one run), else a new :meth:`run_context`."""
        if run is not None:
            yield run
            return
        with self.run_context(command, params) as ctx:
            yield ctx

    def plan(self, method: str, *, recompute: bool = False, **params: Any) -> Plan:
        """What ``lake.run(method, **params)`` would do (reads the lake, writes nothing)."""
        m = get_method(method)
        return m.plan(self, m.params(params), recompute=recompute)

    def run(
        self,
        method: str,
        *,
        recompute: bool = False,
        bids_out: str | Path | None = None,
        scheduler: str | None = None,
        client: Any = None,
        run: RunContext | None = None,
        outputs: bool = True,
        **params: Any,
    ) -> MethodResult:
        """Run ``method`` (``"fnm"``, ``"afnm"``, ``"parcellate"``, ...) with ``params``.

        Outputs already in the lake are reused (``recompute=True`` replaces them); the result's
        ``outputs`` holds every output the parameters cover as an xarray object (lazy for voxel
        maps), and ``summary()`` says what was computed. Same provenance and idempotence as the
        command line; ``run`` joins an existing run context (one job, several steps);
        ``outputs=False`` skips gathering the outputs (benchmarks, scripts that only publish).
        """
        m = get_method(method)
        p = m.params(params)
        if run is not None:
            result = m.run(self, run, p, recompute=recompute, bids_out=bids_out)
        else:
            with self.run_context(
                f"lake.run({method!r})", {"method": method, **p.to_dict()}, scheduler=scheduler, client=client
            ) as ctx:
                result = m.run(self, ctx, p, recompute=recompute, bids_out=bids_out)
        if outputs and result.outputs is None and (result.computed or result.skipped):
            result.outputs = m.outputs(self, m.plan(self, p))
        return result

    # ---- readers ----------------------------------------------------------------------------------
    def open_connectome(self, name: str) -> xr.Dataset:
        """The connectome ``name`` as a lazy :class:`xarray.Dataset` (dims subject, time, voxel|region)."""
        from lakepipe.io.stores import open_connectome

        return open_connectome(self.url, name)

    def read_atlas(self, name: str) -> Atlas:
        """The atlas ``name`` (label volume, region table, space)."""
        from lakepipe.io.stores import read_atlas

        return read_atlas(self.url, name)

    def published(self, records: Iterable[OutputRecord]) -> pd.DataFrame:
        """The published catalog rows of ``records`` (by their keys, in their order; missing ones
        left out)."""
        recs = list(records)
        if not recs:
            return self.catalog.lookup("none", [])
        frames = [
            self.catalog.lookup(method, [r.skip_key for r in recs if r.method == method])
            for method in dict.fromkeys(r.method for r in recs)
        ]
        if len(frames) == 1:
            return frames[0]
        import pandas as pd

        return pd.concat(frames, ignore_index=True)

    def lesions(self, cohort: str, participants: list[str] | None = None) -> pd.DataFrame:
        """Registered lesion entries of a cohort (one row per participant/session/label)."""
        return self.catalog.query(kind="lesion", cohort=cohort, participant=participants)

    def participants(self, cohort: str) -> pd.DataFrame:
        """The cohort's ``participants.tsv`` as ingested (one row per participant, clinical columns)."""
        from lakepipe.io.stores import read_participants

        return read_participants(self.url, cohort)

    def collect(self, method: str, **query: Any) -> xr.DataArray:
        """Published outputs of ``method`` matching ``query`` as one :class:`xarray.DataArray`
        (see :func:`lakepipe.collect.collect` for the filters)."""
        from lakepipe.collect import collect

        return collect(self, method, **query)

    def export(self, method: str, out_dir: str | Path, **query: Any) -> list[Path]:
        """BIDS-derivative files of the published outputs of ``method`` matching ``query``."""
        from lakepipe.export import export

        return export(self, method, out_dir, **query)

    def store_url(self, uri: str) -> str:
        """URL of a lake-relative store URI (as the catalog records it)."""
        return layout.resolve(self.url, uri)

    def has_store(self, uri: str) -> bool:
        return exists(join(self.store_url(uri), "zarr.json"))
