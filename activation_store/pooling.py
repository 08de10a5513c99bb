"""Per-example means and per-layer moments of stored states: one implementation for writers and readers.

The extraction writes each full run's pooled views and statistics with these
functions, and the analyses compute the same things with them from ``hidden``
when a run has none stored, so both give the same numbers bit for bit: the same
per-chunk partial sums (float64, one chunk of ``hidden`` at a time, so memory
stays at a chunk plus one partial) reduced in the same order. numpy and dask
only: neither torch nor a store is touched here."""
from __future__ import annotations

import dask.array as da
import numpy as np


def segment_sums(block: np.ndarray, owner: np.ndarray, n_out: int) -> np.ndarray:
    """Sums of runs of tokens with the same owner in one (layer, token, d_model) block: (layer, 1, n_out, d_model).

    Tokens whose owner is −1 count for nobody. Each run is summed in float64 row after row, in token order."""
    out = np.zeros((block.shape[0], 1, n_out, block.shape[2]), dtype=np.float64)
    if not len(owner):
        return out
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    keep = owner[starts] >= 0
    for layer in range(block.shape[0]):
        out[layer, 0, owner[starts][keep]] = run_sums(block[layer], starts)[keep]
    return out


_TILE_ROWS = 64  # float64 rows converted at a time: a tile stays in cache instead of a chunk-sized temporary


def run_sums(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(runs, d) float64 sums of ``rows`` (tokens, d) over the runs beginning at ``starts``: each the sequential
    float64 sum of its rows in order, bit for bit ``np.add.reduceat(rows.astype(float64), starts, axis=0)``, in
    tiles. A run carried over a tile boundary continues from its partial (put first in the tile), so the order of
    additions is unchanged."""
    n, d = rows.shape
    if d < 2:  # numpy sums a single contiguous column pairwise, not row by row: keep its own order there
        return np.add.reduceat(rows.astype(np.float64), starts, axis=0)
    out = np.empty((len(starts), d), dtype=np.float64)
    tile = np.empty((_TILE_ROWS + 1, d), dtype=np.float64)
    ends = np.r_[starts[1:], n]
    run = 0
    for lo in range(0, n, _TILE_ROWS):
        hi = min(lo + _TILE_ROWS, n)
        tile[1:hi - lo + 1] = rows[lo:hi]
        while run < len(starts) and starts[run] < hi:
            first, last = max(starts[run], lo), min(ends[run], hi)
            if starts[run] < lo:  # carried over from the last tile: continue from its partial
                tile[first - lo] = out[run]
                out[run] = tile[first - lo:last - lo + 1].sum(axis=0)
            else:
                out[run] = tile[first - lo + 1:last - lo + 1].sum(axis=0)
            if ends[run] > hi:
                break
            run += 1
    return out


def mean_states(data: da.Array, owner: np.ndarray, counts: np.ndarray) -> da.Array:
    """Per-owner means of a (layer, token, d_model) dask array as float32: (layer, owner, d_model), lazy.

    ``owner`` gives each token's output row (−1: left out) and ``counts`` each row's number of tokens;
    a row with no token is NaN. A segment sum per token chunk, then those summed in chunk order."""
    n_out = len(counts)
    token_chunks = data.chunks[1]
    owners = da.from_array(owner, chunks=(token_chunks,))
    partial = da.map_blocks(
        lambda block, who: segment_sums(block, who.reshape(-1), n_out), data, owners[None, :, None],
        new_axis=[2], chunks=(data.chunks[0], (1,) * len(token_chunks), (n_out,), data.chunks[2]),
        dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
    )
    total = partial[:, 0]
    for block in range(1, partial.numblocks[1]):  # in chunk order, one after another (as the writers' pieces)
        total = total + partial[:, block]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / counts[None, :, None]).astype(np.float32)


def block_moments(block: np.ndarray) -> np.ndarray:
    """(layer, 1, 2·d_model + 1) float64: the block's sum and sum of squares per dimension, and its max |h|.

    Sums run in float64 row after row, in token order (as numpy sums a (tokens, d) array over its first axis),
    converted a tile at a time: the bits of summing one float64 copy of the block, at a fraction of its memory
    traffic. Writers compute these per chunk as they write; readers from ``hidden``: the same numbers."""
    n_layers, n, d = block.shape
    out = np.zeros((n_layers, 1, 2 * d + 1), dtype=np.float64)
    if not n:
        return out
    if d < 2:  # see ``run_sums``
        values = block.astype(np.float64)
        return np.concatenate([values.sum(axis=1), (values * values).sum(axis=1),
                               np.abs(values).max(axis=1).max(axis=1, keepdims=True)], axis=1)[:, None, :]
    tile = np.empty((_TILE_ROWS + 1, d), dtype=np.float64)
    squares = np.empty((_TILE_ROWS + 1, d), dtype=np.float64)
    for layer in range(n_layers):
        total, total_sq = out[layer, 0, :d], out[layer, 0, d:2 * d]
        for lo in range(0, n, _TILE_ROWS):
            rows = block[layer, lo:lo + _TILE_ROWS]
            k = len(rows) + 1
            tile[0], squares[0] = total, total_sq
            tile[1:k] = rows
            np.square(tile[1:k], out=squares[1:k])
            total[:] = tile[:k].sum(axis=0)  # the running sum first, then the tile's rows in order
            total_sq[:] = squares[:k].sum(axis=0)
        out[layer, 0, -1] = float(np.abs(block[layer]).max())  # a max: exact in float32
    return out


def moments(data: da.Array) -> dict[str, np.ndarray]:
    """Per layer over axis 1 of a (layer, unit, d_model) dask array: ``mean`` and ``second_moment``
    (layer, d_model) float64, ``abs_max`` (layer,) float32 and ``count``. Computes.

    Partials per chunk of axis 1 are summed in chunk order with numpy, so any reader gets the same bits."""
    d_model = data.shape[2]
    partial = da.map_blocks(block_moments, data.rechunk({2: -1}), chunks=(data.chunks[0], (1,) * len(data.chunks[1]),
                            (2 * d_model + 1,)), dtype=np.float64, meta=np.empty((0, 0, 0)))
    return reduce_moments(np.asarray(partial.compute()), int(data.shape[1]))  # (layer, chunk, 2·d + 1): small


def reduce_moments(parts: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """``moments`` from its per-chunk partials (layer, chunk, 2·d_model + 1), summed in chunk order."""
    d_model = (parts.shape[2] - 1) // 2
    total = parts[:, :, : 2 * d_model].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mean": total[:, :d_model] / count, "second_moment": total[:, d_model:] / count,
                "abs_max": parts[:, :, -1].max(axis=1).astype(np.float32) if parts.shape[1] else
                np.zeros(parts.shape[0], np.float32), "count": count}
