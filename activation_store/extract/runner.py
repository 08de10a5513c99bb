"""Where a campaign's tasks run: in this process, one after another, or on a dask cluster.

Both runners take the same task functions and records and hand back results as
tasks finish, so a campaign has one code path whatever runs it. On a cluster,
dask reruns the task of a lost worker elsewhere; a task's own error stops the
campaign and is raised here as it was raised there."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from ..cluster import connect

T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    workers: int

    def run(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(item)`` for every item, yielded as each finishes (in any order)."""


class InProcess:
    """Tasks run here, in order: the campaign without a cluster, and the single-run ``extract``."""

    workers = 1

    def run(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


class OnCluster:
    """Tasks run on the workers of a ``distributed.Client``; submission order is their priority."""

    def __init__(self, client: Any):
        self.client = client

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def run(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        from distributed import as_completed

        futures = [self.client.submit(fn, item, pure=False, priority=-i) for i, item in enumerate(items)]
        try:
            for _, result in as_completed(futures, with_results=True):
                yield result
        finally:
            self.client.cancel(futures)


@contextlib.contextmanager
def runner(scheduler: str | None = None, workers: int | None = None) -> Iterator[Runner]:
    """In-process without ``scheduler`` or ``workers``; else a client of that scheduler or of a local cluster."""
    if scheduler is None and workers is None:
        yield InProcess()
        return
    with connect(scheduler, workers) as client:
        yield OnCluster(client)
