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

    Tokens whose owner is −1 count for nobody."""
    out = np.zeros((block.shape[0], 1, n_out, block.shape[2]), dtype=np.float64)
    if not len(owner):
        return out
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    sums = np.add.reduceat(block.astype(np.float64), starts, axis=1)
    keep = owner[starts] >= 0
    out[:, 0, owner[starts][keep]] = sums[:, keep]
    return out


def mean_states(data: da.Array, owner: np.ndarray, counts: np.ndarray) -> da.Array:
    """Per-owner means of a (layer, token, d_model) dask array as float32: (layer, owner, d_model), lazy.

    ``owner`` gives each token's output row (−1: left out) and ``counts`` each row's number of tokens;
    a row with no token is NaN. A segment sum per token chunk, then a tree sum over chunks."""
    n_out = len(counts)
    token_chunks = data.chunks[1]
    owners = da.from_array(owner, chunks=(token_chunks,))
    partial = da.map_blocks(
        lambda block, who: segment_sums(block, who.reshape(-1), n_out), data, owners[None, :, None],
        new_axis=[2], chunks=(data.chunks[0], (1,) * len(token_chunks), (n_out,), data.chunks[2]),
        dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return (partial.sum(axis=1) / counts[None, :, None]).astype(np.float32)


def _block_moments(block: np.ndarray) -> np.ndarray:
    """(layer, 1, 2·d_model + 1) float64: the block's sum and sum of squares per dimension, and its max |h|."""
    values = block.astype(np.float64)
    absmax = np.abs(values).max(axis=1) if values.shape[1] else np.zeros((values.shape[0], values.shape[2]))
    return np.concatenate([values.sum(axis=1), (values * values).sum(axis=1), absmax.max(axis=1, keepdims=True)],
                          axis=1)[:, None, :]


def moments(data: da.Array) -> dict[str, np.ndarray]:
    """Per layer over axis 1 of a (layer, unit, d_model) dask array: ``mean`` and ``second_moment``
    (layer, d_model) float64, ``abs_max`` (layer,) float32 and ``count``. Computes.

    Partials per chunk of axis 1 are summed in chunk order with numpy, so any reader gets the same bits."""
    d_model = data.shape[2]
    partial = da.map_blocks(_block_moments, data.rechunk({2: -1}), chunks=(data.chunks[0], (1,) * len(data.chunks[1]),
                            (2 * d_model + 1,)), dtype=np.float64, meta=np.empty((0, 0, 0)))
    parts = np.asarray(partial.compute())                               # (layer, chunk, 2·d + 1): small
    count = int(data.shape[1])
    total = parts[:, :, : 2 * d_model].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mean": total[:, :d_model] / count, "second_moment": total[:, d_model:] / count,
                "abs_max": parts[:, :, -1].max(axis=1).astype(np.float32) if parts.shape[1] else
                np.zeros(data.shape[0], np.float32), "count": count}
