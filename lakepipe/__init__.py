"""lakepipe: lesion network mapping at cohort scale on a Zarr/xarray data lake."""

from typing import Any

from lakepipe._version import __version__

__all__ = ["__version__", "open_lake"]


def open_lake(url: str | None = None, **kwargs: Any) -> Any:
    """Open the lake at ``url`` (local folder, ``s3://``, ``memory://``) for notebooks.

    See :class:`lakepipe.lake.Lake`: ``lake.plan``/``lake.run`` run analyses, ``lake.collect`` and
    ``lake.export`` answer group questions.
    """
    from lakepipe.lake import Lake

    return Lake(url, **kwargs)
