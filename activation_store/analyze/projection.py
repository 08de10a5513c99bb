"""The vocabulary projection in one pass: logits are made and reduced block by block.

Every (layer chunk × token chunk) of normed states meets every vocab chunk of
the unembedding in one task, which reduces its logits block at once to a few
numbers per state: the block's max and Σexp (an online log-sum-exp), its top-k,
the count of logits above each target's logit (for ranks) and Σexp·p(language).
A second, tiny step merges the vocab chunks. So logits for the whole vocabulary
(262,144 for Gemma) never exist for more than one block per worker thread, and
memory is bounded by chunk size whatever the store's size."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import dask
import dask.array as da
import dask.threaded
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from ..store import layout
from .lens import lens_input

ROWS = 1024  # states per block: enough rows for an efficient GEMM, logits block ≈ ROWS × vocab chunk × 4 bytes


def state_chunks(shape: tuple[int, ...], rows: int = ROWS) -> tuple[int, ...]:
    """Chunk sizes for the state dims so a block holds about ``rows`` states: whole last dims, then
    as many of the earlier ones as fit (e.g. all 18 layers × 56 tokens rather than one layer × 512 tokens),
    spread evenly so the edge block is not a sliver."""
    sizes = []
    room = rows
    for size in reversed(shape):
        size = max(size, 1)
        fit = max(1, min(size, room))
        n_chunks = -(-size // fit)
        sizes.append(-(-size // n_chunks))
        room = max(1, room // sizes[-1])
    return tuple(reversed(sizes))


@dataclass
class Projection:
    """Per hidden state (dims ``dims``): log-normaliser, top-k, target ranks, language mass."""

    dims: tuple[str, ...]
    log_normaliser: np.ndarray
    top_logit: np.ndarray
    top_id: np.ndarray
    target_rank: np.ndarray | None
    language_mass: np.ndarray | None


@dataclass(frozen=True, eq=False)
class _Head:
    """What every block shares: ``k`` winners kept, the logit soft-cap, the logit bias and the media-code mask."""

    k: int
    cap: float | None
    bias: np.ndarray | None
    masked: np.ndarray | None


def _block(h, w, vocab_ids, target_logit, target_id, table, *, head: _Head):
    """Partial reductions of one (states × vocab chunk) logits block, packed along a last axis.

    All the block's states go through one GEMM (a batched matmul per layer would run many small, slow
    ones). The top-k comes first and gives the row maxima; the logits are then turned into exp(logit −
    max) in place, with the k winners (which top-k overwrote) added back from their kept values: one
    block-sized array, and two fewer passes over it than max, subtract-into-a-copy, exp."""
    k, cap, bias, masked = head.k, head.cap, head.bias, head.masked
    shape = h.shape[:-1]
    scores = h.reshape(-1, h.shape[-1]) @ w.T                           # (states, vocab chunk)
    if bias is not None:
        scores += bias[vocab_ids]
    if cap:
        scores /= cap
        np.tanh(scores, out=scores)
        scores *= cap
    if masked is not None:                                              # media codes: probability 0, never top-k
        scores[:, masked[vocab_ids]] = -np.inf
    if target_logit is not None:
        above = _above(scores, vocab_ids, target_logit.reshape(-1), target_id.reshape(-1))
    else:
        above = np.zeros((scores.shape[0], 1))
    top_logit, top_index = _top_k(scores, k)                            # winners now −inf in ``scores``
    peak = top_logit[:, :1]
    shift = np.where(np.isfinite(peak), peak, 0.0)                      # a wholly masked chunk adds exp(−inf) = 0
    scores -= shift
    np.exp(scores, out=scores)
    top_weight = np.exp(top_logit - shift)                              # −inf padding → 0
    total = scores.sum(axis=-1, keepdims=True, dtype=np.float64) + top_weight.sum(axis=-1, keepdims=True)
    parts = [peak, total, above, top_logit, vocab_ids[top_index].astype(np.float64)]
    if table is not None:
        parts.append(scores @ table + np.einsum("rk,rkg->rg", top_weight, table[top_index]))
    packed = np.concatenate([p.astype(np.float64) for p in parts], axis=-1)
    return packed.reshape(*shape, 1, packed.shape[-1])


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k along the last axis by k rounds of argmax (for small k far cheaper than argpartition);
    overwrites the winners in ``scores``. A chunk with fewer than k entries pads with −inf."""
    rows = scores.reshape(-1, scores.shape[-1])
    values = np.full((rows.shape[0], k), -np.inf)
    index = np.zeros((rows.shape[0], k), dtype=np.int64)
    everyone = np.arange(rows.shape[0])
    for i in range(min(k, rows.shape[1])):
        index[:, i] = rows.argmax(axis=-1)
        values[:, i] = rows[everyone, index[:, i]]
        rows[everyone, index[:, i]] = -np.inf
    return values.reshape(*scores.shape[:-1], k), index.reshape(*scores.shape[:-1], k)


