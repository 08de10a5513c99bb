"""A shuffled PyTorch loader over one run's hidden states, for training probes, SAEs and transcoders.

The unit of reading is one stored chunk of one layer (``hidden[layer, chunk]``),
so every read is chunk-aligned and whole. An epoch is a permutation of those
units, fixed by (seed, epoch); rank ``r`` takes every ``world_size``-th unit from
``r`` on, and its DataLoader workers deal those out the same way, so workers and
ranks read disjoint chunks and together every selected token exactly once. Each shard
pours its chunks into a shuffle buffer of fixed size and draws batches from it
uniformly at random: tokens of many chunks mix, and memory is set by the user
(``buffer_bytes`` / ``buffer_tokens``), never by the store's size.

The buffer is a reservoir of slots over a ring of rows that chunks are read
straight into (``_Ring``; a chunk with few selected tokens has just those copied
in): a row is copied once, out into its batch, not first into a slot as well.
bfloat16 states stay as their uint16 bits in the ring (half the memory) and are
decoded to float32 per batch, by vectorised numpy gathers, never row by row in
Python."""
from __future__ import annotations

import itertools
import os

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from zarr import buffer

from ..errors import ActstoreError
from ..store import Store, layout
from ..store.chunk_file import direct_reader
from ..store.open import open_run
from .ring import Batch, _Outbox, _Ring
from .selection import DEFAULT_BUFFER_BYTES, _COPY_THREADS, BufferPlan, Reading, Selection, _records

__all__ = ["Batch", "BufferPlan", "DEFAULT_BUFFER_BYTES", "Reading", "Selection", "StoreDataset", "StoreLoader",
           "loader"]

