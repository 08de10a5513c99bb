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
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from zarr import buffer

from ..errors import ActstoreError
from ..positions import parse_read as parse_read_positions
from ..store import Store, layout
from ..store.chunk_file import direct_reader
from ..store.open import open_run
from ..store.precision import decode_bfloat16

DEFAULT_BUFFER_BYTES = 1 << 30
_SLOT_BYTES = 8 + 8 + 2  # per reservoir slot: its ring row (int64), index into the selection (int64), layer (int16)
# ring rows per reservoir slot: the ring comes round to a row after ~slack × capacity rows have arrived, by
# when all but ~e^-slack of them (13% at 2) have left at random; those few are moved, the rest never copied
_RING_SLACK = 2
_STEP = 256  # rows gathered at a time on their way to a batch: a block that stays in the CPU's cache
# threads that move rows into batches (numpy releases the GIL for take and decode): the reads already run on
# their own threads, so on two cores this is what lets the shuffle keep up with them
_COPY_THREADS = max(1, min(2, os.cpu_count() or 1))


_TORCH_BITS = {np.dtype(np.float32): torch.float32, np.dtype(np.uint16): torch.uint16}
_BATCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Batch(NamedTuple):
    """``hidden`` (B, d_model) float32 (or bfloat16, as asked); ``layer``, ``example``, ``position``,
    ``token_id`` (B,) int64."""

    hidden: torch.Tensor
    layer: torch.Tensor
    example: torch.Tensor
    position: torch.Tensor
    token_id: torch.Tensor

    def to(self, *args: Any, **kwargs: Any) -> "Batch":
        return Batch(*(t.to(*args, **kwargs) for t in self))

    def __reduce__(self):
        # from a DataLoader worker, each tensor is one shared-memory handle passed over a socket: the four
        # small coordinate vectors travel as one (4, B) tensor, two handles per batch instead of five
        return _batch_from, (self.hidden, torch.stack(tuple(self[1:])))


def _batch_from(hidden: torch.Tensor, coordinates: torch.Tensor) -> Batch:
    return Batch(hidden, *coordinates)


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
    """Tokens at the chosen positions: ``None``/``"all"``, ``"last"``, or ints (negative ones count from each example's end),
    as activation_store/positions.py parses them."""
    chosen = parse_read_positions(positions)
    if chosen is None:
        return np.ones(len(position), dtype=bool)
    from_start = np.asarray([p for p in chosen if p >= 0], dtype=np.int64)
    from_end = np.asarray([p for p in chosen if p < 0], dtype=np.int64)
    return np.isin(position, from_start) | np.isin(position.astype(np.int64) - count, from_end)


