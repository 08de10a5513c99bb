"""Blocks of a run's arrays written many chunks at once, off the GIL, and handed on in order: extraction's write path.

A block is one chunk of tokens across every stored layer of every stored site (``hidden``, the residual stream,
and any others the run captures). Its layers are
summarised (store/pieces.py), checksummed and written by a pool of threads,
several blocks in flight at once; a committer thread waits for each block's
chunks in submission order and only then hands the block on (the campaign
commits it), so a committed block is always whole and a failed one is never
committed, nor is any after it. Memory stays at ``in_flight + 1`` block buffers,
reused: the caller fills one while the others are written.

On a local store whose ``hidden`` is raw bytes + CRC32C (the default), a chunk is
written the way zarr's LocalStore writes it (a temporary ``.partial`` file,
renamed into place) with one ``writev`` of the bytes and their checksum: the
``crc32c`` package and the write both release the GIL. Anywhere else (S3,
sharded or compressed arrays) each chunk goes through zarr, from the same
threads; a sharded block is one write, since a shard holds every layer.
benchmarks/chunk_writers.py compares these with zarr's own settings, the zarrs
pipeline and TensorStore; docs/scaling.md has the table."""
from __future__ import annotations

import os
import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import zarr
from zarr.storage import LocalStore, MemoryStore

from . import layout
from .arrays import WRITE_ALL
from .chunk_file import raw_with_checksum
from .pieces import SITE_SEPARATOR, ChunkSummary
from .write import fault_point

try:  # releases the GIL on large buffers (google_crc32c, zarr's, holds it: ~0.3 ms per 8 MB)
    from crc32c import crc32c as _crc32c
except ImportError:  # a machine without the wheel (the GPU check carries pure ones): the same checksum
    from google_crc32c import value as _google_crc32c

    def _crc32c(data: memoryview) -> int:
        return _google_crc32c(data.toreadonly())

IN_FLIGHT = 2  # blocks being written while the next fills: memory is (IN_FLIGHT + 1) blocks
Written = Callable[[int, int, "dict[str, np.ndarray] | None"], None]  # (start, stop, piece)


REMOTE_THREADS = 16  # requests in flight to an object store: each waits on the network, not on a core


def default_threads() -> int:
    """Writer threads on a local disk: more than cores (a thread waiting on the disk holds no core), at most 16."""
    return max(4, min(16, 2 * (os.cpu_count() or 1)))


