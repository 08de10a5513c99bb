"""Saving analysis results: under the store's results tree (for collaborators) and as CSV in an output folder.

Results live at ``/results/<model>/<dataset>/<name>``, apart from the runs, so a
result's own dimensions (a ``token`` of another length, ``pair``, ``condition``)
never meet a run's and ``actstore.open`` can show the whole store as one tree."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import xarray as xr

from ..store import Store, layout
from ..store.handle import quiet_zarr


@dataclass
class Report:
    """What one analysis step produced: the result, the files written, and where it was saved in the store."""

    result: xr.Dataset
    files: list[Path] = field(default_factory=list)
    store_path: str = ""                                   # empty when not saved
    parts: dict[str, Any] = field(default_factory=dict)   # other pieces of the result (e.g. a target summary)


def _storable(result: xr.Dataset) -> xr.Dataset:
    """Object-dtype strings as fixed-width unicode, nested attributes as text: what Zarr v3 takes."""
    out = result.copy()
    for name, var in out.variables.items():
        if var.dtype == object:
            out[name] = var.astype(str)
    out.attrs = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in out.attrs.items()}
    for var in out.variables.values():
        var.attrs = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in var.attrs.items()}
    return out


def save_to_store(result: xr.Dataset, store: str | Store, model: str, dataset: str, name: str,
                  storage_options: dict[str, Any] | None = None) -> str:
    """Write ``result`` as group ``results/<model>/<dataset>/<name>`` (replacing an older one); returns the path.
    A URL is opened here; a ``Store`` handed in is used as it is, and must be writable (opened once, at the edge)."""
    if isinstance(store, Store):
        store.require_writable()
    else:
        store = Store.open(store, storage_options, mode="r+")
    path = layout.results_path(model, dataset, name)
    with quiet_zarr():
        _storable(result).to_zarr(store.zarr_store, group=path, mode="w", consolidated=False, zarr_format=3)
    store.consolidate()
    return path


def load_from_store(store: str | Store, model: str, dataset: str, name: str,
                    storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """A saved result, read into memory."""
    store = Store.open(store, storage_options)
    with quiet_zarr():
        return xr.open_zarr(store.zarr_store, group=layout.results_path(model, dataset, name), consolidated=False).load()


def file_name(name: str) -> str:
    """A result name as a portable file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "result"


def save_csv(frame: pd.DataFrame, out: Path, name: str) -> Path:
    """``frame`` as ``<out>/<name>.csv`` (without the index)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{file_name(name)}.csv"
    frame.to_csv(target, index=False)
    return target


def save_tables(tables: Mapping[str, pd.DataFrame], out: Path) -> list[Path]:
    """Each ``{name: frame}`` as ``<out>/<name>.csv``, in order."""
    return [save_csv(frame, out, name) for name, frame in tables.items()]


def png_path(out: Path, name: str) -> Path:
    """Where the figure of result ``name`` goes: ``<out>/<name>.png``."""
    return out / f"{file_name(name)}.png"
