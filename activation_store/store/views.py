"""A finished run's pooled views and statistics, written beside ``hidden`` once every chunk is committed.

A full run gets each example's last-token state (``hidden_last``, bit-for-bit
the stored token) and its mean over its tokens (``hidden_mean``, float32, BOS
left out as the analyses do); every run gets, per layer over its stored states,
the mean and second moment per dimension and the max |h| (``stat_*``: the
centring and normalisation SAE trainers want). They are computed from the
committed ``hidden`` itself with the functions the analyses use when a run has
none (``activation_store.pooling``), so either way the numbers are the same; and
since they come from the finished array, out-of-order campaign tasks, resumes
and worker counts cannot change them. The ``views`` attribute is set last: a
run killed while they were written has none, and the next extract of it (or any
reader, meanwhile) falls back to ``hidden``. Costs one read of ``hidden``."""
from __future__ import annotations

import dask.array as da
import numpy as np

from .. import pooling
from . import layout
from .arrays import CHECKSUM, WRITE_ALL, write_array
from .handle import Store, quiet_zarr
from .precision import decode_bfloat16

VIEW_CHUNK_BYTES = 16 << 20


def decoded(array) -> da.Array:
    """A stored array as lazy float32, one dask chunk per zarr chunk (as ``open_run`` reads it)."""
    data = da.from_zarr(array)
    if array.attrs.get(layout.ENCODING_ATTR) == layout.BF16_ENCODING:
        data = data.map_blocks(decode_bfloat16, dtype=np.float32)
    return data


def spread_chunk(n: int, most: int) -> int:
    """The chunk length for ``n`` items with at most ``most`` per chunk, spread evenly: the edge chunk (which
    zarr stores whole) is as full as the others."""
    n = max(1, n)
    return -(-n // -(-n // max(1, most)))


def mean_owners(positions: np.ndarray, token_example: np.ndarray, n_examples: int, bos: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each token's example (−1 for a left-out BOS) and each example's count of averaged tokens."""
    owner = token_example.astype(np.int64)
    if bos:
        owner = np.where(positions == 0, -1, owner)
    return owner, np.bincount(owner[owner >= 0], minlength=n_examples)


def finish_run(store: Store, path: str) -> bool:
    """Write the views and statistics of the complete run at ``path`` unless it has them; True when written."""
    group = store.live_group(path)
    attrs = dict(group.attrs)
    if attrs.get(layout.VIEWS_ATTR) or not attrs.get("progress", {}).get("complete"):
        return False
    hidden = group[layout.HIDDEN]
    data = decoded(hidden)
    unit = (hidden.metadata.dimension_names or ("layer", "token"))[1]
    n_layers, _, d_model = hidden.shape
    written: dict[str, str] = {}
    if unit == "token" and "token_offset" in group:
        offsets, counts = group["token_offset"][...], group["token_count"][...]
        n_examples = len(offsets)
        # chunks hold every layer of a block of examples: the analyses that read a view (similarity, pooled
        # probes) take all layers, and one read of a chunk costs far less than one dask task per layer
        per_chunk = spread_chunk(n_examples, VIEW_CHUNK_BYTES // (n_layers * d_model * 4))
        encoding = {k: v for k, v in hidden.attrs.items() if k in (layout.ENCODING_ATTR, "dtype")}
        with quiet_zarr():
            last = group.create_array(layout.VIEWS["last"], shape=(n_layers, n_examples, d_model), dtype=hidden.dtype,
                                      chunks=(n_layers, per_chunk, d_model), fill_value=hidden.fill_value, overwrite=True,
                                      dimension_names=("layer", "example", "d_model"), compressors=[CHECKSUM],
                                      config=WRITE_ALL, attributes=encoding)
            mean = group.create_array(layout.VIEWS["mean"], shape=(n_layers, n_examples, d_model), dtype=np.float32,
                                      chunks=(n_layers, per_chunk, d_model), fill_value=float("nan"), overwrite=True,
                                      dimension_names=("layer", "example", "d_model"), compressors=[CHECKSUM],
                                      config=WRITE_ALL, attributes={"dtype": "float32"})
        owner, n_mean = mean_owners(group["position"][...], group["token_example"][...], n_examples,
                                    bool(attrs.get("config", {}).get("bos", False)))
        index = (offsets.astype(np.int64) + counts - 1)
        for lo in range(0, n_examples, per_chunk):  # one chunk of examples (all layers) in memory at a time
            hi = min(lo + per_chunk, n_examples)
            first, end = int(offsets[lo]), int(offsets[hi - 1] + counts[hi - 1])  # their tokens, contiguous
            last[:, lo:hi] = hidden.get_orthogonal_selection((slice(None), index[lo:hi], slice(None)))
            # each example's partial sums per token chunk are those of the whole run (its tokens all lie in
            # [first, end)), so the means are the bits ``mean_states`` gives over the whole ``hidden``
            mine = np.where((owner[first:end] >= lo) & (owner[first:end] < hi), owner[first:end] - lo, -1)
            mean[:, lo:hi] = pooling.mean_states(data[:, first:end], mine, n_mean[lo:hi]).compute()
        written.update(last=layout.VIEWS["last"], mean=layout.VIEWS["mean"])
    stats = pooling.moments(data)
    for name, key in zip(layout.STATS, ("mean", "second_moment", "abs_max")):
        write_array(group, name, stats[key], ("layer", "d_model") if stats[key].ndim == 2 else ("layer",))
    group.attrs[layout.VIEWS_ATTR] = {**written, "stats": list(layout.STATS), "stat_count": stats["count"],
                                      "over": f"every stored {unit}"}
    return True