def _above(scores, vocab_ids, target_logit, target_id):
    """How many other tokens score above the target (the target itself never counts)."""
    above = (scores > target_logit[..., None]) & (vocab_ids != target_id[..., None])
    return above.sum(axis=-1, keepdims=True)


def _merge(partials, *, k, n_lang):
    """Merge the vocab-chunk axis (-2) of packed partials into final per-state values."""
    peak = partials[..., 0].max(axis=-1, keepdims=True)
    scale = np.exp(partials[..., 0] - peak)                            # (..., chunks)
    total = (partials[..., 1] * scale).sum(axis=-1)
    normaliser = peak[..., 0] + np.log(total)
    rank = partials[..., 2].sum(axis=-1)
    values = partials[..., 3:3 + k].reshape(*partials.shape[:-2], -1)
    ids = partials[..., 3 + k:3 + 2 * k].reshape(*partials.shape[:-2], -1)
    order = np.argsort(-values, axis=-1, kind="stable")[..., :k]
    out = [normaliser[..., None], rank[..., None], np.take_along_axis(values, order, -1), np.take_along_axis(ids, order, -1)]
    if n_lang:
        mass = (partials[..., 3 + 2 * k:] * scale[..., None]).sum(axis=-2) / total[..., None]
        out.append(mass)
    return np.concatenate(out, axis=-1)


def _one_blas_thread_per_task(collection) -> contextlib.AbstractContextManager:
    """BLAS on one thread while dask's local threads run the blocks: each task's GEMM then has a core to
    itself, instead of every task's BLAS spreading over all cores at once (cores × cores threads, which
    measured ~10% slower). Other schedulers run tasks elsewhere, or one at a time: left alone."""
    if dask.base.get_scheduler(collections=[collection]) is dask.threaded.get:
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def project(hidden: xr.DataArray, lens: xr.Dataset, k: int = 5, target_logit: xr.DataArray | None = None,
            target_id: xr.DataArray | None = None, table: xr.DataArray | None = None, mode: str = "normed") -> Projection:
    """Run the one-pass projection of ``hidden`` (…, d_model) through ``lens`` (``mode``: normed or raw); computes."""
    normed = lens_input(hidden, lens, mode).astype(np.float32).transpose(..., "d_model")
    normed = normed.chunk(dict(zip(normed.dims, (*state_chunks(normed.shape[:-1]), -1))))
    h = normed.data if isinstance(normed.data, da.Array) else da.from_array(normed.data)
    w = lens[layout.UNEMBEDDING].data
    w = w if isinstance(w, da.Array) else da.from_array(w, chunks=(16384, -1))
    vocab_ids = da.arange(w.shape[0], chunks=(w.chunks[0],))
    bias = lens[layout.LOGIT_BIAS].values if layout.LOGIT_BIAS in lens else None
    cap = lens.attrs.get("final_logit_softcapping")
    masked = lens[layout.MEDIA_CODE].values.astype(bool) if layout.MEDIA_CODE in lens else None
    n_lang = 0 if table is None else table.sizes["language"]
    state = "".join(chr(ord("a") + i) for i in range(h.ndim - 1))      # one index letter per state dim
    args = [h, state + "z", w, "vz", vocab_ids, "v"]
    for per_state in (target_logit, target_id):
        if target_logit is None:
            args += [None, None]
            continue
        values = per_state.broadcast_like(normed.isel(d_model=0)).transpose(*normed.dims[:-1]).values
        args += [da.from_array(values, chunks=h.chunks[:-1]), state]
    if table is not None:
        args += [da.from_array(table.values.astype(np.float32), chunks=(w.chunks[0], -1)), "vg"]
    else:
        args += [None, None]
    width = 3 + 2 * k + n_lang
    with warnings.catch_warnings():  # more chunks is the point: one task per (states × vocab chunk) block
        warnings.simplefilter("ignore", da.PerformanceWarning)
        partial = da.blockwise(_block, state + "vf", *args, new_axes={"f": width}, adjust_chunks={"v": 1},
                               concatenate=True, dtype=np.float64, head=_Head(k, cap, bias, masked),
                               meta=np.empty((0,) * (h.ndim + 1)))
    merged = partial.rechunk({h.ndim - 1: -1}).map_blocks(
        _merge, k=k, n_lang=n_lang, drop_axis=h.ndim - 1, chunks=(*h.chunks[:-1], (2 + 2 * k + n_lang,)), dtype=np.float64)
    with _one_blas_thread_per_task(merged):
        (result,) = dask.compute(merged)
    return Projection(
        dims=tuple(normed.dims[:-1]),
        log_normaliser=result[..., 0],
        top_logit=result[..., 2:2 + k],
        top_id=result[..., 2 + k:2 + 2 * k].astype(np.int64),
        target_rank=result[..., 1].astype(np.int64) if target_logit is not None else None,
        language_mass=result[..., 2 + 2 * k:] if n_lang else None,
    )
