"""Where dask runs an analysis: the default threads, a local cluster, or a running one."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from ..errors import ActstoreError


@contextlib.contextmanager
def scheduler(address: str | None = None, workers: int | None = None,
              memory_limit: str | None = None) -> Iterator[object | None]:
    """Use the cluster at ``address``, or start ``workers`` local worker processes, for the block's computations."""
    if address is None and not workers:
        from dask.diagnostics import ProgressBar

        # a bar only for a person watching a terminal, and only for computations longer than 2 s: never in logs,
        # pipes or tests, where it would push a one-line error off its line
        bar = ProgressBar(minimum=2.0, out=sys.stderr) if sys.stderr.isatty() else contextlib.nullcontext()
        with bar:
            yield None
        return
    from distributed import Client, LocalCluster

    if address is not None:
        try:
            client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ActstoreError(f"cannot reach the dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    if workers < 1:
        raise ActstoreError(f"--workers must be at least 1, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit or "auto",
                      dashboard_address=None, processes=True) as cluster, Client(cluster) as client:
        yield client
