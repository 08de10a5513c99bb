"""Where a store lives: a local directory or any fsspec URL (``s3://…``).

This is the only module that turns a user's URL into a Zarr store object or a
filesystem, so credentials and endpoint options are handled in one place and
never stored: s3fs finds credentials the standard AWS ways (environment, config
files, profiles, instance roles). Storage failures (missing bucket, refused
credentials, unreachable endpoint) become one-line ``ActstoreError``s here.

Read-only handles on ``s3://`` read through Zarr's ``ObjectStore`` over obstore
(Rust, concurrent requests off the GIL): about twice the read throughput of
s3fs (benchmarks/remote_read.py). It is configured from the same storage options
(``endpoint_url``, ``key``/``secret``/``token``, ``anon``, ``profile``,
``client_kwargs``) and botocore's credential chain, so users pass nothing new;
options it does not know, and writable handles, stay on s3fs.
``ACTSTORE_S3_CLIENT=s3fs`` turns it off. obstore's runtime does not survive
``fork()``: a process that read through it starts its workers another way
(``fork_safe``; the PyTorch loader uses forkserver then)."""
from __future__ import annotations

import datetime
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


def _obstore_error(cause: BaseException, url: str) -> ActstoreError | None:
    """obstore's failures, by class: it names no AWS error codes."""
    try:
        from obstore import exceptions as obs
    except ImportError:
        return None
    if isinstance(cause, (obs.PermissionDeniedError, obs.UnauthenticatedError)):
        return ActstoreError(f"access to {url} denied; check the AWS credentials (AWS_PROFILE, "
                             f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws) or use --anon for a public bucket")
    if isinstance(cause, obs.GenericError) and "error sending request" in str(cause).lower():
        return ActstoreError(f"cannot reach the storage endpoint for {url}; check --endpoint-url and the network")
    if isinstance(cause, obs.BaseError) and not isinstance(cause, obs.NotFoundError):
        return ActstoreError(f"storage request for {url} failed ({type(cause).__name__})")
    return None


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
        error = _obstore_error(cause, url)
        if error is not None:
            return error
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


class RemoteObjectStore(zarr.storage.ObjectStore):
    """Zarr's ObjectStore over obstore, with storage failures as one-line ``ActstoreError``s like ``RemoteStore``."""

    def __init__(self, store: Any, *, read_only: bool = False, url: str = "") -> None:
        super().__init__(store, read_only=read_only)
        self.url = url

    def with_read_only(self, read_only: bool = False) -> "RemoteObjectStore":
        return type(self)(self.store, read_only=read_only, url=self.url)

    get = _translated(zarr.storage.ObjectStore.get)
    get_partial_values = _translated(zarr.storage.ObjectStore.get_partial_values)
    exists = _translated(zarr.storage.ObjectStore.exists)
    getsize = _translated(zarr.storage.ObjectStore.getsize)
    list = _translated_iter(zarr.storage.ObjectStore.list)
    list_dir = _translated_iter(zarr.storage.ObjectStore.list_dir)
    list_prefix = _translated_iter(zarr.storage.ObjectStore.list_prefix)


# s3fs storage options that have an obstore equivalent below; any other option keeps a handle on s3fs
_OBSTORE_OPTIONS = {"endpoint_url", "key", "secret", "token", "anon", "profile", "client_kwargs", "max_concurrency"}
_OBSTORE_CLIENT_KWARGS = {"endpoint_url", "region_name"}


def fork_safe(zarr_store: Any) -> bool:
    """Whether a process that has read through ``zarr_store`` may still ``fork()`` workers that read (not obstore:
    its Tokio runtime's threads do not survive a fork, and a forked child's reads hang)."""
    return not isinstance(zarr_store, zarr.storage.ObjectStore)


def _s3_client() -> str:
    client = os.environ.get("ACTSTORE_S3_CLIENT", "obstore").strip().lower()
    if client not in ("obstore", "s3fs"):
        raise ActstoreError(f"ACTSTORE_S3_CLIENT must be 'obstore' or 's3fs', got {client!r}")
    return client


def _credential_provider(credentials: Any):
    """obstore asks this for credentials; botocore's own (refreshable) credentials answer, re-asked every 5 minutes."""
    def provide() -> dict[str, Any]:
        frozen = credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key, "token": frozen.token,
                "expires_at": datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)}
    return provide


def object_store(url: str, storage_options: dict[str, Any] | None = None) -> RemoteObjectStore | None:
    """A read-only obstore-backed Zarr store for an ``s3://`` URL with these s3fs-style options, or None where
    s3fs must serve it (another scheme, an option obstore has no equivalent for, no region known for AWS itself,
    obstore missing, or ``ACTSTORE_S3_CLIENT=s3fs``)."""
    options = dict(storage_options or {})
    client_kwargs = dict(options.get("client_kwargs") or {})
    if (not str(url).startswith(("s3://", "s3a://")) or set(options) - _OBSTORE_OPTIONS
            or set(client_kwargs) - _OBSTORE_CLIENT_KWARGS or _s3_client() != "obstore"):
        return None
    try:
        from obstore.store import S3Store
        import botocore.session
    except ImportError:
        return None
    session = botocore.session.Session(profile=options.get("profile"))
    endpoint = (options.get("endpoint_url") or client_kwargs.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if not endpoint and ({"endpoint_url", "services"} & set(session.get_scoped_config())):
        return None  # an endpoint set in ~/.aws/config: botocore's to resolve
    region = client_kwargs.get("region_name") or session.get_config_variable("region")
    if not region and not endpoint:
        return None  # s3fs finds the bucket's region itself
    config: dict[str, Any] = {"region": region or "us-east-1"}
    provider = None
    if endpoint:
        config["endpoint"] = endpoint
    if options.get("anon"):
        config["skip_signature"] = True
    elif options.get("key") or options.get("secret"):
        config.update(access_key_id=options.get("key") or "", secret_access_key=options.get("secret") or "")
        if options.get("token"):
            config["session_token"] = options["token"]
    else:
        credentials = session.get_credentials()  # the standard chain: environment, config files, profile, roles
        if credentials is None:
            raise ActstoreError(f"no AWS credentials found for {url}; set AWS_PROFILE or "
                                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --anon for a public bucket")
        provider = _credential_provider(credentials)
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)  # botocore's default and its setting
    bucket, _, prefix = str(url).split("://", 1)[1].partition("/")
    store = S3Store(bucket, prefix=prefix.strip("/") or None, config=config, credential_provider=provider,
                    client_options={"allow_http": str(endpoint or "").startswith("http://")},
                    retry_config={"max_retries": max(0, attempts - 1),
                                  "retry_timeout": datetime.timedelta(seconds=30)})
    return RemoteObjectStore(store, read_only=True, url=str(url))


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False):
    """A Zarr store object for ``url``; raises a one-line error for unknown schemes."""
    url = str(url)
    if not is_remote(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    scheme = _check_scheme(url)
    if read_only:
        try:
            fast = object_store(url, storage_options)
        except ActstoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad option value is the user's one-line error
            raise ActstoreError(f"cannot open {url} with these storage options ({type(exc).__name__})") from None
        if fast is not None:
            return fast
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
