"""Where a campaign's tasks run: in this process, one after another, or on a dask cluster.

Both runners take the same task functions and records and hand back results as
tasks finish, so every extraction has one code path whatever runs it. Tasks run
in process may call back into the campaign (``local``): it commits their blocks
as they are written and moves the progress bar. On a cluster,
dask reruns the task of a lost worker elsewhere; a task's own error stops the
campaign and is raised here as it was raised there."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from ..cluster import connect
from ..errors import ActstoreError

T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    workers: int
    local: bool  # tasks run in this process, so they may call back into it

    def run(self, fn: Callable[[T], R], items: Iterable[T], resources: dict[str, float] | None = None) -> Iterator[R]:
        """``fn(item)`` for every item, yielded as each finishes (in any order); on a cluster, each task holds
        ``resources`` (``{"GPU": 1}``: a worker's one GPU) while it runs."""


class InProcess:
    """Tasks run here, in order: the campaign without a cluster, the single-run ``extract`` included."""

    workers = 1
    local = True

    def run(self, fn: Callable[[T], R], items: Iterable[T], resources: dict[str, float] | None = None) -> Iterator[R]:
        for item in items:
            yield fn(item)


class OnCluster:
    """Tasks run on the workers of a ``distributed.Client``; submission order is their priority."""

    local = False

    def __init__(self, client: Any):
        self.client = client

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    def run(self, fn: Callable[[T], R], items: Iterable[T], resources: dict[str, float] | None = None) -> Iterator[R]:
        from distributed import as_completed

        futures = [self.client.submit(fn, item, pure=False, priority=-i, resources=resources)
                   for i, item in enumerate(items)]
        try:
            for _, result in as_completed(futures, with_results=True):
                yield result
        finally:
            self.client.cancel(futures)


    def check_resources(self, resources: dict[str, float] | None, address: str | None) -> None:
        """Refuse, in one line, a cluster none of whose workers declares ``resources`` (tasks would wait forever)."""
        if not resources:
            return
        declared = [w.get("resources") or {} for w in self.client.scheduler_info(n_workers=-1)["workers"].values()]
        if not any(all(d.get(k, 0) >= v for k, v in resources.items()) for d in declared):
            wanted = ",".join(f"{k}={v:g}" for k, v in resources.items())
            raise ActstoreError(f"no worker of the dask cluster at {address or 'hand'} declares the resource {wanted}; "
                                f"start GPU workers with `dask worker --resources {wanted}` (one per GPU)")


@contextlib.contextmanager
def runner(scheduler: str | None = None, workers: int | None = None,
           resources: dict[str, float] | None = None) -> Iterator[Runner]:
    """In-process without ``scheduler`` or ``workers``; else a client of that scheduler or of a local cluster.

    ``resources`` is what each task holds: a local cluster's workers declare it (each worker one GPU), a
    running cluster must have workers that do."""
    if scheduler is None and workers is None:
        yield InProcess()
        return
    with connect(scheduler, workers, **({"resources": resources} if resources and scheduler is None else {})) as client:
        on = OnCluster(client)
        on.check_resources(resources, scheduler)
        yield on
