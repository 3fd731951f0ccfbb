"""lakepipe: lesion network mapping at cohort scale on a Zarr/xarray data lake."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lakepipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+src"

__all__ = ["__version__", "open_lake"]


def open_lake(url: str | None = None, **kwargs):
    """Open the lake at ``url`` (local folder, ``s3://``, ``memory://``) for notebooks.

    See :class:`lakepipe.lake.Lake`.
    """
    from lakepipe.lake import Lake

    return Lake(url, **kwargs)
