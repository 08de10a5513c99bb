"""The obstore client for an ``s3://`` URL, configured from the s3fs-style storage options users already pass.

obstore (Rust, concurrent requests off the GIL) reads about twice as fast as
s3fs (benchmarks/remote_read.py) and writes with many requests in flight. It
takes ``endpoint_url``, ``key``/``secret``/``token``, ``anon``, ``profile`` and
``client_kwargs`` (``endpoint_url``, ``region_name``), and otherwise botocore's
credential chain (environment, config files, profiles, roles), so users pass
nothing new. Where it cannot serve — another scheme, an option it has no
equivalent for, an endpoint only ``~/.aws/config`` knows, no region known for
AWS itself, obstore missing, or ``ACTSTORE_S3_CLIENT=s3fs`` — ``s3_store``
answers None and s3fs serves instead."""
from __future__ import annotations

import datetime
import os
from typing import Any

import zarr.storage

from ..errors import ActstoreError
from .urls import is_s3

SINGLE_PUT_LIMIT = 5 * 2**30  # the largest object S3 takes in one PUT

# s3fs storage options that have an obstore equivalent below; any other option keeps a URL on s3fs
_OPTIONS = {"endpoint_url", "key", "secret", "token", "anon", "profile", "client_kwargs", "max_concurrency"}
_CLIENT_KWARGS = {"endpoint_url", "region_name"}


def s3_client() -> str:
    """The S3 client asked for by ``ACTSTORE_S3_CLIENT``: ``obstore`` (the default) or ``s3fs``."""
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


def s3_store(url: str, storage_options: dict[str, Any] | None = None) -> Any | None:
    """An ``obstore.store.S3Store`` rooted at ``url`` (bucket and prefix), or None where s3fs must serve it.

    Raises a one-line error when no credentials are found or an option's value is refused."""
    try:
        return _s3_store(url, storage_options)
    except ActstoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad option value is the user's one-line error
        raise ActstoreError(f"cannot open {url} with these storage options ({type(exc).__name__})") from None


def _s3_store(url: str, storage_options: dict[str, Any] | None) -> Any | None:
    options = dict(storage_options or {})
    client_kwargs = dict(options.get("client_kwargs") or {})
    if (not is_s3(url) or set(options) - _OPTIONS or set(client_kwargs) - _CLIENT_KWARGS
            or s3_client() != "obstore"):
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
    return S3Store(bucket, prefix=prefix.strip("/") or None, config=config, credential_provider=provider,
                   client_options={"allow_http": str(endpoint or "").startswith("http://")},
                   retry_config={"max_retries": max(0, attempts - 1),
                                 "retry_timeout": datetime.timedelta(seconds=30)})


class S3ObjectStore(zarr.storage.ObjectStore):
    """Zarr's ObjectStore, writing each object below S3's limit in one PUT rather than in 5 MB parts (obstore's
    default): parallelism comes from the many chunks Zarr writes at once, a multipart upload costs three requests
    more, and its ETag is no MD5 for ``actstore push`` to compare. Measured on the tests' S3 server, 8 threads
    putting 8 MB objects: 0.15 GB/s in single PUTs, 0.08 GB/s in parts."""

    async def set(self, key: str, value: Any) -> None:
        import obstore

        self._check_writable()
        data = value.as_buffer_like()
        await obstore.put_async(self.store, key, data, use_multipart=memoryview(data).nbytes >= SINGLE_PUT_LIMIT)
