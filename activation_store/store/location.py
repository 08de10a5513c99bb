"""Where a store lives: a local directory or any fsspec URL (``s3://…``).

This is the only module that turns a user's URL into a Zarr store object, so
credentials and endpoint options are handled in one place and never stored."""
from __future__ import annotations

import os
from typing import Any

import fsspec
import zarr
import zarr.storage

from ..errors import ActstoreError


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def storage_options_for(
    url: str,
    endpoint_url: str | None = None,
    anon: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Options for fsspec from CLI flags; credentials stay with the standard AWS chain."""
    options = dict(storage_options or {})
    if str(url).startswith("s3://"):
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        if anon:
            options["anon"] = True
    return options


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False):
    """A Zarr store object for ``url``; raises a one-line error for unknown schemes."""
    url = str(url)
    if not is_remote(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return zarr.storage.LocalStore(os.path.abspath(path), read_only=read_only)
    scheme = url.split("://", 1)[0]
    if scheme not in fsspec.available_protocols():
        raise ActstoreError(f"unknown URL scheme '{scheme}://' in {url!r}; fsspec knows e.g. s3://, gs://, memory://")
    try:
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)
    except ImportError as exc:
        raise ActstoreError(f"cannot open {scheme}:// URLs: {exc}") from None


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a store (its root ``zarr.json``) is already at ``url``."""
    if not is_remote(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return os.path.exists(os.path.join(path, "zarr.json"))
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs.exists(f"{root.rstrip('/')}/zarr.json")
