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
from ..store.lock import results_lock
from ..store.remote_errors import raise_remote
from ..store.replace import Staged, abandon, fault, publish, recover, stage
from .result_save import check_staged, ensure_parents, save_failure, write_staged


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
    """Write ``result`` as group ``results/<model>/<dataset>/<name>``, replacing an older one in one step; returns
    the path. A URL is opened here; a ``Store`` handed in is used as it is, and must be writable.

    The result is computed in full first; then, under the store's results lock, it is written under a temporary
    name, read back and compared, and only then put in place (``store/replace.py``) and consolidated. A kill, a
    full disk or a failed check at any point leaves the old result or the new one, whole; never neither."""
    if isinstance(store, Store):
        store.require_writable()
    else:
        store = Store.open(store, storage_options, mode="r+")
    path = layout.results_path(model, dataset, name)
    storable = _storable(result).load()   # computed before the store is touched
    staged = None
    try:
        with results_lock(store):
            recover(store)
            ensure_parents(store, path)
            staged = stage(store, path)
            _write_and_publish(storable, staged, name)
    except OSError as exc:
        raise save_failure(store, name, exc, staged) from None
    except Exception as exc:  # noqa: BLE001 - a storage client's own failures become one line
        raise_remote(exc, store.url)
    return path


def _write_and_publish(storable: xr.Dataset, staged: Staged, name: str) -> None:
    try:
        write_staged(storable, staged)
        fault("staged")
        check_staged(storable, staged, name)
        staged.mark("checked")
        fault("checked")
        publish(staged)
    except BaseException:
        abandon(staged)
        raise


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
