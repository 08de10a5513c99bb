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
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..checksums import config_hash
from ..errors import ActstoreError
from ..store import commits, layout, location
from ..store.lock import RunLock
from ..store.handle import Store
from ..store.views import finish_run
from ..store.write import PROGRESS_ATTR, _remove_partials, consolidate_if_stale, create_run, run_attrs
from . import model_cache
from .datasets.media import media_variants
from .estimate import auto_batch_size, model_shape, run_chunk_tokens
from .keep import Keep
from .media import MediaLayout, media_layout
from .models import ModelPlan, plan_model
from .progress import progress_bar, quiet_loading
from .runner import Runner, runner
from .spec import RunSpec, stored_config_matches
from .tasks import FillTask, Filled, ModelRef, PrepareTask, Prepared, batches_for, fill, load, prepare
from .tokens import TokenLayout, tokenize

# Tokens a fill task on a cluster covers, in batches: a batch straddling two tasks is computed twice, so a
# task of 40 mean batches costs at most ~2.5% extra forward passes.
BATCHES_PER_TASK = 40


@dataclass
class ExtractResult:
    store: str
    model: str
    dataset: str
    status: str  # "written", "resumed" or "already complete"
    examples: int
    tokens: int
    layers: int
    tokens_written: int
    seconds: float
    fill_seconds: float = 0.0
    unit: str = "token"  # what ``tokens_written`` counts: tokens, or examples in a --positions last|mean run
    finish_seconds: float = 0.0  # views, statistics and consolidation after the last block

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the forward-and-write loop alone (no model loading)."""
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        """One line; each figure says what it measures (the whole command, the forward-and-write loop, the finish)."""
        timing = f"{self.seconds:.1f} s total"
        if self.tokens_written:
            timing += (f", of which {self.fill_seconds:.1f} s forward-and-write at {self.tokens_per_second:,.0f} "
                       f"{self.unit}s/s and {self.finish_seconds:.1f} s finishing (views, statistics)")
        return (f"{self.status}: {self.model}/{self.dataset} in {self.store} — {self.examples} examples, "
                f"{self.tokens:,} tokens × {self.layers} layers; wrote {self.tokens_written:,} {self.unit}s; "
                f"{timing}")


def check_writable(store: str) -> None:
    """Refuse before any work: an empty path, an unwritable place, a directory that is something else."""
    if location.is_remote(store):
        return
    if not store.strip():
        raise ActstoreError("empty --store; name a directory such as ./acts.zarr or a URL")
    path = location.local_path(store)
    if os.path.exists(path) and not os.path.exists(os.path.join(path, "zarr.json")):
        debris = any(not name.startswith(".") or ".lock" not in name for _, _, files in os.walk(path) for name in files)
        if not os.path.isdir(path) or debris:  # only a killed run's lock may be there before the store is
            raise ActstoreError(f"{store} exists and is not an actstore store; choose a new or empty directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ActstoreError(f"cannot write the store at {store}: {parent} is not a writable directory")


def resumed_chunk(spec: RunSpec, existing: dict[str, Any] | None) -> int | None:
    """The chunk length to plan with: the user's, else the one a run being resumed was made with (so a run begun
    under an older chunking rule resumes), else None (``run_chunk_tokens`` chooses)."""
    if spec.chunk_tokens or existing is None or spec.overwrite:
        return spec.chunk_tokens
    return existing.get("config", {}).get("chunk_tokens")


@dataclass
class RunPlan:
    """One run of the campaign, as planned on the client."""

    spec: RunSpec
    model: ModelPlan
    data: Any
    path: str
    tokens: TokenLayout
    chunk_tokens: int
    config: dict[str, Any]
    committed: commits.Ranges = field(default_factory=list)
    create: bool = False  # a new (or replaced) run group, made after its model is prepared
    status: str = "written"
    device: str = "cpu"  # where its tasks run: cpu, mps, cuda:N (in this process) or cuda (each worker's own GPU)
    compute_dtype: str = "float32"
    keep: Keep | None = None
    offsets: np.ndarray | None = None  # each example's first unit along ``hidden``'s second axis (tokens or examples)
    counts: np.ndarray | None = None  # … and its number of units
    n_units: int = 0
    batch_size: int | None = None  # None until ``--batch-size auto`` has sized a new run from the loaded model
    batch_choice: str | None = None  # how ``auto`` chose it, for the provenance

    @property
    def ref(self) -> ModelRef:
        memory = tuple(self.spec.max_memory.items()) if self.spec.max_memory else None
        return ModelRef(self.spec.model, self.spec.trust_remote_code, self.model.checksum, not self.spec.progress,
                        self.device, self.compute_dtype, self.spec.device_map, memory)

    @property
    def name(self) -> str:
        return f"{self.model.name}/{self.data.name}"

    @property
    def n_chunks(self) -> int:
        return commits.n_chunks(self.n_units, self.chunk_tokens)

    def settle(self, existing: dict[str, Any] | None) -> None:
        """Chunk length, batch size and configuration, once the stored run (if any) is known: a resume keeps its
        chunking and the batch size ``auto`` chose when it began; a new ``auto`` run is configured once sized."""
        self.chunk_tokens = run_chunk_tokens(self.model.d_model, self.keep.stored_dtype, self.n_units,
                                             resumed_chunk(self.spec, existing))
        resuming = existing is not None and not self.spec.overwrite
        if self.spec.batch_size != "auto":
            self.configure(self.spec.batch_size)
        elif resuming:
            self.configure(existing["config"]["batch_size"], "auto: the batch size recorded when the run began")

    def configure(self, batch_size: int, choice: str | None = None) -> None:
        self.batch_size, self.batch_choice = batch_size, choice
        self.config = {**self.spec.config(self.data, self.model, batch_size), "dtype": self.spec.dtype,
                       "chunk_tokens": self.chunk_tokens}

    def size_batches(self, prepared: Prepared) -> None:
        """``--batch-size auto`` of a new run: the largest batch that fits the memory the loaded weights left free."""
        if self.batch_size is None:
            batch = auto_batch_size(model_shape(self.model.config, self.spec.trust_remote_code),
                                    [len(row) for row in self.tokens.ids], self.compute_dtype, prepared.free)
            self.configure(batch, f"auto: {prepared.free:,} bytes free on {prepared.device} after loading the weights")

    @property
    def done(self) -> bool:
        return commits.missing(self.committed, self.n_chunks) == []


@dataclass
class CampaignResult:
    runs: list[ExtractResult]
    skipped: list[str]
    workers: int
    tasks: int = 0
    tokens_written: int = 0
    tokens_computed: int = 0  # forward-pass tokens, batches straddling task boundaries counted twice
    seconds: float = 0.0
    fill_seconds: float = 0.0
    finish_seconds: float = 0.0  # views, statistics and consolidation once the last block is committed
    loads: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, worker pid) -> loads
    written: dict[str, int] = field(default_factory=dict)  # run path -> tokens written
    peak_rss: dict[int, int] = field(default_factory=dict)  # worker pid -> bytes
    devices: dict[int, str] = field(default_factory=dict)  # worker pid -> the device its forward passes ran on
    resources: dict[str, float] | None = None  # what each task held on the cluster ({"GPU": 1})

    @property
    def recompute_fraction(self) -> float:
        return self.tokens_computed / self.tokens_written - 1 if self.tokens_written else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        lines = [r.summary() for r in self.runs] + [f"skipped: {s}" for s in self.skipped]
        if self.tasks and (len(self.runs) > 1 or self.workers > 1):  # one run in-process: its line says it all
            lines.append(f"campaign: {len(self.runs)} runs, {self.tasks} tasks on {self.workers} worker(s), "
                         f"{self.tokens_written:,} tokens at {self.tokens_per_second:,.0f} tokens/s, "
                         f"{100 * self.recompute_fraction:.1f}% recomputed at task edges")
        return "\n".join(lines)


def _plan_models(specs: Sequence[RunSpec]) -> dict[tuple[str, bool], ModelPlan]:
    models: dict[tuple[str, bool], ModelPlan] = {}
    for spec in specs:
        key = (spec.model, spec.trust_remote_code)
        if key not in models:
            with quiet_loading(not spec.progress):
                models[key] = plan_model(spec.model, trust_remote_code=spec.trust_remote_code)
    return models


def plan(specs: Sequence[RunSpec], clustered: bool = False) -> list[RunPlan]:
    """Check every spec and tokenize every run, touching no store: any bad name anywhere refuses the lot.

    Image and audio variants are laid out by the model's processor here; a model that makes its media ids
    itself (Chameleon's VQ codes) is loaded for it, into this process's model cache. On a cluster they are refused."""
    if not specs:
        raise ActstoreError("nothing to extract: no model × dataset given")
    stores = {(s.store, str(s.storage_options)) for s in specs}
    if len(stores) > 1:
        raise ActstoreError("a campaign writes one store; got several")
    data = [spec.load_data() for spec in specs]
    if clustered and (any(s.templates for s in specs) or any(media_variants(d) for d in data)):
        raise ActstoreError("image and audio variants (and --template) run in this process, where the media are "
                            "encoded: drop --workers/--scheduler, or choose text variants with --variants")
    check_writable(specs[0].store)
    models = _plan_models(specs)
    plans, seen = [], set()
    for spec, dataset in zip(specs, data):
        model = models[(spec.model, spec.trust_remote_code)]
        if model.name in layout.RESERVED_ROOT_GROUPS:
            raise ActstoreError(f"a model may not be named {model.name!r}: that group holds saved {model.name}; "
                                f"rename the model directory")
        path = layout.run_path(model.name, dataset.name)
        if path in seen:
            raise ActstoreError(f"{model.name}/{dataset.name} is named twice in the campaign")
        seen.add(path)
        keep = spec.keep(model)
        device, compute_dtype = spec.placement()
        p = RunPlan(spec, model, dataset, path, None, 0, {}, device=device, compute_dtype=compute_dtype, keep=keep)
        p.tokens = media_layout(model, dataset, dataset.examples(), bos=spec.bos, suffixes=spec.suffixes,
                                templates=spec.templates, weights=functools.partial(_weights, p.ref, model)) \
            or tokenize(model.tokenizer, dataset.examples(), bos=spec.bos, suffixes=spec.suffixes)
        keep.check_lengths([len(row) for row in p.tokens.ids],
                           [f"item {e.item!r} ({e.variant})" for e in p.tokens.examples])
        p.offsets, p.counts, p.n_units = keep.units(p.tokens.offsets, p.tokens.counts)
        plans.append(p)
    return plans


def _weights(ref: ModelRef, model: ModelPlan) -> Any:
    """The network the run's tasks use, loaded here (a model whose own encoder makes its media ids)."""
    return load(ref, model)[1]


def _place(plans: list[RunPlan], clustered: bool, workers: int | None) -> dict[str, float] | None:
    """Settle where tasks run; the resources each task holds on a cluster (``{"GPU": 1}`` for CUDA), else None.

    In this process a run keeps its resolved device (``cuda:0``…) or its device map. On a cluster ``cuda``
    becomes each worker's own GPU, so a pinned ``cuda:N`` (every worker on one GPU) and a device map (one model
    over several devices in one process) are refused, and a local cluster gets no more GPU workers than there
    are GPUs."""
    if clustered and any(p.spec.device_map for p in plans):
        raise ActstoreError("--device-map places one model over several devices in one process; campaigns on a "
                            "cluster place one model per device: drop --device-map, or drop --workers/--scheduler")
    kinds = {p.device.split(":")[0] for p in plans}
    if len(kinds) > 1:
        raise ActstoreError(f"a campaign runs on one kind of device; got {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    if not clustered or kind != "cuda":
        return None
    if any(":" in p.spec.device for p in plans):
        raise ActstoreError(f"--device {plans[0].spec.device} would put every worker on one GPU; give --device cuda: "
                            f"each worker takes its own GPU")
    if workers is not None:
        import torch

        if workers > torch.cuda.device_count():
            raise ActstoreError(f"--workers {workers} --device cuda: one model per GPU, and this machine has "
                                f"{torch.cuda.device_count()} GPU(s); give --workers {torch.cuda.device_count()} or fewer")
    for p in plans:
        p.device = "cuda"
    return {"GPU": 1}


def _lock_all(plans: list[RunPlan], stack: contextlib.ExitStack) -> tuple[list[RunPlan], list[str]]:
    """Take every run's lock; a run another writer holds is skipped (all held: refused, naming the first)."""
    locked, skipped, errors = [], [], []
    for p in plans:
        try:
            lock = RunLock(p.spec.store, p.path, p.spec.storage_options).acquire()
        except ActstoreError as exc:
            if "is being written by" not in str(exc):
                raise
            errors.append(exc)
            skipped.append(str(exc).split(": ", 1)[-1].split(";")[0])
            continue
        stack.callback(lock.release)
        locked.append(p)
    if not locked and errors:
        raise errors[0]
    return locked, skipped


def _read_state(plans: list[RunPlan]) -> None:
    """Each run's stored state: new, to resume (its committed chunks), complete, or in conflict (refused)."""
    spec = plans[0].spec
    store = Store.open(spec.store, spec.storage_options, mode="r+") if Store.exists(spec.store, spec.storage_options) else None
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
            tasks.append(FillTask(ref, p.spec.store, p.spec.storage_options, p.path, p.keep, start, stop,
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
    tasks = [PrepareTask(ref, spec.store, spec.storage_options,
                         {p.path: p.tokens.ids[: min(4, len(p.tokens.ids))] for p in group if p.create}, threads)
             for ref, group in by_model.items()]
    results: dict[str, Prepared] = {}
    for task, prepared in zip(tasks, _in_order(run, prepare, tasks, resources)):
        for p in by_model[task.ref]:
            results[p.path] = prepared
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
    create_run(store, p.path, n_layers=p.model.n_layers, d_model=p.model.d_model, dtype=p.spec.dtype,
               chunk_tokens=p.chunk_tokens, token_coords=p.tokens.token_coords(),
               example_coords=p.tokens.example_coords(), final_norm_applied=np.array(prepared.applied[p.path]),
               attrs=attrs, keep=p.keep.attrs(), stored_dtype=p.keep.stored_dtype,
               compression=p.spec.compression)


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
        plans = plan(specs, clustered)
        resources = _place(plans, clustered, workers)
        spec = plans[0].spec
        plans, skipped = _lock_all(plans, stack)
        _read_state(plans)
        todo = [p for p in plans if not p.done]
        for p in plans:
            if p.done:  # a kill after the last block may have missed the views and statistics, or the consolidation
                finish_run(Store.open(spec.store, spec.storage_options, mode="r+"), p.path)
                consolidate_if_stale(Store.open(spec.store, spec.storage_options, mode="r+"), p.path)
        result = CampaignResult([], skipped, 1, resources=resources)
        if todo:
            run = stack.enter_context(runner(scheduler, workers, resources))
            result.workers = run.workers
            _execute(todo, run, threads_per_worker if clustered else None, result, progress, batches_per_task,
                     resources)
        for p in plans:
            result.runs.append(ExtractResult(spec.store, p.model.name, p.data.name, p.status, len(p.tokens.examples),
                                             p.tokens.n_tokens, len(p.keep.layers), result.written.get(p.path, 0),
                                             time.perf_counter() - started, result.fill_seconds, unit=p.keep.unit,
                                             finish_seconds=result.finish_seconds))
    result.seconds = time.perf_counter() - started
    return result


def _execute(todo: list[RunPlan], run: Runner, threads: int | None, result: CampaignResult, progress: bool,
             batches_per_task: int | None, resources: dict[str, float] | None) -> None:
    """Prepare models, create new run groups, fill every missing chunk and commit as blocks or results arrive."""
    spec = todo[0].spec
    if not run.local:  # prepare tasks racing on workers to create the store collide: make it here first
        Store.open(spec.store, spec.storage_options, mode="a")
    prepared = _prepare(todo, run, threads, resources)  # here, the first look comes before the store is made
    store = Store.open(spec.store, spec.storage_options, mode="r+")
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
        task_fn = functools.partial(fill, on_block=commit, on_units=bar.update) if run.local else fill
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


def _tally(result: CampaignResult, done: Filled, model: str) -> None:
    result.tokens_written += done.tokens_written
    result.tokens_computed += done.tokens_computed
    result.loads[(model, done.pid)] = done.model_loads
    result.peak_rss[done.pid] = max(result.peak_rss.get(done.pid, 0), done.peak_rss)
    result.devices[done.pid] = done.device
