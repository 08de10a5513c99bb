"""Making and saving one figure: integer layer ticks, PNG at a fixed resolution.

Figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's: nothing here
chooses or needs a backend, and a notebook's open figures are left alone."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 120


def new_figure(figsize: tuple[float, float] = (7, 4), **subplots: Any) -> tuple[Figure, Any]:
    """A figure and its axes (``Figure.subplots`` arguments). Make figures inside ``fonts.cjk_fonts()``."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(**subplots)


def save(fig: Figure, path: Path) -> Path:
    """Lay out and write ``fig`` as a PNG at ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        if ax.get_xlabel() == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # scripts no installed font has
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    return path
