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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..store import layout, pieces
from ..store.chunk_writer import BlockWriter
from ..store.address import Location
from ..store.handle import Store
from ..store.write import write_lens
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
    from .model_cache import ModelPlacement

    placement = ModelPlacement(worker_device(ref.device), ref.compute_dtype, ref.device_map,
                               dict(ref.max_memory) if ref.max_memory else None)
    return cached_model(ref.model, ref.trust_remote_code, ref.checksum, placement, quiet=ref.quiet, plan=plan)


def _loads(ref: ModelRef) -> int:
    from .devices import worker_device

    return loads(ref.model, ref.trust_remote_code, ref.checksum, worker_device(ref.device), ref.compute_dtype,
                 ref.device_map, dict(ref.max_memory) if ref.max_memory else None)


@dataclass(frozen=True)
class PrepareTask:
    """Write a model's lens head (once) and measure, per new run, which layers carry the final norm."""

    ref: ModelRef
    location: Location  # the store, opened where the task runs
    samples: dict[str, list[list[int]]]  # run path -> the first examples' token ids
    torch_threads: int | None = None
    sites: dict[str, tuple[str, ...]] = field(default_factory=dict)  # run path -> sites requested besides hidden


@dataclass(frozen=True)
class Prepared:
    applied: dict[str, list[bool]]
    architecture: str
    pid: int
    compute: dict[str, Any] = field(default_factory=dict)  # attention and device map of the loaded model (provenance)
    free: int = 0  # bytes free on ``device`` once the weights are loaded: what ``--batch-size auto`` sizes from
    device: str = "cpu"  # where the model takes its inputs
    sites: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # run path -> its sites, resolved (``Site``)


@dataclass(frozen=True)
class FillTask:
    """Compute and write chunks ``[start_chunk, stop_chunk)`` of the run at ``path``."""

    ref: ModelRef
    location: Location  # the store, opened where the task runs
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
    sites = _resolved_sites(net, task.sites)
    applied = {path: final_norm_applied(net, ids, plan.pad_id, device) for path, ids in task.samples.items()}
    write_lens(task.location.open("a"), layout.encode_name(plan.name), *model_head(net, plan))
    return Prepared(applied, type(net).__name__, os.getpid(), loaded_compute(net, task.ref.device_map),
                    free_memory(device), device, sites)


def _resolved_sites(net: Any, requests: dict[str, tuple[str, ...]]) -> dict[str, tuple[Any, ...]]:
    """Each run's requested sites against the loaded model (a site it lacks stops here, before any write)."""
    if not requests:
        return {}
    from .sites import resolve_sites

    return {path: resolve_sites(net, wanted)[0] for path, wanted in requests.items()}


