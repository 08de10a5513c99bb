"""Per-example means and per-layer moments of stored states: one implementation for writers and readers.

The extraction's writers summarise each chunk of ``hidden`` as they write it
(store/pieces.py), and the analyses compute the same things from ``hidden`` when
a run has none stored, both with ``chunk_partials``: per chunk, float64 sums
row after row in token order (the bits of numpy summing a float64 copy of the
chunk over its first axis), reduced over chunks in chunk order. So either way
the numbers are the same, bit for bit, whoever computed which chunk. Writers use
the compiled kernel (activation_store/kernels.py, numba, imported on first use):
one pass over the stored values, bfloat16 bits decoded on the fly, the GIL
released, so writer threads summarise chunks side by side (~1.3 G values/s per
core here, where numpy's separate passes made ~0.3 G under the GIL). Readers
(dask tasks, often in memory-limited workers, where numba's compiler alone can
exceed the limit) use the definition itself: numpy on a float64 copy, the same
bits. Neither torch nor a store is touched here."""
from __future__ import annotations

import dask.array as da
import numpy as np


def chunk_partials(stored: np.ndarray, starts: np.ndarray | None, bfloat16: bool,
                   compiled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer's chunk (tokens, d) as stored (bfloat16 bit patterns or float32): its moments row — sum, sum of
    squares per dimension and max |h| (2·d + 1) — and, for the runs of tokens beginning at ``starts``, their sums
    (runs, d); all float64, summed row after row in token order. ``compiled`` False: numpy, the same bits."""
    if stored.dtype != (np.uint16 if bfloat16 else np.float32):
        raise TypeError(f"chunk_partials takes bfloat16 bits (uint16) or float32, got {stored.dtype}")
    n, d = stored.shape
    starts = np.zeros(0, np.int64) if starts is None else np.asarray(starts, np.int64)
    kernels = _kernels() if compiled else None
    if d < 2 or kernels is None:  # the definition itself: numpy on a float64 copy (numpy sums one contiguous
        values = np.left_shift(stored, 16, dtype=np.uint32).view(np.float32) if bfloat16 else stored  # column
        f64 = values.astype(np.float64)                                                      # pairwise, hence d < 2)
        absmax = float(np.abs(f64).max()) if n else 0.0
        runs = np.add.reduceat(f64, starts, axis=0) if len(starts) else np.zeros((0, d))
        return np.concatenate([f64.sum(axis=0), (f64 * f64).sum(axis=0), [absmax]]), runs
    totals = np.zeros((2, d))
    runs = np.empty((len(starts), d))
    absmax = (kernels.partials_bf16 if bfloat16 else kernels.partials_f32)(np.ascontiguousarray(stored), starts,
                                                                            totals, runs)
    return np.concatenate([totals[0], totals[1], [absmax]]), runs


def _kernels():
    """The compiled loops, imported on first use (numba's import costs a second); None where numba is not
    installed (a Python newer than numba supports, a machine given only pure wheels): the same bits, slower."""
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels


def run_sums(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(runs, d) float64 sums of ``rows`` (tokens, d) over the runs beginning at ``starts``: each the sequential
    float64 sum of its rows in order — the definition itself, as readers compute it (memory: one float64 copy)."""
    return np.add.reduceat(rows.astype(np.float64), starts, axis=0) if len(starts) else np.zeros((0, rows.shape[1]))


def block_moments(block: np.ndarray) -> np.ndarray:
    """(layer, 1, 2·d_model + 1) float64 of a (layer, unit, d_model) float32 block: per layer its sum and sum of
    squares per dimension and its max |h| — the definition itself, as readers compute it; ``chunk_partials``
    gives the writers the same bits."""
    values = block.astype(np.float64)
    absmax = np.abs(values).max(axis=1) if values.shape[1] else np.zeros((values.shape[0], values.shape[2]))
    return np.concatenate([values.sum(axis=1), (values * values).sum(axis=1), absmax.max(axis=1, keepdims=True)],
                          axis=1)[:, None, :]


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


def mean_states(data: da.Array, owner: np.ndarray, counts: np.ndarray) -> da.Array:
    """Per-owner means of a (layer, token, d_model) dask array as float32: (layer, owner, d_model), lazy.

    ``owner`` gives each token's output row (−1: left out) and ``counts`` each row's number of tokens;
    a row with no token is NaN. A segment sum per token chunk, then those summed as a tree of ``MEAN_SPLIT``-wide
    groups of consecutive chunks (memory stays at a group of partials; ``tree_sum`` gives the same bits)."""
    n_out = len(counts)
    token_chunks = data.chunks[1]
    owners = da.from_array(owner, chunks=(token_chunks,))
    partial = da.map_blocks(
        lambda block, who: segment_sums(block, who.reshape(-1), n_out), data, owners[None, :, None],
        new_axis=[2], chunks=(data.chunks[0], (1,) * len(token_chunks), (n_out,), data.chunks[2]),
        dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
    )
    total = partial.sum(axis=1, split_every=MEAN_SPLIT)  # a tree of MEAN_SPLIT-wide groups: ``tree_sum``'s order
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / counts[None, :, None]).astype(np.float32)


MEAN_SPLIT = 4  # token chunks summed per group of ``mean_states``'s tree: dask's own default, fixed here


def tree_sum(parts: list[tuple[int, np.ndarray]], split: int = MEAN_SPLIT) -> np.ndarray:
    """The sum ``mean_states``'s tree gives for one example whose only non-zero partials are ``parts``
    ((block position within the summed blocks, partial) in block order): consecutive groups of ``split`` blocks
    summed in order, then groups of those, until one is left. Blocks the example does not touch add exact zeros,
    so they are left out."""
    while len(parts) > 1:
        groups: dict[int, list[np.ndarray]] = {}
        for position, value in parts:
            groups.setdefault(position // split, []).append(value)
        parts = [(group, _in_order(values)) for group, values in groups.items()]
    return parts[0][1]


def _in_order(values: list[np.ndarray]) -> np.ndarray:
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


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
