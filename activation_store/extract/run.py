"""One extraction run: model × dataset → a run group in a store.

Everything that can be wrong with the arguments is found before the store is
touched. Forward passes run on the main thread; encoding and writing each
finished block of chunks happens on a writer thread, so disk (or S3) time
overlaps compute. A killed run resumes from its last committed block and ends
byte-identical to an uninterrupted one, because batches are a fixed partition
of the examples and a resumed block is recomputed from its batch's start."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..checksums import config_hash
from ..errors import ActstoreError
from ..store import Store, layout, location
from ..store.precision import encode
from ..store.lock import run_lock
from ..store.views import finish_run
from ..store.write import consolidate_if_stale, create_run, reopen_run, run_attrs, write_lens
from .capture import HostCopy, final_norm_applied, forward_states
from .datasets import DEFAULT_DATASET, Dataset
from .devices import free_memory
from .keep import Keep
from .estimate import auto_batch_size, default_chunk_tokens, model_shape, run_chunk_tokens  # noqa: F401 (re-export)
from .lens_head import model_head
from .media import MediaLayout, media_layout
from .models import DEFAULT_MODEL, ModelPlan, input_device, plan_model
from .progress import progress_bar, quiet_loading
from .spec import RunSpec, stored_config_matches
from .tokens import tokenize


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

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the forward-and-write loop alone (no model loading)."""
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        rate = f", {self.tokens_per_second:,.0f} {self.unit}s/s" if self.tokens_written else ""
        return (f"{self.status}: {self.model}/{self.dataset} in {self.store} — {self.examples} examples, "
                f"{self.tokens:,} tokens × {self.layers} layers; wrote {self.tokens_written:,} {self.unit}s "
                f"in {self.seconds:.1f}s{rate}")


def _check_writable(store: str) -> None:
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


def extract(
    model: str = DEFAULT_MODEL,
    dataset: str = DEFAULT_DATASET,
    store: str = "./acts.zarr",
    *,
    variants: list[str] | None = None,
    limit: int | None = None,
    bos: bool = True,
    suffixes: dict[str, str] | None = None,
    templates: dict[str, str] | None = None,
    dtype: str = "bfloat16",
    batch_size: int | str = 16,
    chunk_tokens: int | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    device: str = "auto",
    compute_dtype: str | None = None,
    device_map: str | None = None,
    max_memory: dict[Any, Any] | None = None,
    layers: str | list[int] | None = None,
    positions: str = "all",
) -> ExtractResult:
    """Run ``model`` over ``dataset`` once and store every layer's hidden states in ``store``.

    ``columns`` (variant → column) and ``id_column`` pick the texts of an ``hf:`` dataset. ``device``
    (``auto``: CUDA, then MPS, then CPU) and ``compute_dtype`` (default float32 on the CPU, bfloat16 on GPUs
    that have it) say where and how the model runs; ``dtype`` is what is stored. ``batch_size="auto"``
    takes the largest batch that fits the device's free memory. ``templates`` (media variant → prompt holding
    ``<image>`` or ``<audio>``) frame image and audio variants. ``layers`` (indices, ``"0:18"`` or ``"all"``) and
    ``positions`` (``all``, ``last``, ``mean``) store only part of the states (extract/keep.py)."""
    return extract_run(RunSpec(model, dataset, store, variants=variants, limit=limit, bos=bos, suffixes=suffixes or {},
                               dtype=dtype, batch_size=batch_size, chunk_tokens=chunk_tokens, overwrite=overwrite,
                               trust_remote_code=trust_remote_code, storage_options=storage_options, progress=progress,
                               columns=columns, id_column=id_column, templates=templates, device=device, compute_dtype=compute_dtype,
                               device_map=device_map, max_memory=max_memory, layers=layers, positions=positions))


def extract_run(spec: RunSpec) -> ExtractResult:
    """Extract the run ``spec`` describes: everything is checked before the store is touched."""
    started = time.perf_counter()
    data = spec.load_data()
    _check_writable(spec.store)
    with quiet_loading(not spec.progress):
        model = plan_model(spec.model, trust_remote_code=spec.trust_remote_code)
    if model.name in layout.RESERVED_ROOT_GROUPS:
        raise ActstoreError(f"a model may not be named {model.name!r}: that group holds saved {model.name}; "
                            f"rename the model directory")
    spec.keep(model)  # a layer the model lacks is refused before the store is touched
    path = layout.run_path(model.name, data.name)
    with run_lock(spec.store, path, spec.storage_options):  # one writer per run: a second is refused, naming the first
        return _extract_locked(spec, data, model, path, started)


