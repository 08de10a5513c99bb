"""Where a store lives: a local directory or any fsspec URL (``s3://…``).

This is the only module that turns a user's URL into a Zarr store object or a
filesystem, so credentials and endpoint options are handled in one place and
never stored: s3fs finds credentials the standard AWS ways (environment, config
files, profiles, instance roles). Storage failures (missing bucket, refused
credentials, unreachable endpoint) become one-line ``ActstoreError``s here."""
from __future__ import annotations

import functools
import os
from typing import Any, NoReturn
from urllib.parse import urlsplit

import fsspec
import zarr
import zarr.storage

from ..errors import ActstoreError

# s3fs sends a HEAD before every whole-object GET when max_concurrency > 1 (to split
# objects over 50 MB into ranged reads); store chunks are read concurrently by Zarr
# instead, so one GET per chunk halves the requests.
S3_DEFAULTS: dict[str, Any] = {"max_concurrency": 1}

_ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403", "Forbidden", "401"}


_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url: str) -> str:
    """The absolute directory of a local store URL (plain path or ``file://``)."""
    url = str(url)
    return os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)


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
    if str(url).startswith(("s3://", "s3a://")):
        if endpoint_url:
            if not endpoint_url.startswith(("http://", "https://")):
                raise ActstoreError(f"--endpoint-url must start with http:// or https://, got {endpoint_url!r}")
            options["endpoint_url"] = endpoint_url
        if anon:
            options["anon"] = True
    return options


def _options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if str(url).startswith(("s3://", "s3a://")):
        return {**S3_DEFAULTS, **(storage_options or {})}
    return dict(storage_options or {})


def _check_scheme(url: str) -> str:
    scheme = url.split("://", 1)[0]
    if scheme not in fsspec.available_protocols():
        raise ActstoreError(f"unknown URL scheme '{scheme}://' in {url!r}; fsspec knows e.g. s3://, gs://, memory://")
    return scheme


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _bucket(url: str) -> str:
    return urlsplit(str(url)).netloc


def remote_error(exc: BaseException, url: str) -> ActstoreError | None:
    """A one-line error for a storage failure at ``url``, or None when ``exc`` is not one.

    Only error codes and endpoints are quoted, never server messages, so nothing a
    credential provider returned can reach the output."""
    if isinstance(exc, ActstoreError):
        return exc
    try:
        from botocore import exceptions as boto
    except ImportError:  # no s3fs: nothing remote to translate
        boto = None
    for cause in _chain(exc):
        code = _error_code(cause)
        if code in _MISSING_CODES:
            return None  # an object that is not there: the caller decides what that means
        if code == "NoSuchBucket":
            return ActstoreError(f"bucket '{_bucket(url)}' does not exist ({url})")
        if code in _ACCESS_CODES:
            return ActstoreError(f"access to {url} denied ({code}); check the AWS credentials (AWS_PROFILE, "
                                 f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws) or use --anon for a public bucket")
        if boto is not None:
            if isinstance(cause, (boto.NoCredentialsError, boto.PartialCredentialsError)):
                return ActstoreError(f"no AWS credentials found for {url}; set AWS_PROFILE or "
                                     f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --anon for a public bucket")
            if isinstance(cause, (boto.EndpointConnectionError, boto.ConnectTimeoutError, boto.ConnectionClosedError,
                                  boto.ReadTimeoutError)):
                endpoint = urlsplit(str(getattr(cause, "kwargs", {}).get("endpoint_url", "")))
                where = f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else "the storage endpoint"
                return ActstoreError(f"cannot reach {where} for {url} ({type(cause).__name__}); "
                                     f"check --endpoint-url and the network")
            if isinstance(cause, boto.ClientError):
                return ActstoreError(f"storage request for {url} failed ({code or 'error'})")
            if isinstance(cause, boto.BotoCoreError):
                return ActstoreError(f"storage request for {url} failed ({type(cause).__name__})")
        if isinstance(cause, PermissionError) and is_remote(url):
            return ActstoreError(f"access to {url} denied; check the credentials or use --anon for a public bucket")
    return None


def raise_remote(exc: BaseException, url: str) -> NoReturn:
    """Re-raise ``exc`` as a one-line error when it is a storage failure; otherwise unchanged."""
    error = remote_error(exc, url)
    if error is None or error is exc:
        raise exc
    raise error from None


def _translated(method):
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - narrowed by raise_remote
            raise_remote(exc, self.url)
    return wrapper


def _translated_iter(method):
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            async for item in method(self, *args, **kwargs):
                yield item
        except Exception as exc:  # noqa: BLE001
            raise_remote(exc, self.url)
    return wrapper


class RemoteStore(zarr.storage.FsspecStore):
    """An FsspecStore whose storage failures surface as one-line ``ActstoreError``s, even mid-compute."""

    @property
    def url(self) -> str:
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return f"{protocol}://{self.path}"

    get = _translated(zarr.storage.FsspecStore.get)
    get_partial_values = _translated(zarr.storage.FsspecStore.get_partial_values)
    set = _translated(zarr.storage.FsspecStore.set)
    delete = _translated(zarr.storage.FsspecStore.delete)
    delete_dir = _translated(zarr.storage.FsspecStore.delete_dir)
    exists = _translated(zarr.storage.FsspecStore.exists)
    getsize = _translated(zarr.storage.FsspecStore.getsize)
    list = _translated_iter(zarr.storage.FsspecStore.list)
    list_dir = _translated_iter(zarr.storage.FsspecStore.list_dir)
    list_prefix = _translated_iter(zarr.storage.FsspecStore.list_prefix)


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False):
    """A Zarr store object for ``url``; raises a one-line error for unknown schemes."""
    url = str(url)
    if not is_remote(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    scheme = _check_scheme(url)
    try:
        return RemoteStore.from_url(url, storage_options=_options(url, storage_options), read_only=read_only)
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
            fs.ls(root.split("/", 1)[0] if url.startswith(("s3://", "s3a://", "gs://", "gcs://")) else root)
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
