"""Extraction: many models × datasets into one store, on one process or many workers — one code path.

Every extraction is a campaign: a plain ``extract`` of one model over one
dataset is a campaign of one run in this process (extract/run.py). Plan on the
client, compute on workers. The client checks every name and option,
tokenizes, takes each run's lock, has each model's lens head written once (by a
prepare task, which also takes the first look at the new runs' first examples
and measures the free memory ``--batch-size auto`` sizes from), creates every
new run group with its coordinates, and only then submits fill tasks: each owns
a chunk-aligned token range of one run and writes only its own chunks. As
results come back, out of order, the client commits their chunk ranges in the
run's block manifest (store/commits.py); readers see the longest committed
prefix. Rerunning skips committed chunks whatever the worker count; a task
lost with its worker is rerun by dask and rewrites the same bytes.

Without a cluster the tasks run here (extract/runner.py), one task per stretch
of uncommitted chunks of a run, and commit block by block as the writer thread
finishes each (a kill loses one block at most); the progress bar moves batch
by batch. On a cluster, tasks cover ``BATCHES_PER_TASK`` mean batches on a fixed
grid (it does not depend on the number of workers) and commit as they return.
What only this process can do stays here: image and audio inputs (made per
batch by the client's media encoder) and ``--device-map`` (one model over
several devices of this machine) are refused on a cluster.

A run locked by another writer is skipped, named in the result, when the
campaign has other runs to do — the other writer is finishing it, and the rest
of the grid does not depend on it; when every run is locked the campaign is
refused, as a single ``extract`` is.

Where the model runs is part of each task's model reference: ``--device`` and
``--compute-dtype`` are settled on the client (the compute dtype is part of
every run's configuration). On a cluster, ``cuda`` means each worker's own GPU:
GPU workers declare one ``GPU`` resource (a local cluster's do, one worker per
GPU) and every task holds it, so one model sits on one GPU."""
from __future__ import annotations

import contextlib
import errno
import functools
import math
import time
from collections import Counter
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..checksums import config_hash
from ..errors import ActstoreError
from ..store import commits
from ..store.address import check_writable  # noqa: F401 - defined here before it moved to store/
from ..store.handle import Store
from ..store.views import finish_run
from ..store.write import PROGRESS_ATTR, _remove_partials, consolidate_if_stale, create_run, run_attrs
from . import model_cache
from .media import MediaLayout
from .early import answer_early, lock_all as _lock_all
from .planning import RunPlan, _place, checked_sources, plan, resumed_chunk  # noqa: F401 - plan and resumed_chunk were defined here
from .progress import progress_bar
from .results import CampaignResult, ExtractResult, _tally
from .runner import Runner, runner
from .spec import RunSpec, stored_config_matches
from .tasks import FillTask, PrepareTask, Prepared, batches_for, fill, prepare

__all__ = ["BATCHES_PER_TASK", "CampaignResult", "ExtractResult", "RunPlan", "check_writable", "plan", "run_campaign"]

# Tokens a fill task on a cluster covers, in batches: a batch straddling two tasks is computed twice, so a
# task of 40 mean batches costs at most ~2.5% extra forward passes.
BATCHES_PER_TASK = 40


def _read_state(plans: list[RunPlan], store: Store | None) -> None:
    """Each run's stored state in ``store`` (None: not made yet): new, to resume (its committed chunks),
    complete, or in conflict (refused)."""
    for p in plans:
        existing = run_attrs(store, p.path) if store is not None else None
        p.settle(existing)
        if existing is None or p.spec.overwrite:
            p.create, p.committed = True, []
            continue
        stored_config_matches(existing, p.config, p.name, p.spec.store)
        p.committed = commits.committed(existing.get(PROGRESS_ATTR), p.n_units, p.chunk_tokens)
        p.status = "already complete" if p.done else ("resumed" if p.committed else "written")


