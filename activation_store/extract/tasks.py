"""What a worker does for a campaign: prepare a model, and fill one chunk-aligned token range of one run.

Both are plain functions of small, picklable task records, so the same code
runs in the client's own process (no cluster: every extraction, a single run
included) and on any dask worker. A fill task owns whole chunks
``[start_chunk, stop_chunk)`` of one run's ``hidden`` and writes nothing else,
so tasks need no lock between them; it does not commit what it wrote — the
campaign does, when the task's result comes back, or block by block through
``on_block`` when the task runs in the campaign's own process. The task carries
the token ids of every batch that overlaps its range (batches are a fixed
partition of the examples), so a batch straddling two tasks is computed by both
and gives both the same numbers."""
from __future__ import annotations

import os
import resource
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..store import layout
from ..store.handle import Store
from ..store.write import write_chunks, write_lens
from .keep import Keep
from .model_cache import cached_model, loads


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds the model the campaign planned with, and where it places it."""

    model: str  # as the user named it: registry name, alias, directory or .gguf
    trust_remote_code: bool
    checksum: str
    quiet: bool = False  # no loading progress bars
    device: str = "cpu"  # cpu, mps, cuda:N (in this process) or cuda: the worker's own GPU (devices.worker_device)
    compute_dtype: str = "float32"  # what the model runs in, decided on the client: part of every run's config
    device_map: str | None = None  # "auto": accelerate places the model (in the campaign's own process only)
    max_memory: tuple[tuple[Any, Any], ...] | None = None  # … within these per-device limits (hashable items)


def load(ref: ModelRef, plan: Any = None) -> tuple[Any, Any]:
    """``(plan, network)`` of the referenced model from this process's cache, on the worker's device in the
    campaign's compute dtype. ``plan`` is the client's own ``ModelPlan`` when the task runs in its process."""
    from .devices import worker_device

    return cached_model(ref.model, ref.trust_remote_code, ref.checksum, ref.quiet, worker_device(ref.device),
                        ref.compute_dtype, ref.device_map, dict(ref.max_memory) if ref.max_memory else None, plan)


def _loads(ref: ModelRef) -> int:
    from .devices import worker_device

    return loads(ref.model, ref.trust_remote_code, ref.checksum, worker_device(ref.device), ref.compute_dtype,
                 ref.device_map, dict(ref.max_memory) if ref.max_memory else None)


@dataclass(frozen=True)
class PrepareTask:
    """Write a model's lens head (once) and measure, per new run, which layers carry the final norm."""

    ref: ModelRef
    store: str
    storage_options: dict[str, Any] | None
    samples: dict[str, list[list[int]]]  # run path -> the first examples' token ids
    torch_threads: int | None = None


@dataclass(frozen=True)
class Prepared:
    applied: dict[str, list[bool]]
    architecture: str
    pid: int
    compute: dict[str, Any] = field(default_factory=dict)  # attention and device map of the loaded model (provenance)
    free: int = 0  # bytes free on ``device`` once the weights are loaded: what ``--batch-size auto`` sizes from
    device: str = "cpu"  # where the model takes its inputs


