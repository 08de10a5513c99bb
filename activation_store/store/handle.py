"""A store handle: one location, opened once, passed down instead of URL strings.

``Store.open(url)`` turns a URL (a local directory or any fsspec URL) and its
storage options into the Zarr store object and root group, checks the format
once, and keeps them. Everything that reads or writes a store takes a ``Store``;
public entry points also accept a URL and open it here — like xarray's
``ZarrBackendEntrypoint.open_dataset``, which opens one store object and hands it on.

Read-only handles read the consolidated metadata (one request over S3);
writable handles read live metadata, since they change it."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Literal

import fsspec
import zarr

from ..errors import ActstoreError
from . import layout, location

Mode = Literal["r", "r+", "a"]


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence the warnings zarr and xarray give for what this format does on purpose (variable-length strings,
    the CRC32C codec, our consolidated metadata) — for the call, never for the whole process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3 specification.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr v3 spec.*")
        warnings.filterwarnings("ignore", message=".*is not recognized as a component of a Zarr hierarchy.*")  # lock files
        yield


class Store:
    """One actstore store: its URL, storage options, Zarr store object and root group.

    Modes: ``"r"`` reads an existing store; ``"r+"`` writes an existing one; ``"a"`` creates it if missing."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, zarr_store: Any, root: zarr.Group, mode: Mode):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.zarr_store = zarr_store
        self.root = root
        self.mode = mode

    def __repr__(self) -> str:
        return f"Store({self.url!r}, mode={self.mode!r})"

    @property
    def writable(self) -> bool:
        return self.mode != "r"

    @property
    def fork_safe(self) -> bool:
        """Whether this process may ``fork()`` workers that read stores after reading through this handle."""
        return location.fork_safe(self.zarr_store)

    @classmethod
    def open(cls, url: str | Store, storage_options: dict[str, Any] | None = None, *, mode: Mode = "r") -> Store:
        """Open ``url`` (or hand back an already open ``Store`` that allows ``mode``)."""
        if isinstance(url, Store):
            if mode != "r" and not url.writable:
                return cls.open(url.url, url.storage_options, mode=mode)
            return url
        url = str(url)
        if not url.strip():
            raise ActstoreError("empty store URL; name a directory such as ./acts.zarr or a URL such as s3://bucket/acts.zarr")
        zstore = location.zarr_store(url, storage_options, read_only=mode == "r")
        try:
            with quiet_zarr():
                if mode == "r":
                    root = zarr.open_group(zstore, mode="r", zarr_format=3)
                else:
                    root = zarr.open_group(zstore, mode="r+", use_consolidated=False)
        except FileNotFoundError:
            if mode != "a":
                raise location.missing_store(url, storage_options) from None
            # "a", not "w-": the directory may already hold a run's lock (store/lock.py)
            root = zarr.open_group(zstore, mode="a", attributes={layout.FORMAT_ATTR: layout.FORMAT_VERSION})
        except (PermissionError, OSError) as exc:
            raise ActstoreError(f"cannot write the store at {url}: {exc.strerror or exc}") from None
        except ValueError as exc:  # a damaged root zarr.json
            raise layout.unreadable(url, exc) from None
        except Exception as exc:  # noqa: BLE001 - storage failures become one line
            location.raise_remote(exc, url)
        layout.check_format(dict(root.attrs), url)
        return cls(url, storage_options, zstore, root, mode)

    @staticmethod
    def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
        """Whether a store is at ``url``; fails early on a missing bucket or refused credentials."""
        return location.exists(url, storage_options)

    # --- nodes -----------------------------------------------------------------------------------------
    def group(self, path: str) -> zarr.Group | None:
        """The group at ``path``, or None when there is none."""
        try:
            node = self.root[path]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    def live_group(self, path: str) -> zarr.Group:
        """The group at ``path`` read from its own metadata, bypassing consolidated metadata (progress of a live run)."""
        with quiet_zarr():
            return zarr.open_group(self.zarr_store, path=path, mode="r" if self.mode == "r" else "r+",
                                   use_consolidated=False)

    def require_writable(self) -> None:
        if not self.writable:
            raise ActstoreError(f"{self.url} is open read-only")

    # --- maintenance -------------------------------------------------------------------------------------
    def consolidate(self) -> None:
        """Refresh consolidated metadata so a reader opens the whole store in one request."""
        self.require_writable()
        with quiet_zarr():
            zarr.consolidate_metadata(self.zarr_store)

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The fsspec filesystem and root path of the store (synchronous API)."""
        return location.filesystem(self.url, self.storage_options)

    def nbytes(self, path: str) -> int:
        """Bytes stored under ``path``."""
        fs, root = self.filesystem()
        try:
            return int(fs.du(f"{root}/{path}", total=True))
        except Exception as exc:  # noqa: BLE001
            location.raise_remote(exc, self.url)
