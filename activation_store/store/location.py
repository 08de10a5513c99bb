"""Where a store lives: a local directory or any fsspec URL (``s3://…``).

This is the only module that turns a user's URL into a Zarr store object or a
filesystem, so credentials and endpoint options are handled in one place and
never stored: s3fs and obstore find credentials the standard AWS ways
(environment, config files, profiles, instance roles). Storage failures
(missing bucket, refused credentials, unreachable endpoint) become one-line
``ActstoreError``s (``remote_errors``), through ``RemoteStore`` even mid-compute.

Handles on ``s3://``, read-only and writable, go through Zarr's ``ObjectStore``
over obstore (``s3_client``: concurrent requests off the GIL, about twice the read
throughput of s3fs, benchmarks/remote_read.py), configured from the same storage
options; options it does not know, and ``ACTSTORE_S3_CLIENT=s3fs``, stay on
s3fs. obstore's runtime does not survive ``fork()``: a process that used it
starts its workers another way (``fork_safe``; the PyTorch loader uses
forkserver then)."""
from __future__ import annotations

import os
from typing import Any

import fsspec
import zarr
import zarr.storage

from ..errors import ActstoreError
from .remote_errors import raise_remote, remote_error  # noqa: F401 - callers take them from here
from .remote_store import RemoteStore
from .s3_client import S3ObjectStore, s3_store
from .urls import is_remote, is_s3, local_path  # noqa: F401

# s3fs sends a HEAD before every whole-object GET when max_concurrency > 1 (to split
# objects over 50 MB into ranged reads); store chunks are read concurrently by Zarr
# instead, so one GET per chunk halves the requests.
S3_DEFAULTS: dict[str, Any] = {"max_concurrency": 1}


def storage_options_for(
    url: str,
    endpoint_url: str | None = None,
    anon: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Options for fsspec from CLI flags; credentials stay with the standard AWS chain.

    ``endpoint_url`` and ``anon`` are top-level ``s3fs.S3FileSystem`` arguments; they
    apply to ``s3://`` URLs only, so one command can name a local and a remote store."""
    options = dict(storage_options or {})
    if is_s3(url):
        if endpoint_url:
            if not endpoint_url.startswith(("http://", "https://")):
                raise ActstoreError(f"--endpoint-url must start with http:// or https://, got {endpoint_url!r}")
            options["endpoint_url"] = endpoint_url
        if anon:
            options["anon"] = True
    return options


def _options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if is_s3(url):
        return {**S3_DEFAULTS, **(storage_options or {})}
    return dict(storage_options or {})


def _check_scheme(url: str) -> str:
    scheme = url.split("://", 1)[0]
    if scheme not in fsspec.available_protocols():
        raise ActstoreError(f"unknown URL scheme '{scheme}://' in {url!r}; fsspec knows e.g. s3://, gs://, memory://")
    return scheme


def fork_safe(zarr_store: Any) -> bool:
    """Whether a process that has used ``zarr_store`` may still ``fork()`` workers that read (not obstore:
    its Tokio runtime's threads do not survive a fork, and a forked child's reads hang)."""
    return not isinstance(getattr(zarr_store, "wrapped", zarr_store), zarr.storage.ObjectStore)


def object_store(url: str, storage_options: dict[str, Any] | None = None,
                 read_only: bool = False) -> RemoteStore | None:
    """An obstore-backed Zarr store for an ``s3://`` URL with these s3fs-style options, or None where s3fs must
    serve it (``s3_client.s3_store``)."""
    store = s3_store(url, storage_options)
    return None if store is None else RemoteStore(S3ObjectStore(store, read_only=read_only), str(url))


def zarr_store(url: str, storage_options: dict[str, Any] | None = None,
               read_only: bool = False) -> zarr.storage.LocalStore | RemoteStore:
    """A Zarr store object for ``url``: a ``LocalStore``, or a ``RemoteStore`` over obstore (``s3://``) or fsspec;
    raises a one-line error for unknown schemes."""
    url = str(url)
    if not is_remote(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    scheme = _check_scheme(url)
    fast = object_store(url, storage_options, read_only=read_only)
    if fast is not None:
        return fast
    try:
        fs_store = zarr.storage.FsspecStore.from_url(url, storage_options=_options(url, storage_options),
                                                     read_only=read_only)
        return RemoteStore(fs_store, url)
    except ImportError as exc:
        raise ActstoreError(f"cannot open {scheme}:// URLs: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise_remote(exc, url)


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and root path of ``url`` (synchronous API), with the store defaults."""
    url = str(url)
    if not is_remote(url):
        return fsspec.filesystem("file"), local_path(url)
    scheme = _check_scheme(url)
    try:
        fs, root = fsspec.core.url_to_fs(url, **_options(url, storage_options))
    except ImportError as exc:
        raise ActstoreError(f"cannot open {scheme}:// URLs: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise_remote(exc, url)
    return fs, root.rstrip("/")


def missing_store(url: str, storage_options: dict[str, Any] | None = None) -> ActstoreError:
    """The error for 'no store here': names a missing bucket rather than a missing store where it can."""
    if is_remote(url):
        fs, root = filesystem(url, storage_options)
        try:
            fs.ls(root.split("/", 1)[0] if is_s3(url) or url.startswith(("gs://", "gcs://")) else root)
        except FileNotFoundError as exc:
            error = remote_error(exc, url)
            if error is not None:
                return error
        except Exception as exc:  # noqa: BLE001
            error = remote_error(exc, url)
            if error is not None:
                return error
    return ActstoreError(f"no actstore store at {url}")


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether a store (its root ``zarr.json``) is already at ``url``; fails early on a bad bucket or credentials."""
    if not is_remote(url):
        return os.path.exists(os.path.join(local_path(url), "zarr.json"))
    fs, root = filesystem(url, storage_options)
    try:
        fs.info(f"{root}/zarr.json")
        return True
    except FileNotFoundError as exc:
        error = remote_error(exc, url)
        if error is not None:
            raise error from None
        return False
    except Exception as exc:  # noqa: BLE001
        raise_remote(exc, url)
