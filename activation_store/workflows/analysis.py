"""What one analysis is, as data: an ``Analysis`` record per analysis, read by the one runner (``runner.py``)
and by the CLI, which makes an ``actstore analyze`` command of each (``cli/analyze.py``).

Every analysis has the same skeleton — open the run (and the lens head), select layers, compute, name the
result, write its CSVs, draw its figure, save it under the store — so an analysis states only what differs:
its compute step, the tables and figures it makes of the result, its terminal table and its own options.
Options are plain ``Param`` records, not click objects: this package never imports the CLI."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import xarray as xr

from ..store import Store
from ..store.sites import RESIDUAL
from .results import Report


@dataclass(frozen=True)
class Target:
    """The run an analysis reads: one model's states over one dataset."""

    model: str
    dataset: str


@dataclass(frozen=True)
class RunOptions:
    """How the runner treats any analysis: where files go, which layers at which site, whether to save and draw.

    A site other than the residual stream writes its files under ``<out>/site-<site>`` and saves its result as
    ``<name>-<site>``, beside the residual stream's."""

    out: Path
    layers: list[int] | None = None
    site: str | None = None     # read another site's states than the residual stream (analyze/sites.py)
    save: bool = True          # under the store's results tree
    plot: bool = True          # PNGs; the plotting backend is imported only then

    @property
    def at_site(self) -> bool:
        return self.site not in (None, RESIDUAL, "hidden")


@dataclass(frozen=True)
class Inputs:
    """What the runner hands a compute step: the open store, the target, the run (layers selected) and the
    lens head where the analysis reads them (else None)."""

    store: Store
    target: Target
    run: xr.Dataset | None = None
    lens: xr.Dataset | None = None


@dataclass
class Computed:
    """What a compute step gives back: the result, its name (file and store name), what is saved when that
    differs from the result, and any other pieces its tables, figure or terminal table need."""

    result: xr.Dataset
    name: str
    stored: xr.Dataset | None = None
    parts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    """One of an analysis's own options. ``kind`` is ``str``, ``int``, ``bool`` (with ``--a/--b`` in ``flag``
    for a switch) or a tuple of choices; ``convert`` turns the CLI value (None included) into the compute
    keyword ``dest`` and raises ``ValueError`` for a bad one, which the CLI reports against ``flag``."""

    flag: str
    dest: str
    help: str = ""
    default: Any = None
    kind: Any = str
    required: bool = False
    metavar: str | None = None
    convert: Callable[[Any], Any] | None = None


Tables = Callable[[Computed], Mapping[str, pd.DataFrame]]
Figures = Callable[[Computed, Path], list[Path]]


@dataclass(frozen=True)
class Analysis:
    """One analysis. ``tables`` maps file names (no suffix) to frames, in the order they are written;
    ``plot`` draws into a folder and returns the PNGs; ``printed`` is the terminal table, a callable on the
    ``Report`` or a ``"module:function"`` name the CLI imports (so this record never imports click).
    ``check`` refuses option combinations before anything is opened (``ValueError``);
    ``reads_run`` False: the compute step opens what it reads itself, and ``--layers`` is not offered."""

    name: str
    help: str
    compute: Callable[..., Computed]
    tables: Tables
    plot: Figures | None = None
    printed: str | Callable[[Report], None] | None = None
    needs_lens: bool = False
    reads_run: bool = True
    params: tuple[Param, ...] = ()
    check: Callable[[Mapping[str, Any]], None] | None = None
