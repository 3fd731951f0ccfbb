"""The installed lakepipe version (a leaf module: anything may import it without importing the rest)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lakepipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+src"
