"""A shuffled PyTorch loader over one run's hidden states, for training probes, SAEs and transcoders.

The unit of reading is one stored chunk of one layer (``hidden[layer, chunk]``),
so every read is chunk-aligned and whole. An epoch is a permutation of those
units, fixed by (seed, epoch); rank ``r`` takes every ``world_size``-th unit from
``r`` on, and its DataLoader workers deal those out the same way, so workers and
ranks read disjoint chunks and together every selected token exactly once. Each shard
pours its chunks into a shuffle buffer of fixed size and draws batches from it
uniformly at random: tokens of many chunks mix, and memory is set by the user
(``buffer_bytes`` / ``buffer_tokens``), never by the store's size.

bfloat16 states stay as their uint16 bits in the buffer (half the memory) and
are decoded to float32 per batch. Buffer and batch block are allocated once per
epoch; rows move between them by vectorised numpy gathers and scatters, never
row by row in Python."""
from __future__ import annotations

import os

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from zarr import buffer

from ..errors import ActstoreError
from ..store import Store, layout
from ..store.open import open_run
from ..store.precision import decode_bfloat16

DEFAULT_BUFFER_BYTES = 1 << 30
_META_BYTES = 8 + 2  # per buffered row: index into the selection (int64) and layer (int16)
_STEP = 256  # rows gathered at a time on their way to a batch: a block that stays in the CPU's cache
# threads that move rows between chunk, buffer and batch (numpy releases the GIL for take, scatter and decode):
# the reads already run on their own threads, so on two cores this is what lets the shuffle keep up with them
_COPY_THREADS = max(1, min(2, os.cpu_count() or 1))


class Batch(NamedTuple):
    """``hidden`` (B, d_model) float32; ``layer``, ``example``, ``position``, ``token_id`` (B,) int64."""

    hidden: torch.Tensor
    layer: torch.Tensor
    example: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor

    def to(self, *args: Any, **kwargs: Any) -> "Batch":
        return Batch(*(t.to(*args, **kwargs) for t in self))


def _choose(values: np.ndarray, wanted: Sequence[Any] | None, what: str) -> np.ndarray:
    """A boolean mask of ``values`` in ``wanted`` (all when None); an unknown name is a one-line error."""
    if wanted is None:
        return np.ones(len(values), dtype=bool)
    if isinstance(wanted, str):
        wanted = [wanted]
    present = set(values.tolist())
    missing = [w for w in wanted if w not in present]
    if missing:
        shown = ", ".join(sorted(map(str, present))[:12])
        raise ActstoreError(f"{what} {missing[0]!r} is not in this run; it has {shown}")
    return np.isin(values, list(wanted))


def _layers(layers: Sequence[int] | None, n_layers: int) -> np.ndarray:
    if layers is None:
        return np.arange(n_layers)
    chosen = [int(layer) for layer in ([layers] if isinstance(layers, int) else layers)]
    bad = [layer for layer in chosen if not -n_layers <= layer < n_layers]
    if bad:
        raise ActstoreError(f"layer {bad[0]} is out of range: the run has layers 0..{n_layers - 1}")
    if not chosen:
        raise ActstoreError("no layers selected")
    return np.unique(np.asarray(chosen) % n_layers)


def _label_indices(layers: Sequence[int] | int | None, labels: np.ndarray) -> Sequence[int] | int | None:
    """Layer labels as indices into a run that stores only some layers (``--layers``); unchanged for full runs."""
    if layers is None or labels.tolist() == list(range(len(labels))):
        return layers
    chosen = [int(layer) for layer in ([layers] if isinstance(layers, int) else layers)]
    missing = [layer for layer in chosen if layer not in set(labels.tolist())]
    if missing:
        raise ActstoreError(f"layer {missing[0]} is not in this run; it stores layers {', '.join(map(str, labels))}")
    return [labels.tolist().index(layer) for layer in chosen]


