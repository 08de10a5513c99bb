"""Compiled loops for the per-chunk sums of ``activation_store.pooling`` (numba; cached on disk after the first
compilation). Every sum adds its rows in order, row after row, with no reassociation: the bits numpy gives for
a float64 copy of the chunk summed over its first axis, which tests/test_write_path.py checks."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def add_row(values, run, first, totals, runs):  # pragma: no cover - compiled
    """Add one float32 row, as float64, to the sums, the sums of squares and its run's sum: one loop over d
    (vectorised, never reassociated: every sum still adds its rows in order)."""
    d = values.shape[0]
    if run < 0:
        for j in range(d):
            v = np.float64(values[j])
            totals[0, j] += v
            totals[1, j] += v * v
    elif first:
        for j in range(d):
            v = np.float64(values[j])
            totals[0, j] += v
            totals[1, j] += v * v
            runs[run, j] = v
    else:
        for j in range(d):
            v = np.float64(values[j])
            totals[0, j] += v
            totals[1, j] += v * v
            runs[run, j] += v


@numba.njit(nogil=True, cache=True)
def partials_bf16(stored, starts, totals, runs):  # pragma: no cover - compiled
    """``totals`` (2, d) and ``runs`` filled from bfloat16 bit patterns; returns max |h|."""
    n, d = stored.shape
    decoded = np.empty(d, dtype=np.uint32)
    values = decoded.view(np.float32)
    run, following, top = -1, starts[0] if starts.shape[0] else n, 0
    for i in range(n):
        first = i == following
        if first:
            run += 1
            following = starts[run + 1] if run + 1 < starts.shape[0] else n
        for j in range(d):
            decoded[j] = np.uint32(stored[i, j]) << np.uint32(16)
            top = max(top, stored[i, j] & 0x7FFF)  # magnitude bits: their order is the values' order
        add_row(values, run, first, totals, runs)
    decoded[0] = np.uint32(top) << np.uint32(16)
    return np.float64(values[0])


@numba.njit(nogil=True, cache=True)
def partials_f32(stored, starts, totals, runs):  # pragma: no cover - compiled
    """``totals`` (2, d) and ``runs`` filled from float32 values; returns max |h|."""
    n, d = stored.shape
    run, following, absmax = -1, starts[0] if starts.shape[0] else n, np.float32(0)
    for i in range(n):
        first = i == following
        if first:
            run += 1
            following = starts[run + 1] if run + 1 < starts.shape[0] else n
        for j in range(d):
            absmax = max(absmax, abs(stored[i, j]))
        add_row(stored[i], run, first, totals, runs)
    return np.float64(absmax)
