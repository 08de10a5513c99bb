"""What each written block of ``hidden`` leaves for the run's finish: its partial sums, one object per chunk.

A finished run's statistics and pooled views (store/views.py) are reductions
over ``hidden``. Instead of reading ``hidden`` back, the writer of each block
summarises its chunks while it holds them — per layer the float64 sum, sum of
squares and max |h| (``pooling.block_moments``); per example the float64 sum of
its tokens in the chunk (``pooling.run_sums``), made final (a float32 mean) for
the examples wholly inside it; the stored last state of each example ending in
it — and stores the piece under ``<run>/.pieces/<chunk>`` before the block is
committed. The finish reduces the pieces in chunk order: the numbers the same
reductions over ``hidden`` give, bit for bit, whoever wrote which block, in
whatever order, across however many resumes. The pieces are deleted once the
views are written."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .. import pooling
from .handle import Store

PREFIX = ".pieces"  # a dot: verify and transfers pass over it, as over lock files
SITE_SEPARATOR = "|"  # a site's parts in a piece: ``<site>|moments`` (``hidden``'s parts have bare names)


class NonFinite(ValueError):
    """A chunk holds inf or NaN; ``index`` is the layer's position in the block (not yet written)."""

    def __init__(self, index: int, site: str = "hidden"):
        super().__init__(f"non-finite states of {site} in layer index {index}")
        self.index, self.site = index, site


@dataclass(frozen=True)
class Examples:
    """The examples whose tokens a fill task writes: what per-example pieces need (token-unit runs only)."""

    first: int            # index of the first example
    offsets: np.ndarray   # token offset of each
    counts: np.ndarray    # tokens of each
    bos: bool             # position 0 is left out of means (as ``views.mean_owners``)


class ChunkSummary:
    """Summarises one chunk (tokens ``[start, stop)``) of one array (``hidden`` or a site's) layer by layer;
    ``examples`` None: moments only."""

    def __init__(self, chunk: int, start: int, stop: int, examples: Examples | None, site: str = "hidden"):
        self.chunk, self.start, self.stop, self.site = chunk, start, stop, site
        self.examples = examples
        if examples is None:
            return
        ends = examples.offsets + examples.counts
        lo = int(np.searchsorted(ends, start, side="right"))
        hi = int(np.searchsorted(examples.offsets, stop, side="left"))
        offsets, counts, ends = examples.offsets[lo:hi], examples.counts[lo:hi], ends[lo:hi]
        self.ids = np.arange(lo, hi) + examples.first              # the examples with tokens here
        owner = np.repeat(np.arange(hi - lo), counts)
        first_token = int(offsets[0]) if hi > lo else start
        owner = owner[start - first_token:stop - first_token]
        if examples.bos:                                         # BOS counts for nobody, as in ``mean_owners``
            tokens = np.arange(start, stop)
            owner = np.where(tokens == np.repeat(offsets, counts)[start - first_token:stop - first_token], -1, owner)
        self.starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.zeros(0, int)
        self.run_owner = owner[self.starts] if len(owner) else np.zeros(0, int)
        self.inside = (offsets >= start) & (ends <= stop)        # wholly here: their means are final
        self.n_mean = counts - int(examples.bos)
        self.ending = np.flatnonzero((ends > start) & (ends <= stop))
        self.last_rows = ends[self.ending] - 1 - start

    def layer(self, index: int, stored: np.ndarray, bfloat16: bool) -> dict[str, np.ndarray]:
        """One layer's part of the piece from the chunk's tokens as written (bfloat16 bits or float32).

        Raises ``NonFinite`` before anything is written when the chunk holds inf or NaN: the sums see every value.
        A site with several axes per unit (``z``: heads × d_head) is summarised per flattened element."""
        stored = stored.reshape(stored.shape[0], -1) if stored.ndim > 2 else stored
        moments, runs = pooling.chunk_partials(stored, self.starts if self.examples is not None else None, bfloat16)
        if not np.isfinite(moments[:-1]).all():
            raise NonFinite(index, self.site)
        out = {"moments": moments}
        if self.examples is None:
            return out
        sums = np.zeros((len(self.ids), stored.shape[1]), dtype=np.float64)
        if len(self.starts):
            counted = self.run_owner >= 0
            sums[self.run_owner[counted]] = runs[counted]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["means"] = (sums[self.inside] / self.n_mean[self.inside, None]).astype(np.float32)
        out["edge_sums"] = sums[~self.inside]
        out["last"] = stored[self.last_rows]
        return out

    def piece(self, layers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The chunk's piece: each layer's part stacked along a leading layer axis, and which examples they are."""
        piece = {name: np.stack([part[name] for part in layers]) for name in layers[0]}
        piece["span"] = np.array([self.chunk, self.start, self.stop], dtype=np.int64)
        if self.examples is not None:
            piece["inside"], piece["edge"] = self.ids[self.inside], self.ids[~self.inside]
            piece["ending"] = self.ids[self.ending]
        return piece


def _key(path: str, chunk: int) -> str:
    return f"{path}/{PREFIX}/{chunk}"


def write(store: Store, path: str, piece: dict[str, np.ndarray]) -> None:
    """Store one chunk's piece (before its block is committed: a committed block always has its piece)."""
    data = io.BytesIO()
    np.savez(data, **piece)  # a zip with a CRC per array: a damaged piece fails to load, never misleads
    buffer = default_buffer_prototype().buffer.from_bytes(data.getvalue())
    sync(store.zarr_store.set(_key(path, int(piece["span"][0])), buffer))


def read(store: Store, path: str, chunk: int) -> dict[str, np.ndarray] | None:
    raw = sync(store.zarr_store.get(_key(path, chunk), prototype=default_buffer_prototype()))
    if raw is None:
        return None
    try:
        with np.load(io.BytesIO(raw.to_bytes()), allow_pickle=False) as loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError):  # a damaged piece: the finish reads ``hidden`` instead
        return None


def present(store: Store, path: str) -> set[int]:
    """The chunks that have a piece (one listing)."""
    async def listed() -> list[str]:
        return [key async for key in store.zarr_store.list_prefix(f"{path}/{PREFIX}/")]

    return {int(key.rsplit("/", 1)[1]) for key in sync(listed()) if key.rsplit("/", 1)[1].isdigit()}


def delete(store: Store, path: str) -> None:
    sync(store.zarr_store.delete_dir(f"{path}/{PREFIX}"))