class StoreDataset(IterableDataset):
    """Batches of selected tokens from one run; see the module docstring for the order and sharding.

    Options: a ``Selection`` (``layers``, ``variants``, ``items``, ``positions``) and a ``Reading``
    (``batch_size``, ``shuffle``, ``seed``, ``epoch``, ``buffer_tokens``, ``buffer_bytes``, ``read_ahead``,
    ``rank``, ``world_size``, ``dtype``, ``storage_options``), whole or by those keywords."""

    def __init__(self, url: str | Store, model: str, dataset: str, *, selection: Selection | None = None,
                 reading: Reading | None = None, **options: Any) -> None:
        self.selection, reading = _records(dict(options), selection, reading)
        self.dtype = reading.batch_dtype
        # the batch's bits as numpy holds them (numpy has no bfloat16)
        self.out_bits = np.dtype(np.float32 if self.dtype == torch.float32 else np.uint16)
        store = Store.open(url, reading.storage_options)
        ds = open_run(store, model, dataset)
        self.url, self.storage_options = store.url, store.storage_options  # workers reopen: a handle does not pickle
        self.fork_safe = store.fork_safe
        self.path = layout.run_path(model, dataset)
        self.batch_size, self.shuffle, self.seed = reading.batch_size, reading.shuffle, int(reading.seed)
        self.epoch = int(reading.epoch)  # moves on each iteration (StoreLoader)
        self.rank, self.world_size, self.read_ahead = reading.rank, reading.world_size, reading.read_ahead
        if "token" not in ds.hidden.dims:
            positions_kept = ds.attrs.get(layout.CAPTURE_ATTR, {}).get("positions")
            raise ActstoreError(f"the loader reads token states, but model {model!r} / dataset {dataset!r} stores one "
                                f"state per example (--positions {positions_kept}); open it with actstore.open_run")
        self.columns = self.selection.columns(ds)   # the site(s) a row holds, side by side
        self.layer_labels = self.columns.labels  # a --layers run stores some layers: labels ≠ indices
        self.layers = self.selection.layer_indices(self.layer_labels)
        self.bfloat16 = ds.hidden.attrs.get("dtype") == "bfloat16"
        self.d_model = self.columns.width  # a row's width: d_model for the residual stream
        self.chunk_tokens = int(ds.hidden.attrs.get("chunk_tokens") or ds.hidden.data.chunksize[1])
        self._select(ds, model, dataset)
        self._stored = np.dtype(np.uint16 if self.bfloat16 else np.float32)   # rows as stored, in ring and batch
        self.plan = BufferPlan(reading.batch_size, reading.read_ahead, reading.buffer_tokens, reading.buffer_bytes,
                               self.d_model, self.chunk_tokens, self._stored.itemsize, self.out_bits.itemsize,
                               int(np.diff(self.bounds).max()), bool(self.read_in_place.all()))
        self.scratch_blocks, self.capacity = self.plan.scratch_blocks, self.plan.capacity
        self.ring_rows, self.buffer_bytes = self.plan.ring_rows, self.plan.buffer_bytes
        self.rows_moved = 0  # rows this process's last shuffled epoch moved within its ring (a diagnostic)

    def _select(self, ds: Any, model: str, dataset: str) -> None:
        """The selected tokens, their coordinates, and the chunks that hold them (and how each is read)."""
        self.tokens = self.selection.tokens(ds)                          # token indices, ascending
        if not len(self.tokens):
            raise ActstoreError(f"the selection matches no tokens of model {model!r} / dataset {dataset!r}")
        self.example = ds.token_example.values[self.tokens].astype(np.int64)
        self.position = ds.position.values[self.tokens].astype(np.int64)
        self.token_id = ds.token_id.values[self.tokens].astype(np.int64)
        chunk = self.tokens // self.chunk_tokens
        self.chunks, self.bounds = np.unique(chunk, return_index=True)   # chunks holding selected tokens
        self.bounds = np.append(self.bounds, len(self.tokens))
        # per chunk holding selected tokens: are they one run of at least half the chunk? Then the chunk is
        # read straight into the ring, else into a scratch block and its selected rows copied in
        counts = np.diff(self.bounds)
        self.one_run = self.tokens[self.bounds[1:] - 1] - self.tokens[self.bounds[:-1]] + 1 == counts
        self.read_in_place = self.one_run & (2 * counts >= self.chunk_tokens)

    @property
    def n_rows(self) -> int:
        """Rows (token × layer) per epoch, over all ranks and workers."""
        return len(self.tokens) * len(self.layers)

    def __iter__(self) -> Iterator[Batch]:
        # not a generator itself: the epoch is read now, when the DataLoader makes its iterator
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n_units = len(self.layers) * len(self.chunks)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n_units) if self.shuffle else np.arange(n_units)
        mine = order[self.rank::self.world_size][worker::n_workers]   # disjoint whatever each rank's worker count
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        return self._batches(mine, rng)

    @property
    def site_columns(self) -> dict[str, slice]:
        """Each site's columns in a batch's ``hidden`` (one site: all of them)."""
        return self.columns.slices

    def parts(self, batch: Batch) -> dict[str, torch.Tensor]:
        """A batch's states per site, each (B, its width): views of ``batch.hidden``."""
        return {site: batch.hidden[:, columns] for site, columns in self.site_columns.items()}

    def _read(self, arrays, unit: int, into: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """One chunk of one layer of every site, read into ``into`` (a whole chunk's block; one site straight
        from its file where it can, several each beside the other): (the selected tokens' rows in ``into``,
        their selection indices, layer)."""
        layer = int(self.layers[unit // len(self.chunks)])
        j = unit % len(self.chunks)
        lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
        start = int(self.chunks[j]) * self.chunk_tokens
        label = int(self.layer_labels[layer])
        for (array, direct), index, shape, columns in zip(arrays, self.columns.index, self.columns.per_unit,
                                                          self.site_columns.values()):
            at = index[label]
            stop = min(start + self.chunk_tokens, array.shape[1])
            whole = len(arrays) == 1
            block = into if whole else np.empty((self.chunk_tokens, *shape), dtype=self._stored)
            block = block.reshape(self.chunk_tokens, *shape)
            if direct is None or not direct((at, int(self.chunks[j]), *[0] * len(shape)), block):
                array.get_basic_selection((at, slice(start, stop)),
                                          out=buffer.cpu.NDBuffer.from_numpy_array(block[:stop - start]))
            if not whole:
                into[:, columns] = block.reshape(self.chunk_tokens, -1)
        return self.tokens[lo:hi] - start, np.arange(lo, hi), layer

    def _chunks(self, units: np.ndarray, claim) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
        """The shard's chunks in order, ``read_ahead`` of them in flight at once (reads overlap over S3), as
        (key, positions of the selected tokens in its block, their selection indices, layer).

        ``claim(unit)`` gives each read its destination, (key, block), when the read is submitted: that is
        after the consumer came back from the chunk before, and ``read_ahead - 1`` reads are still in flight."""
        group = Store.open(self.url, self.storage_options).root[self.path]
        arrays = []
        for name, shape in zip(self.columns.arrays, self.columns.per_unit):
            array = group[name]
            arrays.append((array, direct_reader(array) if array.chunks == (1, self.chunk_tokens, *shape) else None))
        with ThreadPoolExecutor(max_workers=self.read_ahead) as pool:
            pending: deque = deque()
            for unit in units:
                key, block = claim(int(unit))
                pending.append((key, pool.submit(self._read, arrays, int(unit), block)))
                if len(pending) >= self.read_ahead:
                    key, future = pending.popleft()
                    yield (key, *future.result())
            while pending:
                key, future = pending.popleft()
                yield (key, *future.result())

    def _batches(self, units: np.ndarray, rng: np.random.Generator) -> Iterator[Batch]:
        """The shard's batches, shuffled or in store order, with the copy threads both ways use."""
        with ThreadPoolExecutor(max_workers=_COPY_THREADS, thread_name_prefix="actstore-copy") as copiers:
            out = _Outbox(self, copiers)
            yield from (self._shuffled(units, rng, out) if self.shuffle else self._in_order(units, out))
            yield from out.rest()

    def _shuffled(self, units: np.ndarray, rng: np.random.Generator, out: "_Outbox") -> Iterator[Batch]:
        """Fill the reservoir; then each chunk evicts as many uniformly drawn buffered rows as it brings and
        takes their slots. Slots point at ring rows, where the chunks were read: evicted rows are gathered
        straight into the outgoing batch and decoded there, so a row is copied once on its way out."""
        capacity = self.capacity
        ring = _Ring(self.ring_rows, self.chunk_tokens, self.d_model, self._stored, capacity, self.scratch_blocks)
        picked_buf = np.empty(capacity, dtype=np.int64)
        layer_buf = np.empty(capacity, dtype=np.int16)
        n = 0

        def claim(unit: int):
            j = unit % len(self.chunks)
            return ring.claim(int(self.bounds[j + 1] - self.bounds[j]), bool(self.read_in_place[j]))

        for key, local, picked, layer in self._chunks(units, claim):
            rows = ring.arrived(key, local)                              # where the chunk's selected rows are
            free = capacity - n
            if len(rows) > free:                                        # evict into batches, refill the slots
                slots = rng.choice(n, size=len(rows) - free, replace=False)
                yield from out.gather(ring.rows, picked_buf, layer_buf, slots, ring.slot_row[slots])
                k = len(slots)
                ring.replace(slots, rows[:k])
                picked_buf[slots], layer_buf[slots] = picked[:k], layer
                rows, picked = rows[k:], picked[k:]
            ring.place(np.arange(n, n + len(rows)), rows)
            picked_buf[n:n + len(rows)], layer_buf[n:n + len(rows)] = picked, layer
            n += len(rows)
        rest = rng.permutation(n)                                       # the rest, in random order
        yield from out.gather(ring.rows, picked_buf, layer_buf, rest, ring.slot_row[rest])
        self.rows_moved = ring.moved

    def _in_order(self, units: np.ndarray, out: "_Outbox") -> Iterator[Batch]:
        """Store order, no buffer: batches cut from consecutive chunks."""
        blocks = itertools.cycle(np.empty((self.read_ahead, self.chunk_tokens, self.d_model), dtype=self._stored))

        def claim(unit: int) -> tuple[tuple[np.ndarray, bool], np.ndarray]:
            block = next(blocks)
            return (block, bool(self.one_run[unit % len(self.chunks)])), block

        for (block, one_run), local, picked, layer in self._chunks(units, claim):
            yield from out.add(block[local[0]:local[-1] + 1] if one_run else block[local], picked, layer)


class StoreLoader(DataLoader):
    """A DataLoader over a ``StoreDataset`` that moves to the next epoch each time it is iterated."""

    def set_epoch(self, epoch: int) -> None:
        """Fix the next iteration's epoch (as with ``DistributedSampler.set_epoch``)."""
        self.dataset.epoch = int(epoch)

    def __iter__(self):
        iterator = super().__iter__()  # workers (if any) take their copy of the dataset, and its epoch, here
        self.dataset.epoch += 1
        return iterator


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def loader(url: str | Store, model: str, dataset: str, layers: Sequence[int] | None = None, *,
           num_workers: int = 0, rank: int | None = None, world_size: int | None = None, pin_memory: bool = False,
           **options: Any) -> StoreLoader:
    """A DataLoader of ``Batch``es over the selected tokens of one run (a ``Store``, local path or any fsspec URL).

    Each iteration is one epoch: every selected (token, layer) exactly once over all workers and ranks,
    in an order fixed by ``seed`` and the epoch (0, 1, … or ``set_epoch``). ``rank``/``world_size``
    default to torch.distributed's when it is initialised. The shuffle buffer holds at most
    ``buffer_tokens`` rows, or what fits in ``buffer_bytes`` (default 1 GiB) per worker, chunks in flight
    and the outgoing batch included: about half as many rows as those bytes would hold, since chunks are read
    straight into a ring with that much slack (see ``_Ring``). ``dtype``: the batches' float32 (default) or
    bfloat16; a bfloat16 run's states then go out as stored, with no decoding (half the bytes to a GPU).
    ``options`` are ``StoreDataset``'s: a ``Selection`` and a ``Reading``, whole or by their keywords
    (``variants``, ``items``, ``positions``, ``batch_size``, ``shuffle``, ``seed``, ``epoch``, ``buffer_tokens``,
    ``buffer_bytes``, ``read_ahead``, ``dtype``, ``storage_options``)."""
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ActstoreError(f"num_workers must be 0 or more, got {num_workers!r}")
    found_rank, found_size = _distributed()
    if layers is not None:
        options["layers"] = layers
    data = StoreDataset(url, model, dataset, rank=found_rank if rank is None else rank,
                        world_size=found_size if world_size is None else world_size, **options)
    # workers forked from a process that has read through obstore would hang: start them from a fresh forkserver
    context = "forkserver" if num_workers and not data.fork_safe else None
    return StoreLoader(data, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                       multiprocessing_context=context,
                       worker_init_fn=_Environment(dict(os.environ)) if context == "forkserver" else None)


class _Environment:
    """A worker's environment as this process has it now: a forkserver started earlier hands its children the
    environment of *its* start, which may lack what was set since (credentials, endpoints)."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ

    def __call__(self, _worker_id: int) -> None:
        os.environ.clear()
        os.environ.update(self.environ)
