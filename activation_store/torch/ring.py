"""The loader's shuffle buffer: a ring of rows that chunks are read straight into, and the outbox that gathers
random rows from it into batches on a few copy threads (numpy releases the GIL for take and decode)."""
from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import get_worker_info

from ..store.precision import decode_bfloat16
from .selection import _COPY_THREADS, _STEP

if TYPE_CHECKING:
    from .loader import StoreDataset

_TORCH_BITS = {np.dtype(np.float32): torch.float32, np.dtype(np.uint16): torch.uint16}


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