@dataclass(frozen=True)
class FillTask:
    """Compute and write chunks ``[start_chunk, stop_chunk)`` of the run at ``path``."""

    ref: ModelRef
    store: str
    storage_options: dict[str, Any] | None
    path: str
    keep: Keep  # what is stored of each batch; its unit (token or example) is what chunks and ``first_token`` count
    start_chunk: int
    stop_chunk: int
    first_token: int  # index (in the stored unit) of the first token or example of ``batches[0]``
    batches: tuple[list[list[int]], ...]
    torch_threads: int | None = None
    first_example: int = 0  # index of the first example of ``batches[0]``
    # what a multimodal model needs beside the ids of examples [start, stop) (pixels, audio features), made per
    # batch from the files; None for text. Bound to the client's media encoder: such tasks run in its process
    inputs: Callable[[int, int], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Filled:
    path: str
    start_chunk: int
    stop_chunk: int
    tokens_written: int
    tokens_computed: int
    seconds: float
    host: str
    pid: int
    model_loads: int  # loads of this model (on this device, in this dtype) in the worker process so far
    peak_rss: int  # bytes, the worker process's high-water mark
    device: str = "cpu"  # where the task's forward passes ran


def _threads(n: int | None) -> None:
    if n:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def prepare(task: PrepareTask) -> Prepared:
    """Load the model into this process's cache, take a first look at the new runs' first examples (which
    layers carry the final norm; non-finite states stop here, before the store is touched), then write its
    lens head unless present."""
    from .capture import final_norm_applied
    from .devices import free_memory
    from .lens_head import model_head
    from .models import input_device, loaded_compute

    _threads(task.torch_threads)
    plan, net = load(task.ref)
    device = input_device(net)
    applied = {path: final_norm_applied(net, ids, plan.pad_id, device) for path, ids in task.samples.items()}
    write_lens(Store.open(task.store, task.storage_options, mode="a"), layout.encode_name(plan.name), *model_head(net, plan))
    return Prepared(applied, type(net).__name__, os.getpid(), loaded_compute(net, task.ref.device_map),
                    free_memory(device), device)


def fill(task: FillTask, on_block: Callable[[str, int, int], None] | None = None,
         on_units: Callable[[int], None] | None = None) -> Filled:
    """Forward the task's batches and write its chunks as they fill, on a writer thread (two blocks in flight at most).

    A batch's copy to the host runs while the device computes the next batch (``HostCopy``), and the writer
    thread encodes and writes while both go on: neither the device nor the disk waits for the other. In the
    campaign's own process, ``on_block(path, start_chunk, stop_chunk)`` is called on the writer thread once a
    block's chunks are all written (the campaign commits it there, so a kill loses one block at most) and
    ``on_units(n)`` as each batch's units are taken (the progress bar)."""
    import torch

    from ..store.precision import encode
    from .capture import HostCopy, forward_states
    from .models import input_device

    started = time.perf_counter()
    _threads(task.torch_threads)
    plan, net = load(task.ref)
    device = input_device(net)
    hidden = Store.open(task.store, task.storage_options, mode="r+").live_group(task.path)[layout.HIDDEN]
    chunk, n_tokens = int(hidden.chunks[1]), int(hidden.shape[1])
    start, stop = task.start_chunk * chunk, min(task.stop_chunk * chunk, n_tokens)
    position, block_start, computed = task.first_token, start, 0
    pending: list[torch.Tensor] = []
    futures: list[Future] = []

    def write(at: int, block: torch.Tensor) -> None:
        end = write_chunks(hidden, at, encode(block, task.keep.stored_dtype))
        if on_block is not None:
            on_block(task.path, at // chunk, -(-end // chunk))

    def flush(executor: ThreadPoolExecutor, final: bool) -> None:
        nonlocal pending, block_start
        buffered = sum(p.shape[1] for p in pending)
        while buffered >= chunk or (final and buffered):
            block = torch.cat(pending, dim=1) if len(pending) > 1 else pending[0]
            size = min(chunk, block.shape[1])
            head, rest = block[:, :size], block[:, size:]
            futures.append(executor.submit(write, block_start, head.clone()))
            while len(futures) > 2:  # backpressure: memory stays at the model plus two blocks
                futures.pop(0).result()
            block_start += size
            pending = [rest] if rest.shape[1] else []
            buffered -= size

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-writer") as executor:
        def take(copy: HostCopy, lengths: list[int]) -> None:
            nonlocal position, computed
            states = task.keep.apply(copy.result(), lengths)
            computed += states.shape[1]
            lo, hi = max(start, position) - position, min(stop, position + states.shape[1]) - position
            position += states.shape[1]
            if hi > lo:
                pending.append(states[:, lo:hi])
                if on_units is not None:
                    on_units(hi - lo)
            flush(executor, final=False)

        in_flight: tuple[HostCopy, list[int]] | None = None
        example = task.first_example
        for ids in task.batches:
            inputs = task.inputs(example, example + len(ids)) if task.inputs is not None else {}
            example += len(ids)
            copy = HostCopy(forward_states(net, ids, plan.pad_id, device, **inputs))
            if in_flight is not None:
                take(*in_flight)  # the previous batch, while this one computes
            in_flight = (copy, [len(row) for row in ids])
        if in_flight is not None:
            take(*in_flight)
        flush(executor, final=True)
        for future in futures:
            future.result()
    if block_start != stop:
        raise RuntimeError(f"task {task.path} chunks {task.start_chunk}:{task.stop_chunk} covered tokens "
                           f"{start}:{block_start}, not {start}:{stop}")
    return Filled(task.path, task.start_chunk, task.stop_chunk, stop - start, computed, time.perf_counter() - started,
                  socket.gethostname(), os.getpid(), _loads(task.ref),
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, str(device))


def batches_for(offsets: np.ndarray, counts: np.ndarray, batch_size: int, start: int, stop: int) -> tuple[int, int]:
    """The batches ``[first, last)`` whose tokens overlap tokens ``[start, stop)``."""
    ends = offsets + counts
    first_example = int(np.searchsorted(ends, start, side="right"))
    last_example = int(np.searchsorted(offsets, stop, side="left"))  # examples starting before stop
    return first_example // batch_size, -(-last_example // batch_size)