def _extract_locked(spec: RunSpec, data: Dataset, model: ModelPlan, path: str, started: float) -> ExtractResult:
    """The part of ``extract_run`` that reads and writes the run, under its lock."""
    # with a device map, accelerate may offload weights to disk: a folder that lives as long as the model
    with tempfile.TemporaryDirectory(prefix="actstore-offload-") if spec.device_map else nullcontext() as offload:
        return _extract_placed(spec, data, model, path, started, offload)


def _extract_placed(spec: RunSpec, data: Dataset, model: ModelPlan, path: str, started: float,
                    offload: str | None) -> ExtractResult:
    """Plan the run (tokens, chunks, batch size, configuration), load the weights where the spec places them."""
    store, options = spec.store, spec.storage_options
    target = Store.open(store, options, mode="r+") if Store.exists(store, options) else None
    existing = run_attrs(target, path) if target is not None else None
    device, compute_dtype = spec.placement()
    loaded: list = []

    def weights():  # loaded once, when there is work (or when media must be encoded by the model itself)
        if not loaded:
            with quiet_loading(not spec.progress):
                loaded.append(model.load_weights(device, compute_dtype, spec.device_map, spec.max_memory, offload))
        return loaded[0]

    tokens = media_layout(model, data, data.examples(), bos=spec.bos, suffixes=spec.suffixes, templates=spec.templates,
                          weights=weights) or tokenize(model.tokenizer, data.examples(), bos=spec.bos, suffixes=spec.suffixes)
    keep = spec.keep(model)
    keep.check_lengths([len(row) for row in tokens.ids], [f"item {e.item!r} ({e.variant})" for e in tokens.examples])
    _, _, n_units = keep.units(tokens.offsets, tokens.counts)
    chunk = run_chunk_tokens(model.d_model, keep.stored_dtype, n_units, resumed_chunk(spec, existing))
    batch_size, batch_choice = spec.batch_size, None
    if batch_size == "auto" and existing is not None and not spec.overwrite:  # a resume keeps its partition
        batch_size, batch_choice = existing["config"]["batch_size"], "auto: the batch size recorded when the run began"
    resuming = False
    if existing is not None and not spec.overwrite:
        config = {**spec.config(data, model, batch_size), "dtype": spec.dtype, "chunk_tokens": chunk}
        stored_config_matches(existing, config, f"{model.name}/{data.name}", store)
        if existing.get("progress", {}).get("complete"):
            finish_run(target, path)  # a kill after the last block may have missed the views and statistics
            consolidate_if_stale(target, path)  # … or the consolidation
            return ExtractResult(store, model.name, data.name, "already complete", len(tokens.examples),
                                 tokens.n_tokens, len(keep.layers), 0, time.perf_counter() - started, unit=keep.unit)
        resuming = True

    net = weights()
    device = input_device(net)
    if batch_size == "auto":  # a new run sizes its batches now, from the memory the weights left free
        free = free_memory(device)
        batch_size = auto_batch_size(model_shape(model.config, spec.trust_remote_code),
                                     [len(r) for r in tokens.ids], compute_dtype, free)
        batch_choice = f"auto: {free:,} bytes free on {device} after loading the weights"
    config = {**spec.config(data, model, batch_size), "dtype": spec.dtype, "chunk_tokens": chunk}
    return _write(spec, data, model, net, device, tokens, target, path, config, chunk, batch_size, batch_choice,
                  resuming, started, keep)


def resumed_chunk(spec: RunSpec, existing: dict[str, Any] | None) -> int | None:
    """The chunk length to plan with: the user's, else the one a run being resumed was made with (so a run begun
    under an older chunking rule resumes), else None (``run_chunk_tokens`` chooses)."""
    if spec.chunk_tokens or existing is None or spec.overwrite:
        return spec.chunk_tokens
    return existing.get("config", {}).get("chunk_tokens")