class BlockWriter:
    """Writes blocks of a run's arrays — ``hidden`` and any other sites (layers × ≤ chunk units × per-unit shape,
    in their storage dtypes, chunked alike along units) — and calls ``on_written(start, stop, piece)`` on its
    committer thread once each block's chunks of every array are written, in the order the blocks were
    submitted. ``summarize(name, chunk, start, stop)`` says what each array's chunk leaves in the piece."""

    def __init__(self, arrays: Mapping[str, zarr.Array], *, on_written: Written, threads: int | None = None,
                 in_flight: int = IN_FLIGHT, summarize: Callable[[str, int, int, int], ChunkSummary | None] | None = None,
                 allocate: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None):
        self.arrays = {name: _writable(array) for name, array in arrays.items()}
        first = next(iter(self.arrays.values()))
        self.chunk = int((first.shards or first.chunks)[1])
        self.n_units = int(first.shape[1])
        if any(int((a.shards or a.chunks)[1]) != self.chunk or int(a.shape[1]) != self.n_units
               for a in self.arrays.values()):
            raise ValueError("a block's arrays must have the same units and the same chunks along them")
        self.shapes = {name: (int(a.shape[0]), self.chunk, *map(int, a.shape[2:])) for name, a in self.arrays.items()}
        self._roots = {name: Path(a.store.root) / a.path for name, a in self.arrays.items() if _direct(a)}
        self._dirs: set[Path] = set()
        self._summarize, self._on_written = summarize, on_written
        self._allocate = allocate or (lambda shape, dtype: np.empty(shape, dtype))
        remote = not isinstance(first.store, (LocalStore, MemoryStore))
        self._pool = ThreadPoolExecutor(threads or (REMOTE_THREADS if remote else default_threads()),
                                        thread_name_prefix="actstore-chunks")
        self._free: queue.Queue = queue.Queue()
        self._made = 0
        self._most = in_flight + 1
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._committer = threading.Thread(target=self._commit_loop, name="actstore-commit", daemon=True)
        self._committer.start()

    @property
    def block_bytes(self) -> int:
        return sum(int(np.prod(self.shapes[n])) * a.dtype.itemsize for n, a in self.arrays.items())

    def buffer(self) -> dict[str, np.ndarray]:
        """A block's buffers to fill, one per array (layers × chunk × …): new ones while fewer than
        ``in_flight + 1`` exist, else the next ones written (waiting for them: the backpressure that bounds memory)."""
        self._raise()
        if self._made < self._most:
            self._made += 1
            return {name: self._allocate(self.shapes[name], a.dtype) for name, a in self.arrays.items()}
        while True:
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                self._raise()

    def submit(self, start: int, buffers: Mapping[str, np.ndarray], ready: Callable[[], None] | None = None) -> None:
        """Write units ``[start, start + chunk)`` (the last block may be shorter) of every array from ``buffers``,
        which go back to the free list once written. ``ready()`` is called before their bytes are read (a device copy)."""
        self._raise()
        stop = min(start + self.chunk, self.n_units)
        if start % self.chunk or start >= self.n_units:
            raise ValueError(f"block {start}:{stop} is not aligned to chunks of {self.chunk} tokens")
        chunk = start // self.chunk
        summaries = {name: self._summarize(name, chunk, start, stop) if self._summarize else None
                     for name in self.arrays}
        if stop - start < self.chunk:  # the edge chunk is stored whole, padded with the fill value as zarr does
            ready and ready()
            ready = None
            for name, array in self.arrays.items():
                buffers[name][:, stop - start:] = array.fill_value
        futures = []
        for name, array in self.arrays.items():
            summary, buffer = summaries[name], buffers[name]
            if array.shards is not None:
                futures.append((name, [self._pool.submit(self._sharded, array, start, stop, buffer, ready, summary)]))
            else:
                futures.append((name, [self._pool.submit(self._layer, name, i, chunk, start, stop, buffer, ready, summary)
                                       for i in range(self.shapes[name][0])]))
        self._queue.put((start, stop, futures, summaries, buffers))

    def close(self) -> None:
        """Wait for every block; raise the first error (no block after it was handed on)."""
        self._queue.put(None)
        self._committer.join()
        self._pool.shutdown(wait=True)
        self._raise()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and self._error is None:
            self._error = exc  # the caller failed: hand nothing more on
        try:
            self.close()
        except BaseException:
            if exc is None:
                raise

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _layer(self, name: str, i: int, chunk: int, start: int, stop: int, buffer: np.ndarray, ready, summary):
        if ready is not None:
            ready()
        array = self.arrays[name]
        part = summary.layer(i, buffer[i, :stop - start], array.dtype == np.uint16) if summary is not None else None
        if name in self._roots:
            key = array.metadata.encode_chunk_key((i, chunk, *[0] * (array.ndim - 2)))
            self._write_file(self._roots[name] / key, buffer[i])
        else:
            array[i:i + 1, start:stop] = buffer[i:i + 1, :stop - start]
        return part

    @staticmethod
    def _sharded(array: zarr.Array, start: int, stop: int, buffer: np.ndarray, ready, summary):
        if ready is not None:
            ready()
        parts = [summary.layer(i, buffer[i, :stop - start], array.dtype == np.uint16)
                 for i in range(buffer.shape[0])] if summary is not None else None
        array[:, start:stop] = buffer[:, :stop - start]
        return parts

    def _write_file(self, path: Path, chunk: np.ndarray) -> None:
        """One chunk as zarr's LocalStore writes it: into a temporary file, renamed into place when whole."""
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        data = memoryview(chunk.reshape(-1)).cast("B")
        checksum = _crc32c(data).to_bytes(4, "little")
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                buffers, left = [data, checksum], len(data) + 4
                while left:
                    wrote = os.writev(fd, buffers)
                    left -= wrote
                    buffers = _after(buffers, wrote)
            finally:
                os.close(fd)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.filename is None:  # writev names no file: say which chunk (a full disk, say)
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _commit_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            start, stop, futures, summaries, buffers = item
            try:
                results = {name: [f.result() for f in fs] for name, fs in futures}
                if self._error is None:
                    piece = _piece(self.arrays, results, summaries)
                    fault_point()
                    self._on_written(start, stop, piece)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                if self._error is None:
                    self._error = exc
            finally:
                self._free.put(buffers)


def _writable(array: zarr.Array) -> zarr.Array:
    """``array`` writing every chunk as given (a reopened array would first compare each with the fill value)."""
    return array if array.config.write_empty_chunks else array.with_config(WRITE_ALL)


def _direct(array: zarr.Array) -> bool:
    """Whether chunks of ``array`` can be written as files directly: a local store, unsharded, raw bytes + CRC32C."""
    return isinstance(array.store, LocalStore) and array.shards is None and raw_with_checksum(array)


def _piece(arrays: Mapping[str, zarr.Array], results: dict[str, list], summaries: dict) -> dict[str, np.ndarray] | None:
    """The block's piece: ``hidden``'s parts under their own names, every other site's under
    ``<name>|<part>`` (pieces.SITE_SEPARATOR); None when nothing was summarised."""
    piece: dict[str, np.ndarray] | None = None
    for name, parts in results.items():
        summary = summaries[name]
        if summary is None:
            continue
        layers = parts[0] if arrays[name].shards is not None else parts
        own = summary.piece(layers)
        piece = piece or {}
        piece.update(own if name == layout.HIDDEN else {f"{name}{SITE_SEPARATOR}{k}": v for k, v in own.items() if k != "span"})
        piece.setdefault("span", own["span"])
    return piece


def _after(buffers: list, n: int) -> list:
    """What is left of ``buffers`` after a write of ``n`` bytes."""
    out = []
    for b in buffers:
        if n >= len(b):
            n -= len(b)
            continue
        out.append(memoryview(b)[n:] if n else b)
        n = 0
    return out