class StoreDataset(IterableDataset):
    """Batches of selected tokens from one run; see the module docstring for the order and sharding."""

    def __init__(self, url: str | Store, model: str, dataset: str, *, layers: Sequence[int] | None = None,
                 variants: Sequence[str] | None = None, items: Sequence[str] | None = None,
                 positions: str | Sequence[int] | None = None, batch_size: int = 4096, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, buffer_tokens: int | None = None, buffer_bytes: int | None = None,
                 read_ahead: int = 2, rank: int = 0, world_size: int = 1, dtype: torch.dtype | str = torch.float32,
                 storage_options: dict[str, Any] | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ActstoreError(f"batch_size must be at least 1, got {batch_size!r}")
        if read_ahead < 1:
            raise ActstoreError(f"read_ahead must be at least 1, got {read_ahead}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ActstoreError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.dtype = _BATCH_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if self.dtype not in _BATCH_DTYPES.values():
            raise ActstoreError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        # the batch's bits as numpy holds them (numpy has no bfloat16)
        self.out_bits = np.dtype(np.float32 if self.dtype == torch.float32 else np.uint16)
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

        self._stored = np.dtype(np.uint16 if self.bfloat16 else np.float32)   # rows as stored, in ring and batch
        ring_row = self.d_model * self._stored.itemsize + 8                   # a ring row and its owner (int64)
        largest = int(np.diff(self.bounds).max())
        # what a shard holds besides the ring and its slots: the batch being filled (in the batch dtype, with
        # coordinates) with its small gathering blocks, and the batch out; without shuffling, the chunks being read
        out = (batch_size * (2 * self.d_model * self.out_bits.itemsize + 16)
               + _COPY_THREADS * _STEP * self.d_model * self._stored.itemsize)
        # per chunk holding selected tokens: are they one run of at least half the chunk? Then the chunk is
        # read straight into the ring, else into a scratch block and its selected rows copied in
        counts = np.diff(self.bounds)
        self.one_run = self.tokens[self.bounds[1:] - 1] - self.tokens[self.bounds[:-1]] + 1 == counts
        self.read_in_place = self.one_run & (2 * counts >= self.chunk_tokens)
        need = batch_size + largest
        # beyond the slack's rows: the stretches of the reads in flight, one being reserved and a lap's unused
        # tail (each at most a chunk), and a scratch block per read in flight for chunks read elsewhere first
        self.scratch_blocks = 0 if self.read_in_place.all() else read_ahead
        scratch = self.scratch_blocks * self.chunk_tokens * self.d_model * self._stored.itemsize
        beyond_slack = (read_ahead + 2) * self.chunk_tokens
        fixed = out + scratch + beyond_slack * ring_row
        capacity = None if buffer_tokens is None else int(buffer_tokens)
        if buffer_bytes is not None or capacity is None:
            budget = DEFAULT_BUFFER_BYTES if buffer_bytes is None else int(buffer_bytes)
            by_bytes = int((budget - fixed) // (_RING_SLACK * ring_row + _SLOT_BYTES))
            if by_bytes < need:
                floor = fixed + need * (_RING_SLACK * ring_row + _SLOT_BYTES)
                raise ActstoreError(f"buffer_bytes {budget:,} is too small for batch_size {batch_size} and chunks of "
                                    f"{self.chunk_tokens} tokens × d_model {self.d_model}; it needs at least {floor:,}")
            capacity = by_bytes if capacity is None else min(capacity, by_bytes)
        if capacity < need:
            raise ActstoreError(f"buffer_tokens {capacity} is too small: it must hold a batch ({batch_size}) "
                                f"and a chunk's selected tokens ({largest}), at least {need}")
        self.capacity = capacity
        # a stretch being reserved always finds room for its buffered rows in the holes elsewhere, since the
        # ring holds ``capacity`` rows more than the buffer, the stretches in flight and a lap's tail
        self.ring_rows = _RING_SLACK * capacity + beyond_slack
        self.rows_moved = 0  # rows this process's last shuffled epoch moved within its ring (a diagnostic)
        self.buffer_bytes = self.ring_rows * ring_row + capacity * _SLOT_BYTES + out + scratch

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

    def _read(self, hidden, direct, unit: int, into: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """One chunk of one layer, read into ``into`` (a whole chunk's block; straight from its file when
        ``direct`` can): (the selected tokens' rows in ``into``, their selection indices, layer)."""
        layer = int(self.layers[unit // len(self.chunks)])
        j = unit % len(self.chunks)
        lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
        start = int(self.chunks[j]) * self.chunk_tokens
        stop = min(start + self.chunk_tokens, hidden.shape[1])
        if direct is None or not direct((layer, int(self.chunks[j]), 0), into):
            hidden.get_basic_selection((layer, slice(start, stop)),
                                       out=buffer.cpu.NDBuffer.from_numpy_array(into[:stop - start]))
        return self.tokens[lo:hi] - start, np.arange(lo, hi), layer

    def _chunks(self, units: np.ndarray, claim) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
        """The shard's chunks in order, ``read_ahead`` of them in flight at once (reads overlap over S3), as
        (key, positions of the selected tokens in its block, their selection indices, layer).

        ``claim(unit)`` gives each read its destination, (key, block), when the read is submitted: that is
        after the consumer came back from the chunk before, and ``read_ahead - 1`` reads are still in flight."""
        hidden = Store.open(self.url, self.storage_options).root[self.path][layout.HIDDEN]
        direct = direct_reader(hidden) if hidden.chunks == (1, self.chunk_tokens, self.d_model) else None
        with ThreadPoolExecutor(max_workers=self.read_ahead) as pool:
            pending: deque = deque()
            for unit in units:
                key, block = claim(int(unit))
                pending.append((key, pool.submit(self._read, hidden, direct, int(unit), block)))
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


class _Ring:
    """The shuffle buffer's rows: a ring that chunks' rows are put into in turn, and the reservoir's slots
    pointing into it (``slot_row``; ``owner`` is the inverse, −1 for a hole).

    Each read reserves the next stretch of the ring when it is submitted: a whole chunk when its selected
    tokens are one run of at least half of it (it is read there straight from the store), else as many rows
    as it has selected tokens (copied there from a scratch block once read). The few rows still buffered in
    a stretch being reserved move to holes just behind the reads in flight: the newest part of the ring,
    which the reservations reach last, so rows are rarely moved twice."""

    def __init__(self, n_rows: int, chunk_tokens: int, d_model: int, dtype: np.dtype, capacity: int,
                 n_scratch: int) -> None:
        self.chunk_tokens = chunk_tokens
        self.rows = np.empty((n_rows, d_model), dtype=dtype)
        self.owner = np.full(n_rows, -1, dtype=np.int64)
        self.slot_row = np.empty(capacity, dtype=np.int64)
        # one scratch block per read in flight, taken in turn (none when every chunk is read in place)
        self.scratch = itertools.cycle(np.empty((n_scratch, chunk_tokens, d_model), dtype=dtype))
        self.head = 0
        self.reserved: deque = deque()                                   # (start, size) of reads in flight
        self.moved = 0                                                   # rows moved out of reserved stretches

    def claim(self, selected: int, in_place: bool) -> tuple[tuple[int, np.ndarray | None], np.ndarray]:
        """Reserve the next stretch for a read: ((its start, the scratch block or None), the block to read into)."""
        size = self.chunk_tokens if in_place else selected
        if self.head + size > len(self.rows):
            self.head = 0                                                # this lap leaves the ring's tail unused
        start = self.head
        self._vacate(start, size)
        self.head += size
        self.reserved.append((start, size))
        if in_place:
            return (start, None), self.rows[start:start + size]
        block = next(self.scratch)
        return (start, block), block

    def arrived(self, key: tuple[int, np.ndarray | None], local: np.ndarray) -> np.ndarray:
        """The ring rows of a read that came back (the oldest in flight), given its selected ``local`` rows."""
        start, scratch = key
        self.reserved.popleft()
        if scratch is None:
            return start + local
        self.rows[start:start + len(local)] = scratch[local]
        return np.arange(start, start + len(local))

    def _vacate(self, start: int, size: int) -> None:
        live = np.flatnonzero(self.owner[start:start + size] >= 0) + start
        if not len(live):
            return
        free = self.owner < 0
        free[start:start + size] = False
        for lo, n in self.reserved:
            free[lo:lo + n] = False
        behind = self.reserved[0][0] if self.reserved else start         # newest first: backwards from here
        holes = np.concatenate([np.flatnonzero(free[:behind])[::-1],
                                np.flatnonzero(free[behind:])[::-1] + behind])[:len(live)]
        self.rows[holes] = self.rows[live]
        self.place(self.owner[live], holes)
        self.owner[live] = -1
        self.moved += len(live)

    def place(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """Slots ``slots`` now point at ring rows ``rows`` (what they pointed at before is the caller's)."""
        self.slot_row[slots] = rows
        self.owner[rows] = slots

    def replace(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """Evicted slots take ring rows ``rows``; the rows they held become holes."""
        self.owner[self.slot_row[slots]] = -1
        self.place(slots, rows)


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
    """The outgoing batch, filled in place (and decoded, when the batch dtype is not the stored one) as it
    fills: a new block per batch, written by vectorised numpy ops. When decoding, rows are gathered in
    slices of ``_STEP`` through a small block that stays in cache, so gathering and decoding read memory
    once; rows already in the batch dtype go straight in."""

    def __init__(self, dataset: StoreDataset, copiers: ThreadPoolExecutor) -> None:
        self.dataset, self.size, self.held, self.copiers = dataset, dataset.batch_size, 0, copiers
        self.as_stored = dataset.out_bits == dataset._stored                  # no decoding on the way out
        self.hidden = self._new_hidden()
        self.picked = np.empty(self.size, dtype=np.int64)
        self.layers = np.empty(self.size, dtype=np.int64)
        # one small gathering block per copy thread, when rows are converted on the way out
        self.steps = (None if self.as_stored else
                      [np.empty((min(_STEP, self.size), dataset.d_model), dtype=dataset._stored)
                       for _ in range(_COPY_THREADS)])

    def _new_hidden(self) -> np.ndarray:
        """A new batch block (the batch dtype's bits). In a DataLoader worker it lives in shared memory from
        the start, so the batch reaches the main process as a handle instead of being copied there."""
        shape, bits = (self.size, self.dataset.d_model), self.dataset.out_bits
        if get_worker_info() is None:
            self.hidden_tensor = None
            return np.empty(shape, dtype=bits)
        storage = torch.UntypedStorage._new_shared(self.size * self.dataset.d_model * bits.itemsize)
        self.hidden_tensor = torch.empty(0, dtype=_TORCH_BITS[bits]).set_(storage).view(shape)
        return self.hidden_tensor.numpy()

    def _put(self, rows: np.ndarray, to: slice) -> None:
        """Stored rows (as stored) into the batch at ``to``, in the batch dtype."""
        if self.as_stored:
            self.hidden[to] = rows
        elif self.dataset.bfloat16:                                      # bfloat16 bits → float32, exactly
            decode_bfloat16(rows, out=self.hidden[to])
        else:                                                            # float32 → bfloat16, rounded to nearest
            torch.from_numpy(self.hidden[to]).view(torch.bfloat16).copy_(torch.from_numpy(rows))

    def gather(self, rows: np.ndarray, picked: np.ndarray, layers: np.ndarray, slots: np.ndarray,
               where: np.ndarray) -> Iterator[Batch]:
        """Slots ``slots`` (their coordinates ``picked``/``layers``, their states at rows ``where`` of ``rows``),
        in that order; yields each batch as it fills."""
        done = 0
        while done < len(slots):
            part = slots[done:done + self.size - self.held]
            at = where[done:done + len(part)]
            to = slice(self.held, self.held + len(part))
            np.take(picked, part, out=self.picked[to], mode="clip")   # not mode="raise": that copies `out` first
            self.layers[to] = layers[part]
            _in_parts(self.copiers, len(part), lambda a, b, i: self._gather_rows(rows, at, to.start, a, b, i))
            self.held += len(part)
            done += len(part)
            if self.held == self.size:
                yield self._emit()

    def _gather_rows(self, rows: np.ndarray, part: np.ndarray, at: int, a: int, b: int, thread: int) -> None:
        """Buffer rows ``part[a:b]`` into batch rows ``at + a`` on, through this part's small block when decoding."""
        if self.as_stored:
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
        hidden = torch.from_numpy(self.hidden[:n]) if self.hidden_tensor is None else self.hidden_tensor[:n]
        hidden = hidden.view(ds.dtype)                                   # bfloat16 batches are held as their bits
        self.hidden = self._new_hidden()                                # handed out whole; the next batch is new
        picked = self.picked[:n]
        self.held = 0
        return Batch(hidden, torch.from_numpy(ds.layer_labels[self.layers[:n]]),  # labels: a copy
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
           pin_memory: bool = False, dtype: torch.dtype | str = torch.float32,
           storage_options: dict[str, Any] | None = None) -> StoreLoader:
    """A DataLoader of ``Batch``es over the selected tokens of one run (a ``Store``, local path or any fsspec URL).

    Each iteration is one epoch: every selected (token, layer) exactly once over all workers and ranks,
    in an order fixed by ``seed`` and the epoch (0, 1, … or ``set_epoch``). ``rank``/``world_size``
    default to torch.distributed's when it is initialised. The shuffle buffer holds at most
    ``buffer_tokens`` rows, or what fits in ``buffer_bytes`` (default 1 GiB) per worker, chunks in flight
    and the outgoing batch included: about half as many rows as those bytes would hold, since chunks are read
    straight into a ring with that much slack (see ``_Ring``). ``dtype``: the batches' float32 (default) or
    bfloat16; a bfloat16 run's states then go out as stored, with no decoding (half the bytes to a GPU)."""
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ActstoreError(f"num_workers must be 0 or more, got {num_workers!r}")
    found_rank, found_size = _distributed()
    data = StoreDataset(url, model, dataset, layers=layers, variants=variants, items=items, positions=positions,
                        batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch, buffer_tokens=buffer_tokens,
                        buffer_bytes=buffer_bytes, read_ahead=read_ahead,
                        rank=found_rank if rank is None else rank,
                        world_size=found_size if world_size is None else world_size, dtype=dtype,
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
