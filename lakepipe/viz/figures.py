"""Figures without a display: Agg canvases outside pyplot's global state, saved by file extension.

Figures are created as :class:`matplotlib.figure.Figure` objects with an Agg canvas attached, so
plotting never opens a window, works with any configured backend (notebooks display the returned
figure), and figures are freed when no longer referenced (pyplot keeps no reference to them).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lakepipe.errors import InputError

#: Extensions :func:`save_figure` writes.
FIGURE_FORMATS = (".png", ".pdf", ".svg")
DEFAULT_DPI = 100


def new_figure(figsize: tuple[float, float] = (8.0, 6.0), dpi: int = DEFAULT_DPI, **kwargs) -> Figure:
    """An empty figure on an Agg canvas (never shown, never registered with pyplot)."""
    fig = Figure(figsize=figsize, dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_format(path: str | Path) -> str:
    """``png``, ``pdf`` or ``svg`` from a file name; :class:`InputError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise InputError(
            f"cannot tell the figure format from {str(path)!r}: use one of {', '.join(FIGURE_FORMATS)}"
        )
    return suffix[1:]


def save_figure(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` as PNG, PDF or SVG (chosen by the extension of ``path``); returns the path."""
    fmt = figure_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=dpi or fig.dpi, facecolor=fig.get_facecolor())
    return path


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi or fig.dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


def png_data_uri(fig: Figure, dpi: int | None = None) -> str:
    """``data:image/png;base64,...`` for embedding a figure in an HTML page."""
    return "data:image/png;base64," + base64.b64encode(figure_bytes(fig, "png", dpi)).decode("ascii")
