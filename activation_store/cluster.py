"""Connecting to dask.distributed: a running scheduler, or a local cluster of worker processes.

Shared by analyses (``workflows/scheduler.py``) and extraction campaigns
(``extract/runner.py``), so both read ``--scheduler`` and ``--workers`` the same
way and an unreachable scheduler is the same one-line error."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .errors import ActstoreError


@contextlib.contextmanager
def connect(address: str | None = None, workers: int | None = None, *, memory_limit: str | None = None,
            timeout: str = "10s", **worker_options: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for the cluster at ``address``, or for ``workers`` new local worker processes
    (one dask thread each), closed when the block ends."""
    from distributed import Client, LocalCluster

    if address is not None:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ActstoreError(f"cannot reach the dask scheduler at {address}: {detail}") from None
        with client:
            yield client
        return
    if workers is None or workers < 1:
        raise ActstoreError(f"--workers must be at least 1, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit or "auto",
                      dashboard_address=None, processes=True, **worker_options) as cluster, Client(cluster) as client:
        yield client
