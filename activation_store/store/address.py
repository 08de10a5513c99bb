"""Where a store lives, as one small picklable record: its URL and storage options.

A ``Location`` is what crosses process boundaries (campaign tasks carry one) and what a
process opens, once, into a ``Store`` that it then hands down — as xarray's
``ZarrBackendEntrypoint.open_dataset`` opens one store object and passes it on. Checks
that concern only the place (is it writable, is it something else already) live here."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ActstoreError
from . import location
from .handle import Mode, Store


@dataclass(frozen=True)
class Location:
    """A store's URL (local directory or fsspec URL) and the storage options it is opened with."""

    url: str = "./acts.zarr"
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # None and {} mean the same: one canonical form, so equal locations compare equal
        object.__setattr__(self, "url", str(self.url))
        object.__setattr__(self, "storage_options", dict(self.storage_options) if self.storage_options else None)

    def open(self, mode: Mode = "r") -> Store:
        """The store here, opened in ``mode`` (``"a"`` creates it)."""
        return Store.open(self.url, self.storage_options, mode=mode)

    def exists(self) -> bool:
        """Whether a store is here; fails early on a missing bucket or refused credentials."""
        return Store.exists(self.url, self.storage_options)

    def check_writable(self) -> None:
        """Refuse before any work when a store cannot be written here (``check_writable``)."""
        check_writable(self.url)


def check_writable(store: str) -> None:
    """Refuse before any work: an empty path, an unwritable place, a directory that is something else."""
    if location.is_remote(store):
        return
    if not store.strip():
        raise ActstoreError("empty --store; name a directory such as ./acts.zarr or a URL")
    path = location.local_path(store)
    if os.path.exists(path) and not os.path.exists(os.path.join(path, "zarr.json")):
        debris = any(not name.startswith(".") or ".lock" not in name for _, _, files in os.walk(path) for name in files)
        if not os.path.isdir(path) or debris:  # only a killed run's lock may be there before the store is
            raise ActstoreError(f"{store} exists and is not an actstore store; choose a new or empty directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ActstoreError(f"cannot write the store at {store}: {parent} is not a writable directory")