def _fill_tasks(p: RunPlan, threads: int | None, batches_per_task: int | None) -> list[FillTask]:
    """Tasks for a run's uncommitted chunks: on a fixed grid of ``batches_per_task`` mean batches (whole chunks),
    or, with None, one task per stretch of uncommitted chunks."""
    tokens, batch = p.tokens, p.batch_size
    offsets, counts = p.offsets, p.counts.astype(np.int64)
    n_batches = -(-len(tokens.ids) // batch)
    mean_batch = p.n_units / max(1, n_batches)
    per_task = max(1, math.ceil(batches_per_task * mean_batch / p.chunk_tokens)) if batches_per_task else p.n_chunks + 1
    ref = p.ref
    inputs = tokens.model_inputs if isinstance(tokens, MediaLayout) else None
    tasks = []
    for gap_start, gap_stop in commits.missing(p.committed, p.n_chunks):
        for start in range(gap_start, gap_stop):
            if start != gap_start and start % per_task:
                continue
            stop = min(gap_stop, (start // per_task + 1) * per_task)
            first, last = batches_for(offsets, counts, batch, start * p.chunk_tokens,
                                      min(stop * p.chunk_tokens, p.n_units))
            tasks.append(FillTask(ref, p.spec.location, p.path, p.keep, start, stop,
                                  int(offsets[first * batch]),
                                  tuple(tokens.ids[b * batch:(b + 1) * batch] for b in range(first, last)), threads,
                                  first * batch, inputs))
    return tasks


def _prepare(plans: list[RunPlan], run: Runner, threads: int | None,
             resources: dict[str, float] | None) -> dict[str, Prepared]:
    """One prepare task per model with work: its lens head written once, before any forward pass."""
    by_model: dict[ModelRef, list[RunPlan]] = {}
    for p in plans:
        by_model.setdefault(p.ref, []).append(p)
    spec = plans[0].spec
    tasks = [PrepareTask(ref, spec.location,
                         {p.path: p.tokens.ids[: min(4, len(p.tokens.ids))] for p in group if p.create}, threads,
                         {p.path: p.keep.site_specs for p in group if p.keep.site_specs})
             for ref, group in by_model.items()]
    results: dict[str, Prepared] = {}
    for task, prepared in zip(tasks, _in_order(run, prepare, tasks, resources)):
        for p in by_model[task.ref]:
            results[p.path] = prepared
            if p.path in prepared.sites:  # what the fill tasks hook and the new group holds
                p.keep = replace(p.keep, sites=prepared.sites[p.path])
    return results


def _in_order(run: Runner, fn, items: list, resources: dict[str, float] | None = None) -> list:
    """Results of ``fn`` over ``items`` in the items' order (for the few prepare tasks)."""
    done = list(run.run(_Tagged(fn), list(enumerate(items)), resources))
    return [result for _, result in sorted(done, key=lambda pair: pair[0])]


class _Tagged:
    """``fn`` applied to the second element of ``(tag, item)``, returning ``(tag, result)``: picklable."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, tagged):
        tag, item = tagged
        return tag, self.fn(item)


def _create(p: RunPlan, store: Store, prepared: Prepared) -> None:
    provenance = {**p.spec.provenance(p.data, p.model, prepared.architecture, compute=prepared.compute,
                                      batch_choice=p.batch_choice), "dtype": p.spec.dtype}
    if isinstance(p.tokens, MediaLayout):  # templates, media variants, the processor's preprocessing
        provenance["tokenization"].update(p.tokens.provenance)
    attrs = {"config": p.config, "config_hash": config_hash(p.config), "provenance": provenance}
    from ..store.write import NewRun

    create_run(store, p.path, NewRun(
        n_layers=p.model.n_layers, d_model=p.model.d_model, dtype=p.spec.dtype,
        chunk_tokens=p.chunk_tokens, token_coords=p.tokens.token_coords(),
        example_coords=p.tokens.example_coords(), final_norm_applied=np.array(prepared.applied[p.path]),
        attrs=attrs, keep=p.keep.attrs(), stored_dtype=p.keep.stored_dtype,
        compression=p.spec.compression, sites=p.keep.site_arrays()))


def run_campaign(specs: Sequence[RunSpec], *, scheduler: str | None = None, workers: int | None = None,
                 threads_per_worker: int | None = None, progress: bool = True,
                 batches_per_task: int | None = None) -> CampaignResult:
    """Extract every run ``specs`` names into their store, in this process or on a dask cluster.

    ``scheduler`` is a running dask scheduler's address; ``workers`` starts that many local worker processes;
    neither runs everything here. ``threads_per_worker`` is each worker's torch threads. ``batches_per_task``
    sizes the tasks (default: ``BATCHES_PER_TASK`` on a cluster; here, one task per stretch of missing chunks)."""
    started = time.perf_counter()
    if threads_per_worker is not None and threads_per_worker < 1:
        raise ActstoreError(f"--threads-per-worker must be at least 1, got {threads_per_worker}")
    if workers is not None and workers < 1:
        raise ActstoreError(f"--workers must be at least 1, got {workers}")
    if workers is not None and scheduler is not None:
        raise ActstoreError("give --workers (a local cluster) or --scheduler (a running one), not both")
    clustered = scheduler is not None or workers is not None
    if batches_per_task is None and clustered:
        batches_per_task = BATCHES_PER_TASK
    try:
        return _run(specs, scheduler, workers, threads_per_worker, progress, batches_per_task, clustered, started)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        raise ActstoreError(f"no space left on the device of {specs[0].store}{where}: free some space, then run the "
                            f"same command again (it resumes from the last committed block)") from None


def _run(specs: Sequence[RunSpec], scheduler: str | None, workers: int | None, threads_per_worker: int | None,
         progress: bool, batches_per_task: int | None, clustered: bool, started: float) -> CampaignResult:
    with contextlib.ExitStack() as stack:
        if not clustered:  # this process is the worker: the weights it loads are let go when the campaign ends
            stack.enter_context(model_cache.scope())
        data = checked_sources(specs, clustered)  # names, datasets, the store: no torch yet
        answered = answer_early(specs, data, clustered, started)  # complete, refused or locked: no model read
        if answered is not None:
            return answered
        plans = plan(specs, clustered, data)
        resources = _place(plans, clustered, workers)
        spec = plans[0].spec
        plans, skipped = _lock_all(plans, stack)
        # the store is opened once here, once locked, and handed down (made only when the first model is prepared)
        store = spec.location.open("r+") if spec.location.exists() else None
        _read_state(plans, store)
        todo = [p for p in plans if not p.done]
        for p in plans:
            if p.done:  # a kill after the last block may have missed the views and statistics, or the consolidation
                finish_run(store, p.path)
                consolidate_if_stale(store, p.path)
        result = CampaignResult([], skipped, 1, resources=resources)
        if todo:
            run = stack.enter_context(runner(scheduler, workers, resources))
            result.workers = run.workers
            _execute(todo, run, threads_per_worker if clustered else None, result, progress, batches_per_task,
                     resources, store)
        for p in plans:
            result.runs.append(ExtractResult(spec.store, p.model.name, p.data.name, p.status, len(p.tokens.examples),
                                             p.tokens.n_tokens, len(p.keep.layers), result.written.get(p.path, 0),
                                             time.perf_counter() - started, result.fill_seconds, unit=p.keep.unit,
                                             finish_seconds=result.finish_seconds))
    result.seconds = time.perf_counter() - started
    return result


def _execute(todo: list[RunPlan], run: Runner, threads: int | None, result: CampaignResult, progress: bool,
             batches_per_task: int | None, resources: dict[str, float] | None, store: Store | None) -> None:
    """Prepare models, create new run groups, fill every missing chunk and commit as blocks or results arrive.

    ``store`` is the campaign's handle, None while the store is not made yet."""
    location = todo[0].spec.location
    if store is None and not run.local:  # prepare tasks racing on workers to create the store collide: make it here
        store = location.open("a")
    prepared = _prepare(todo, run, threads, resources)  # here, the first look comes before the store is made
    if store is None:
        store = location.open("r+")
    root = store.root
    for p in todo:
        if p.create:
            p.size_batches(prepared[p.path])
            _create(p, store, prepared[p.path])
        else:
            _remove_partials(root[p.path])  # a killed write's temporary files; we hold the lock
    store.consolidate()
    by_path = {p.path: p for p in todo}
    groups = {p.path: root[p.path] for p in todo}

    def commit(path: str, start_chunk: int, stop_chunk: int) -> None:
        p = by_path[path]
        merged = commits.merge([*p.committed, (start_chunk, stop_chunk)])
        if merged != p.committed:
            p.committed = merged
            groups[path].attrs[PROGRESS_ATTR] = commits.record(merged, p.n_units, p.chunk_tokens)

    tasks = [t for p in sorted(todo, key=lambda p: (p.model.name, p.path)) for t in _fill_tasks(p, threads, batches_per_task)]
    written = Counter({p.path: 0 for p in todo})
    result.tasks = len(tasks)
    fill_started = time.perf_counter()
    total = sum(p.n_units for p in todo)
    initial = sum(commits.tokens_in(p.committed, p.n_units, p.chunk_tokens) for p in todo)
    unit = "tok" if all(p.keep.unit == "token" for p in todo) else "ex" if all(p.keep.unit == "example" for p in todo) \
        else "unit"
    with progress_bar(total, initial=initial, unit=unit, desc="extract", enabled=progress) as bar:
        # in this process a task commits each block as it is written and moves the bar batch by batch
        task_fn = functools.partial(fill, on_block=commit, on_units=bar.update, store=store) if run.local else fill
        for done in run.run(task_fn, tasks, resources):
            commit(done.path, done.start_chunk, done.stop_chunk)
            written[done.path] += done.tokens_written
            _tally(result, done, by_path[done.path].model.name)
            if not run.local:
                bar.update(done.tokens_written)
    result.fill_seconds = time.perf_counter() - fill_started
    for p in todo:
        _remove_partials(root[p.path])  # a lost worker's temporary files
        finish_run(store, p.path)
    store.consolidate()
    result.finish_seconds = time.perf_counter() - fill_started - result.fill_seconds
    result.written = dict(written)