def _write(spec: RunSpec, data: Dataset, model: ModelPlan, net, device: str, tokens, target, path: str,
           config: dict[str, Any], chunk: int, batch_size: int, batch_choice: str | None, resuming: bool,
           started: float, keep: Keep) -> ExtractResult:
    """Create or reopen the run and fill it: the model is loaded, the configuration settled."""
    store, options, n_layers = spec.store, spec.storage_options, model.n_layers
    # a first look at a few examples before the store is touched: non-finite states (float16 overflow) stop here
    applied = final_norm_applied(net, tokens.ids[: min(4, len(tokens.ids))], model.pad_id, device)
    target = target or Store.open(store, options, mode="a")
    write_lens(target, layout.encode_name(model.name), *model_head(net, model))
    if resuming:
        writer = reopen_run(target, path)
        consolidate_if_stale(target, path)  # killed before its first consolidation: readers see it
    else:
        provenance = {**spec.provenance(data, model, type(net).__name__, net=net, batch_choice=batch_choice),
                      "dtype": spec.dtype}
        if isinstance(tokens, MediaLayout):  # templates, media variants, the processor's preprocessing
            provenance["tokenization"].update(tokens.provenance)
        attrs = {"config": config, "config_hash": config_hash(config), "provenance": provenance}
        writer = create_run(target, path, n_layers=n_layers, d_model=model.d_model, dtype=spec.dtype, chunk_tokens=chunk,
                            token_coords=tokens.token_coords(), example_coords=tokens.example_coords(),
                            final_norm_applied=np.array(applied), attrs=attrs, keep=keep.attrs(),
                            stored_dtype=keep.stored_dtype)
        target.consolidate()
    done = writer.tokens_done
    fill_started = time.perf_counter()
    written = _fill(net, device, tokens, writer, batch_size, model.pad_id, keep, spec.progress)
    fill_seconds = time.perf_counter() - fill_started
    finish_run(target, path)
    target.consolidate()
    status = "resumed" if resuming and done else "written"
    return ExtractResult(store, model.name, data.name, status, len(tokens.examples), tokens.n_tokens, len(keep.layers),
                         written, time.perf_counter() - started, fill_seconds, unit=keep.unit)


def _fill(net, device: str, tokens, writer, batch_size: int, pad_id: int, keep: Keep, progress: bool) -> int:
    """Forward every batch from the first uncommitted block on; write finished blocks on a thread.

    What is stored of each batch is ``keep.apply``'s: all its tokens, or one state per example (then the
    units counted here — ``done``, offsets, blocks — are examples).

    A batch's copy to the host runs while the device computes the next batch (``HostCopy``), and the
    writer thread encodes and writes while both go on: neither the device nor the disk waits for the other."""
    offsets, _, total = keep.units(tokens.offsets, tokens.counts)
    done, chunk, dtype = writer.tokens_done, writer.chunk_tokens, keep.stored_dtype
    if done >= total:
        return 0
    first_example = int(np.searchsorted(offsets, done, side="right") - 1)
    first_batch = first_example // batch_size
    position = int(offsets[first_batch * batch_size])  # token index of the next captured token
    pending: list[torch.Tensor] = []
    block_start = done
    futures: list[Future] = []

    def flush(executor: ThreadPoolExecutor, final: bool) -> None:
        nonlocal pending, block_start
        buffered = sum(p.shape[1] for p in pending)
        while buffered >= chunk or (final and buffered):
            block = torch.cat(pending, dim=1)
            size = min(chunk, block.shape[1])
            head, rest = block[:, :size], block[:, size:]
            futures.append(executor.submit(lambda s, h: writer.write_block(s, encode(h, dtype)), block_start, head.clone()))
            while len(futures) > 2:  # backpressure: at most two blocks in flight
                futures.pop(0).result()
            block_start += size
            pending = [rest] if rest.shape[1] else []
            buffered -= size

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-writer") as executor, \
            progress_bar(total, initial=done, unit="tok" if keep.unit == "token" else "ex", desc="extract",
                         enabled=progress) as bar:
        def take(copy: HostCopy, lengths: list[int]) -> None:
            nonlocal position
            hidden = keep.apply(copy.result(), lengths)
            skip = max(0, done - position)
            position += hidden.shape[1]
            if skip:
                hidden = hidden[:, skip:]
            if hidden.shape[1]:
                pending.append(hidden)
                bar.update(hidden.shape[1])
            flush(executor, final=False)

        in_flight: tuple[HostCopy, list[int]] | None = None
        for start in range(first_batch * batch_size, len(tokens.ids), batch_size):
            ids = tokens.ids[start:start + batch_size]
            copy = HostCopy(forward_states(net, ids, pad_id, device, **tokens.model_inputs(start, start + batch_size)))
            if in_flight is not None:
                take(*in_flight)  # the previous batch, while this one computes
            in_flight = (copy, [len(row) for row in ids])
        if in_flight is not None:
            take(*in_flight)
        flush(executor, final=True)
        for future in futures:
            future.result()
    return total - done
