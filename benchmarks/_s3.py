"""S3 pieces for the write-path benchmarks: the tests' local S3 server, and the reference write speed.

``plain_parallel_puts`` is what a write path is measured against: the same bytes
PUT with obstore from ``threads`` threads, nothing else done — no encoding, no
metadata, no checksums beyond what the client does anyway."""
from __future__ import annotations

import atexit
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3 server helper

from s3_server import MotoServer  # noqa: E402


def start_s3_server(request_log: str | None = None) -> tuple[str, dict[str, Any]]:
    """Start moto_server on 127.0.0.1 (stopped at exit) with one new bucket; returns ``(url, storage_options)``
    for a prefix in it. The credentials ride in the options, so the process environment is left alone."""
    server = MotoServer(request_log=request_log).start()
    atexit.register(server.stop)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/bench", {"endpoint_url": server.endpoint, "key": server.key_id, "secret": server.secret}


def plain_parallel_puts(url: str, storage_options: dict[str, Any] | None, blobs: Sequence[bytes],
                        threads: int) -> float:
    """Seconds to PUT every blob (one single-part PUT each, as ``<url>/plain/<i>``) from ``threads`` threads."""
    import obstore
    from obstore.store import S3Store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    options = storage_options or {}
    store = S3Store(bucket, prefix=f"{prefix.rstrip('/')}/plain", endpoint=options["endpoint_url"],
                    access_key_id=options["key"], secret_access_key=options["secret"], region="us-east-1",
                    client_options={"allow_http": True})  # built here: the same with any actstore version
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(lambda item: obstore.put(store, str(item[0]), item[1], use_multipart=False), enumerate(blobs)))
    return time.perf_counter() - started
