"""Where dask runs an analysis: the default threads, a local cluster, or a running one."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from ..cluster import connect


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
    with connect(address, workers, memory_limit=memory_limit) as client:
        yield client
