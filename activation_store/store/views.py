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
reader, meanwhile) falls back to ``hidden``. Extraction computes them from the
pieces its writers left (store/pieces.py), reading ``hidden`` zero times; a run
without them (written before pieces existed) costs two reads of ``hidden``."""
from __future__ import annotations

import dask.array as da
import numpy as np

from .. import pooling
from . import layout, pieces
from .arrays import CHECKSUM, WRITE_ALL, write_array
from .handle import Store, quiet_zarr
from .precision import decode_bfloat16
from .sites import SiteArray, of_run

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
    """Write the views and statistics of the complete run at ``path`` unless it has them; True when written.

    From the pieces its writers left (store/pieces.py) when every chunk has one; else (a run written before
    pieces existed, or with one lost) from ``hidden`` itself. The same numbers either way."""
    group = store.live_group(path)
    attrs = dict(group.attrs)
    if attrs.get(layout.VIEWS_ATTR) or not attrs.get("progress", {}).get("complete"):
        return False
    hidden = group[layout.HIDDEN]
    unit = (hidden.metadata.dimension_names or ("layer", "token"))[1]
    n_layers, n_units, d_model = hidden.shape
    n_chunks = -(-n_units // int(hidden.chunks[1]))
    views = unit == "token" and "token_offset" in group
    from_pieces = n_chunks > 0 and pieces.present(store, path) >= set(range(n_chunks))
    out = _ViewArrays(group, hidden, bool(attrs.get("config", {}).get("bos", False))) if views else None
    site_arrays = of_run(attrs)
    found = _from_pieces(store, path, int(hidden.chunks[1]), n_units, out, site_arrays) if from_pieces else None
    if found is None:  # no pieces, or one unreadable
        found = _from_hidden(hidden, out), {site.name: pooling.moments(_flat(decoded(group[site.name])))
                                            for site in site_arrays}
    stats, per_site = found
    for name, key in zip(layout.STATS, ("mean", "second_moment", "abs_max")):
        write_array(group, name, stats[key], ("layer", "d_model") if stats[key].ndim == 2 else ("layer",))
    for site in site_arrays:  # ``<site>_stat_mean``…, over the site's own layer axis and shape
        dims = site.dims(unit, d_model)
        for name, key in zip(layout.STATS, ("mean", "second_moment", "abs_max")):
            values = per_site[site.name][key]
            values = values.reshape(len(site.layers), *site.per_unit) if values.ndim == 2 else values
            write_array(group, f"{site.name}_{name}", values, (dims[0], *dims[2:]) if values.ndim > 1 else dims[:1])
    written = {"last": layout.VIEWS["last"], "mean": layout.VIEWS["mean"]} if views else {}
    group.attrs[layout.VIEWS_ATTR] = {**written, "stats": list(layout.STATS), "stat_count": stats["count"],
                                      "over": f"every stored {unit}"}
    pieces.delete(store, path)  # what the writers left: no longer needed (also after the fallback)
    return True


class _ViewArrays:
    """A token run's ``hidden_last`` and ``hidden_mean``, created empty, filled one chunk of examples at a time."""

    def __init__(self, group, hidden, bos: bool):
        n_layers, _, d_model = hidden.shape
        self.offsets, self.counts = group["token_offset"][...], group["token_count"][...]
        self.n_examples = n_examples = len(self.offsets)
        # chunks hold every layer of a block of examples: the analyses that read a view (similarity, pooled
        # probes) take all layers, and one read of a chunk costs far less than one dask task per layer
        self.per_chunk = spread_chunk(n_examples, VIEW_CHUNK_BYTES // (n_layers * d_model * 4))
        encoding = {k: v for k, v in hidden.attrs.items() if k in (layout.ENCODING_ATTR, "dtype")}
        with quiet_zarr():
            self.last = group.create_array(layout.VIEWS["last"], shape=(n_layers, n_examples, d_model),
                                           dtype=hidden.dtype, chunks=(n_layers, self.per_chunk, d_model),
                                           fill_value=hidden.fill_value, overwrite=True,
                                           dimension_names=("layer", "example", "d_model"), compressors=[CHECKSUM],
                                           config=WRITE_ALL, attributes=encoding)
            self.mean = group.create_array(layout.VIEWS["mean"], shape=(n_layers, n_examples, d_model),
                                           dtype=np.float32, chunks=(n_layers, self.per_chunk, d_model),
                                           fill_value=float("nan"), overwrite=True,
                                           dimension_names=("layer", "example", "d_model"), compressors=[CHECKSUM],
                                           config=WRITE_ALL, attributes={"dtype": "float32"})
        self.owner, self.n_mean = mean_owners(group["position"][...], group["token_example"][...], n_examples, bos)

    def blocks(self) -> range:
        return range(0, self.n_examples, self.per_chunk)


def _from_hidden(hidden, out: _ViewArrays | None) -> dict:
    """Views and statistics by reading ``hidden`` back: once for the views, once for the moments."""
    data = decoded(hidden)
    if out is not None:
        offsets, counts, owner = out.offsets, out.counts, out.owner
        index = offsets.astype(np.int64) + counts - 1
        for lo in out.blocks():  # one chunk of examples (all layers) in memory at a time
            hi = min(lo + out.per_chunk, out.n_examples)
            first, end = int(offsets[lo]), int(offsets[hi - 1] + counts[hi - 1])  # their tokens, contiguous
            out.last[:, lo:hi] = hidden.get_orthogonal_selection((slice(None), index[lo:hi], slice(None)))
            # each example's partial sums per token chunk are those of the whole run (its tokens all lie in
            # [first, end)), so the means are the bits ``mean_states`` gives over the whole ``hidden``
            mine = np.where((owner[first:end] >= lo) & (owner[first:end] < hi), owner[first:end] - lo, -1)
            out.mean[:, lo:hi] = pooling.mean_states(data[:, first:end], mine, out.n_mean[lo:hi]).compute()
    return pooling.moments(data)


def _flat(data: da.Array) -> da.Array:
    """A site's states with one axis per unit (``z``'s heads × d_head flattened), as the moments take them."""
    return data.reshape(data.shape[0], data.shape[1], -1) if data.ndim > 3 else data


def _from_pieces(store: Store, path: str, chunk_tokens: int, n_units: int, out: _ViewArrays | None,
                 sites: tuple[SiteArray, ...] = ()) -> tuple[dict, dict[str, dict]] | None:
    """Views and statistics (``hidden``'s, and each site's) from the run's pieces, read once in chunk order;
    None if one is unreadable.

    Sums of examples that span chunks are added as ``pooling.mean_states`` adds its partials (``tree_sum``).
    After chunk k every example ending in it or before is whole, so view chunks are written as they fill."""
    moments: list[np.ndarray] = []
    site_moments: dict[str, list[np.ndarray]] = {}
    rows = _Rows(out) if out is not None else None
    carried: dict[int, list] = {}  # example -> its partials so far: (chunk, float64 sums of all layers)
    for chunk in range(-(-n_units // chunk_tokens)):  # one piece in memory at a time
        piece = pieces.read(store, path, chunk)
        if piece is None:
            return None
        moments.append(piece["moments"])
        for site in sites:
            key = f"{site.name}{pieces.SITE_SEPARATOR}moments"
            if key not in piece:
                return None
            site_moments.setdefault(site.name, []).append(piece[key])
        if rows is None:
            continue
        rows.put("mean", piece["inside"], piece["means"])
        rows.put("last", piece["ending"], piece["last"])
        stop = int(piece["span"][2])
        for i, example in enumerate(piece["edge"].tolist()):
            carried.setdefault(example, []).append((chunk, piece["edge_sums"][:, i]))
            if out.offsets[example] + out.counts[example] <= stop:  # its last chunk: the sum is whole
                # added as ``mean_states`` adds it over the tokens of the example's view chunk
                first = int(out.offsets[example // out.per_chunk * out.per_chunk]) // chunk_tokens
                total = pooling.tree_sum([(k - first, part) for k, part in carried.pop(example)])
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = (total / out.n_mean[example]).astype(np.float32)
                rows.put("mean", np.array([example]), mean[:, None])
        rows.flush(int(np.searchsorted(out.offsets + out.counts, stop, side="right")))
    if rows is not None:
        rows.flush(out.n_examples)
    return (pooling.reduce_moments(np.stack(moments, axis=1), n_units),
            {name: pooling.reduce_moments(np.stack(parts, axis=1), n_units) for name, parts in site_moments.items()})


class _Rows:
    """Whole examples' view rows, held from the first unwritten view chunk on, written a view chunk at a time."""

    def __init__(self, out: _ViewArrays):
        self.out, self.lo = out, 0
        n_layers, _, d_model = out.last.shape
        self.rows = {"last": np.empty((n_layers, 0, d_model), out.last.dtype),
                     "mean": np.empty((n_layers, 0, d_model), np.float32)}

    def put(self, kind: str, examples: np.ndarray, values: np.ndarray) -> None:
        if not len(examples):
            return
        held = self.rows[kind]
        need = int(examples.max()) + 1 - self.lo
        if need > held.shape[1]:
            grown = np.empty((held.shape[0], max(need, 2 * held.shape[1]), held.shape[2]), held.dtype)
            grown[:, :held.shape[1]] = held
            self.rows[kind] = held = grown
        held[:, examples - self.lo] = values

    def flush(self, whole: int) -> None:
        """Write every view chunk all of whose examples are below ``whole`` (all of them at the end)."""
        size, n = self.out.per_chunk, self.out.n_examples
        while self.lo < n and (min(self.lo + size, n) <= whole):
            hi = min(self.lo + size, n)
            self.out.last[:, self.lo:hi] = self.rows["last"][:, :hi - self.lo]
            self.out.mean[:, self.lo:hi] = self.rows["mean"][:, :hi - self.lo]
            self.rows = {kind: held[:, hi - self.lo:] for kind, held in self.rows.items()}
            self.lo = hi