def fill(task: FillTask, on_block: Callable[[str, int, int], None] | None = None,
         on_units: Callable[[int], None] | None = None, store: Store | None = None) -> Filled:
    """Forward the task's batches and write its chunks as they fill, many chunks at once (store/chunk_writer.py).

    Each batch's kept states go from the device into the block buffers they belong in (extract/packing.py)
    while the device computes the next batch, and the writer's threads summarise, checksum and write the
    blocks meanwhile: neither the device nor the disk waits for the other. Each block leaves its piece
    (store/pieces.py) before it counts as written. In the campaign's own process, ``on_block(path,
    start_chunk, stop_chunk)`` is called once a block's chunks and piece are all written, in order (the
    campaign commits it there, so a kill loses the blocks in flight at most) and ``on_units(n)`` as units
    are packed (the progress bar), with ``store``, its open handle (elsewhere the task opens its location)."""
    import torch

    from .capture import nonfinite_error
    from .models import input_device
    from .packing import TORCH_DTYPES, BlockBuffers, BlockPacker

    started = time.perf_counter()
    _threads(task.torch_threads)
    plan, net = load(task.ref)
    device = input_device(net)
    store = store if store is not None else task.location.open("r+")
    group = store.live_group(task.path)
    hidden = group[layout.HIDDEN]
    arrays = {layout.HIDDEN: hidden, **{site.name: group[site.name] for site in task.keep.sites}}
    chunk, n_units = int(hidden.chunks[1]), int(hidden.shape[1])
    start, stop = task.start_chunk * chunk, min(task.stop_chunk * chunk, n_units)
    examples = _examples(task) if task.keep.unit == "token" else None  # token runs get pooled views

    def written(at: int, end: int, piece: dict | None) -> None:
        if piece is not None:
            pieces.write(store, task.path, piece)
        if on_block is not None:
            on_block(task.path, at // chunk, -(-end // chunk))

    buffers = BlockBuffers(pinned=torch.device(device).type == "cuda")
    compute = str(getattr(net, "dtype", "")).removeprefix("torch.")
    try:
        with BlockWriter(arrays, on_written=written, allocate=buffers.allocate,
                         summarize=lambda name, k, a, b: pieces.ChunkSummary(
                             k, a, b, examples if name == layout.HIDDEN else None, name)) as writer:
            packer = BlockPacker(writer, buffers, start, stop, task.first_token, on_units)
            _pack_batches(task, net, plan.pad_id, device, packer, TORCH_DTYPES[hidden.dtype])
            packer.finish()
    except pieces.NonFinite as exc:
        raise nonfinite_error(task.keep.layers_of(exc.site)[exc.index], compute, exc.site) from None
    return Filled(task.path, task.start_chunk, task.stop_chunk, stop - start, packer.computed,
                  time.perf_counter() - started, socket.gethostname(), os.getpid(), _loads(task.ref),
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, str(device))


def _pack_batches(task: FillTask, net: Any, pad_id: int, device: Any, packer: Any, stored: Any) -> None:
    """Forward each batch and hand its kept states of every site, cast to the ``stored`` dtype where computed,
    to the packer. On an accelerator each batch's finiteness flags are read one batch later, once they have arrived."""
    from .capture import forward_states, nonfinite_error, site_hooks
    from .packing import FiniteFlags

    compute = str(getattr(net, "dtype", "")).removeprefix("torch.")
    keep = task.keep

    def check(flags: dict[str, FiniteFlags]) -> None:
        for name, flag in flags.items():
            if (bad := flag.bad_layer()) is not None:
                raise nonfinite_error(keep.layers_of(name)[bad], compute, name)

    checked: dict[str, FiniteFlags] = {}
    example = task.first_example
    with site_hooks(net, keep) as hooks:
        for ids in task.batches:
            inputs = task.inputs(example, example + len(ids)) if task.inputs is not None else {}
            example += len(ids)
            states = keep.select_layers(forward_states(net, ids, pad_id, device, **inputs))
            arrays = {layout.HIDDEN: states, **hooks.packed(ids, states.device)}
            flags = {name: FiniteFlags(v) for name, v in arrays.items()} if FiniteFlags.wanted(states) else {}
            lengths = [len(row) for row in ids]
            kept = {name: keep.select_positions(values, lengths) for name, values in arrays.items()}
            # the stored dtype on the device: half the bytes to copy
            kept = {name: v.to(stored) if v.device.type != "cpu" else v for name, v in kept.items()}
            check(checked)  # the previous batch's, which has arrived while this one was computed
            checked = flags
            packer.add(kept)
    check(checked)


def _examples(task: FillTask) -> pieces.Examples:
    """The examples of the task's batches, with their token offsets: what per-example pieces need."""
    counts = np.array([len(row) for ids in task.batches for row in ids], dtype=np.int64)
    offsets = task.first_token + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return pieces.Examples(task.first_example, offsets, counts, task.keep.bos)


def batches_for(offsets: np.ndarray, counts: np.ndarray, batch_size: int, start: int, stop: int) -> tuple[int, int]:
    """The batches ``[first, last)`` whose tokens overlap tokens ``[start, stop)``."""
    ends = offsets + counts
    first_example = int(np.searchsorted(ends, start, side="right"))
    last_example = int(np.searchsorted(offsets, stop, side="left"))  # examples starting before stop
    return first_example // batch_size, -(-last_example // batch_size)