def _position_mask(positions: str | Sequence[int] | None, position: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Tokens at the chosen positions: ``None``/``"all"``, ``"last"``, or ints (negative ones count from each example's end)."""
    if positions is None or (isinstance(positions, str) and positions == "all"):
        return np.ones(len(position), dtype=bool)
    if isinstance(positions, str):
        if positions != "last":
            raise ActstoreError(f"unknown positions {positions!r}; use 'all', 'last' or a list of positions")
        positions = [-1]
    try:
        chosen = [int(p) for p in ([positions] if isinstance(positions, int) else positions)]
    except (TypeError, ValueError):
        raise ActstoreError(f"positions must be 'all', 'last' or a list of integers, got {positions!r}") from None
    from_start = np.asarray([p for p in chosen if p >= 0], dtype=np.int64)
    from_end = np.asarray([p for p in chosen if p < 0], dtype=np.int64)
    return np.isin(position, from_start) | np.isin(position.astype(np.int64) - count, from_end)


class StoreDataset(IterableDataset):
    """Batches of selected tokens from one run; see the module docstring for the order and sharding."""

    def __init__(self, url: str | Store, model: str, dataset: str, *, layers: Sequence[int] | None = None,
                 variants: Sequence[str] | None = None, items: Sequence[str] | None = None,
                 positions: str | Sequence[int] | None = None, batch_size: int = 4096, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, buffer_tokens: int | None = None, buffer_bytes: int | None = None,
                 read_ahead: int = 2, rank: int = 0, world_size: int = 1,
                 storage_options: dict[str, Any] | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ActstoreError(f"batch_size must be at least 1, got {batch_size!r}")
        if read_ahead < 1:
            raise ActstoreError(f"read_ahead must be at least 1, got {read_ahead}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ActstoreError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        store = Store.open(url, storage_options)
        ds = open_run(store, model, dataset)
        self.url, self.storage_options = store.url, store.storage_options  # workers reopen: a handle does not pickle
        self.fork_safe = store.fork_safe
        self.path = layout.run_path(model, dataset)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, int(seed), int(epoch)
        self.rank, self.world_size, self.read_ahead = rank, world_size, read_ahead
        if "token" not in ds.hidden.dims:
            positions_kept = ds.attrs.get(layout.CAPTURE_ATTR, {}).get("positions")
            raise ActstoreError(f"the loader reads token states, but model {model!r} / dataset {dataset!r} stores one "
                                f"state per example (--positions {positions_kept}); open it with actstore.open_run")
        self.layer_labels = ds.layer.values.astype(np.int64)  # a --layers run stores some layers: labels ≠ indices
        self.layers = _layers(_label_indices(layers, self.layer_labels), ds.sizes["layer"])
        self.bfloat16 = ds.hidden.attrs.get("dtype") == "bfloat16"
        self.d_model = ds.sizes["d_model"]
        self.chunk_tokens = int(ds.hidden.attrs.get("chunk_tokens") or ds.hidden.data.chunksize[1])

        wanted = _choose(ds.variant.values, variants, "variant") & _choose(ds["item"].values, items, "item")
        token_example = ds.token_example.values
        position = ds.position.values
        picked = wanted[token_example] & _position_mask(positions, position, ds.token_count.values[token_example])
        self.tokens = np.flatnonzero(picked)                            # token indices, ascending
        if not len(self.tokens):
            raise ActstoreError(f"the selection matches no tokens of model {model!r} / dataset {dataset!r}")
        self.example = token_example[self.tokens].astype(np.int64)
        self.position = position[self.tokens].astype(np.int64)
        self.token_id = ds.token_id.values[self.tokens].astype(np.int64)
        chunk = self.tokens // self.chunk_tokens
        self.chunks, self.bounds = np.unique(chunk, return_index=True)   # chunks holding selected tokens
        self.bounds = np.append(self.bounds, len(self.tokens))

        self._stored = np.dtype(np.uint16 if self.bfloat16 else np.float32)   # rows as stored, in buffer and batch
        itemsize = self._stored.itemsize
        self.row_bytes = self.d_model * itemsize + _META_BYTES
        largest = int(np.diff(self.bounds).max())
        # what a shard holds besides the buffer: chunks being read (raw + selected rows), the batch being
        # filled (float32 and coordinates) with its small gathering block, and the batch out
        in_flight = read_ahead * 2 * self.chunk_tokens * self.d_model * itemsize
        out = batch_size * (2 * self.d_model * 4 + 16) + _COPY_THREADS * _STEP * self.d_model * itemsize
        need = batch_size + largest
        capacity = None if buffer_tokens is None else int(buffer_tokens)
        if buffer_bytes is not None or capacity is None:
            budget = DEFAULT_BUFFER_BYTES if buffer_bytes is None else int(buffer_bytes)
            by_bytes = (budget - in_flight - out) // self.row_bytes
            if by_bytes < need:
                floor = need * self.row_bytes + in_flight + out
                raise ActstoreError(f"buffer_bytes {budget:,} is too small for batch_size {batch_size} and chunks of "
                                    f"{self.chunk_tokens} tokens × d_model {self.d_model}; it needs at least {floor:,}")
            capacity = by_bytes if capacity is None else min(capacity, by_bytes)
        if capacity < need:
            raise ActstoreError(f"buffer_tokens {capacity} is too small: it must hold a batch ({batch_size}) "
                                f"and a chunk's selected tokens ({largest}), at least {need}")
        self.capacity = capacity

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

    def _read(self, hidden, unit: int, into: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """One chunk of one layer, read into ``into`` and reduced to its selected tokens:
        (rows, selection indices, layer). The rows are a view of ``into`` when the selection is one run."""
        layer = int(self.layers[unit // len(self.chunks)])
        j = unit % len(self.chunks)
        lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
        start = int(self.chunks[j]) * self.chunk_tokens
        stop = min(start + self.chunk_tokens, hidden.shape[1])
        block = into[:stop - start]
        hidden.get_basic_selection((layer, slice(start, stop)), out=buffer.cpu.NDBuffer.from_numpy_array(block))
        local = self.tokens[lo:hi] - start
        first, last = int(local[0]), int(local[-1])
        rows = block[first:last + 1] if last - first == hi - lo - 1 else block[local]  # sorted: one run is a slice
        return rows, np.arange(lo, hi), layer

    def _chunks(self, units: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """The shard's chunks in order, ``read_ahead`` of them in flight at once (reads overlap over S3).

        Each read lands in one of ``read_ahead`` blocks allocated once: a block is read into again only
        after the chunk it held was yielded and the consumer came back for more, i.e. was done with it."""
        hidden = Store.open(self.url, self.storage_options).root[self.path][layout.HIDDEN]
        blocks = np.empty((self.read_ahead, self.chunk_tokens, self.d_model), dtype=self._stored)
        with ThreadPoolExecutor(max_workers=self.read_ahead) as pool:
            pending: deque = deque()
            for i, unit in enumerate(units):
                pending.append(pool.submit(self._read, hidden, int(unit), blocks[i % self.read_ahead]))
                if len(pending) >= self.read_ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _batches(self, units: np.ndarray, rng: np.random.Generator) -> Iterator[Batch]:
        """The shard's batches, shuffled or in store order, with the copy threads both ways use."""
        with ThreadPoolExecutor(max_workers=_COPY_THREADS, thread_name_prefix="actstore-copy") as copiers:
            out = _Outbox(self, copiers)
            yield from (self._shuffled(units, rng, out, copiers) if self.shuffle else self._in_order(units, out))
            yield from out.rest()

    def _shuffled(self, units: np.ndarray, rng: np.random.Generator, out: "_Outbox",
                  copiers: ThreadPoolExecutor) -> Iterator[Batch]:
        """Fill the buffer; then each chunk evicts as many uniformly drawn buffered rows as it brings and
        takes their slots. Evicted rows are gathered straight into the outgoing batch and decoded there, so
        each row is copied into its slot and out into a batch, by vectorised numpy ops, and nothing else."""
        capacity = self.capacity
        rows_buf = np.empty((capacity, self.d_model), dtype=self._stored)
        picked_buf = np.empty(capacity, dtype=np.int64)
        layer_buf = np.empty(capacity, dtype=np.int16)
        n = 0
        for rows, picked, layer in self._chunks(units):
            free = capacity - n
            if len(rows) > free:                                        # evict into batches, refill the slots
                slots = rng.choice(n, size=len(rows) - free, replace=False)
                yield from out.gather(rows_buf, picked_buf, layer_buf, slots)
                k = len(slots)
                slots.sort()  # emitted in drawn order above; which new row takes which freed slot does not
                # matter (slots are drawn regardless of content), and ascending scatters run ~3.5x faster
                _in_parts(copiers, k, lambda a, b, _: rows_buf.__setitem__(slots[a:b], rows[a:b]))
                picked_buf[slots], layer_buf[slots] = picked[:k], layer
                rows, picked = rows[k:], picked[k:]
            rows_buf[n:n + len(rows)], picked_buf[n:n + len(rows)], layer_buf[n:n + len(rows)] = rows, picked, layer
            n += len(rows)
        yield from out.gather(rows_buf, picked_buf, layer_buf, rng.permutation(n))  # the rest, in random order

    def _in_order(self, units: np.ndarray, out: "_Outbox") -> Iterator[Batch]:
        """Store order, no buffer: batches cut from consecutive chunks."""
        for rows, picked, layer in self._chunks(units):
            yield from out.add(rows, picked, layer)


def _in_parts(pool: ThreadPoolExecutor, n: int, copy) -> None:
    """``copy(start, stop, part)`` over ``range(n)`` cut into one contiguous part per thread of ``pool``, at once."""
    parts = _COPY_THREADS  # the pools here are made with that many threads
    if parts == 1 or n < 2 * _STEP:
        copy(0, n, 0)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    for future in [pool.submit(copy, a, b, i) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]:
        future.result()


class _Outbox:
    """The outgoing batch, filled in place and decoded as it fills: a new float32 block per batch, written
    by vectorised numpy ops. Buffer rows are gathered in slices of ``_STEP`` through a small block that
    stays in cache, so gathering and decoding read memory once (bfloat16); float32 rows go straight in."""

    def __init__(self, dataset: StoreDataset, copiers: ThreadPoolExecutor) -> None:
        self.dataset, self.size, self.held, self.copiers = dataset, dataset.batch_size, 0, copiers
        self.hidden = self._new_hidden()
        self.picked = np.empty(self.size, dtype=np.int64)
        self.layers = np.empty(self.size, dtype=np.int64)
        # one small gathering block per copy thread (bfloat16 only: float32 rows need no decoding)
        self.steps = ([np.empty((min(_STEP, self.size), dataset.d_model), dtype=np.uint16)
                       for _ in range(_COPY_THREADS)] if dataset.bfloat16 else None)

    def _new_hidden(self) -> np.ndarray:
        return np.empty((self.size, self.dataset.d_model), dtype=np.float32)

    def _put(self, rows: np.ndarray, to: slice) -> None:
        """Stored rows (as stored) into the batch at ``to``, as float32."""
        if self.dataset.bfloat16:
            decode_bfloat16(rows, out=self.hidden[to])
        else:
            self.hidden[to] = rows

    def gather(self, rows: np.ndarray, picked: np.ndarray, layers: np.ndarray, index: np.ndarray) -> Iterator[Batch]:
        """Rows ``index`` of the buffer (with their coordinates), in that order; yields each batch as it fills."""
        done = 0
        while done < len(index):
            part = index[done:done + self.size - self.held]
            to = slice(self.held, self.held + len(part))
            np.take(picked, part, out=self.picked[to], mode="clip")   # not mode="raise": that copies `out` first
            self.layers[to] = layers[part]
            _in_parts(self.copiers, len(part), lambda a, b, i: self._gather_rows(rows, part, to.start, a, b, i))
            self.held += len(part)
            done += len(part)
            if self.held == self.size:
                yield self._emit()

    def _gather_rows(self, rows: np.ndarray, part: np.ndarray, at: int, a: int, b: int, thread: int) -> None:
        """Buffer rows ``part[a:b]`` into batch rows ``at + a`` on, through this part's small block when decoding."""
        if self.steps is None:
            np.take(rows, part[a:b], axis=0, out=self.hidden[at + a:at + b], mode="clip")
            return
        step = self.steps[thread]
        for lo in range(a, b, len(step)):
            some = part[lo:min(b, lo + len(step))]
            np.take(rows, some, axis=0, out=step[:len(some)], mode="clip")
            self._put(step[:len(some)], slice(at + lo, at + lo + len(some)))

    def add(self, rows: np.ndarray, picked: np.ndarray, layer: int) -> Iterator[Batch]:
        """Consecutive rows of one layer; yields each batch as it fills."""
        done = 0
        while done < len(rows):
            part = slice(done, done + self.size - self.held)
            count = len(rows[part])
            to = slice(self.held, self.held + count)
            _in_parts(self.copiers, count, lambda a, b, _: self._put(rows[part][a:b], slice(to.start + a, to.start + b)))
            self.picked[to], self.layers[to] = picked[part], layer
            self.held += count
            done += count
            if self.held == self.size:
                yield self._emit()

    def rest(self) -> Iterator[Batch]:
        if self.held:
            yield self._emit()

    def _emit(self) -> Batch:
        ds, n = self.dataset, self.held
        hidden, self.hidden = self.hidden[:n], self._new_hidden()     # handed out whole; the next batch is new
        picked = self.picked[:n]
        self.held = 0
        return Batch(torch.from_numpy(hidden), torch.from_numpy(ds.layer_labels[self.layers[:n]]),  # labels: a copy
                     torch.from_numpy(ds.example[picked]), torch.from_numpy(ds.position[picked]),
                     torch.from_numpy(ds.token_id[picked]))


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


def loader(url: str | Store, model: str, dataset: str, layers: Sequence[int] | None = None,
           variants: Sequence[str] | None = None, items: Sequence[str] | None = None,
           positions: str | Sequence[int] | None = None, batch_size: int = 4096, shuffle: bool = True,
           seed: int = 0, epoch: int = 0, buffer_tokens: int | None = None, buffer_bytes: int | None = None,
           num_workers: int = 0, read_ahead: int = 2, rank: int | None = None, world_size: int | None = None,
           pin_memory: bool = False, storage_options: dict[str, Any] | None = None) -> StoreLoader:
    """A DataLoader of ``Batch``es over the selected tokens of one run (a ``Store``, local path or any fsspec URL).

    Each iteration is one epoch: every selected (token, layer) exactly once over all workers and ranks,
    in an order fixed by ``seed`` and the epoch (0, 1, … or ``set_epoch``). ``rank``/``world_size``
    default to torch.distributed's when it is initialised. The shuffle buffer holds at most
    ``buffer_tokens`` rows, or what fits in ``buffer_bytes`` (default 1 GiB) per worker, chunks in flight
    and the outgoing batch included."""
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ActstoreError(f"num_workers must be 0 or more, got {num_workers!r}")
    found_rank, found_size = _distributed()
    data = StoreDataset(url, model, dataset, layers=layers, variants=variants, items=items, positions=positions,
                        batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch, buffer_tokens=buffer_tokens,
                        buffer_bytes=buffer_bytes, read_ahead=read_ahead,
                        rank=found_rank if rank is None else rank,
                        world_size=found_size if world_size is None else world_size,
                        storage_options=storage_options)
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
