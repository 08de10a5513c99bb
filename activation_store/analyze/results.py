"""Saving analysis results: back under the store (next to the activations, for collaborators)
and as CSV in an output folder."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import xarray as xr

from ..store import Store, layout
from ..store.handle import quiet_zarr


def _storable(result: xr.Dataset) -> xr.Dataset:
    """Object-dtype strings as fixed-width unicode, nested attributes as text: what Zarr v3 takes."""
    out = result.copy()
    for name, var in out.variables.items():
        if var.dtype == object:
            out[name] = var.astype(str)
    out.attrs = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in out.attrs.items()}
    return out


def save_to_store(result: xr.Dataset, store: str | Store, model: str, dataset: str, name: str,
                  storage_options: dict[str, Any] | None = None) -> str:
    """Write ``result`` as group ``results/<model>/<dataset>/<name>`` (replacing an older one); returns the path."""
    store = Store.open(store, storage_options, mode="r+")
    path = layout.results_path(model, dataset, name)
    with quiet_zarr():
        _storable(result).to_zarr(store.zarr_store, group=path, mode="w", consolidated=False, zarr_format=3)
    store.consolidate()
    return path


def load_from_store(store: str | Store, model: str, dataset: str, name: str,
                    storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    store = Store.open(store, storage_options)
    with quiet_zarr():
        return xr.open_zarr(store.zarr_store, group=layout.results_path(model, dataset, name), consolidated=False).load()


def file_name(name: str) -> str:
    """A result name as a portable file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "result"


def save_csv(frame, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{file_name(name)}.csv"
    frame.to_csv(target, index=False)
    return target
