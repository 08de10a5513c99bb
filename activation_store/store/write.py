"""Writing runs and lens heads into a store, chunk by chunk, resumably.

A run's small arrays (token ids, per-token and per-example coordinates) are
written whole when the run is created. ``hidden`` is then filled in blocks of
``chunk_tokens`` tokens — each block is exactly one chunk per layer, written by
one writer — and only after a block's chunks are all written does the group's
``progress`` attribute move forward. A killed run therefore never has a
committed half-written chunk: resuming rewrites from the last committed block.
A run group counts as a run only once its ``config_hash`` is set, which is
written last; a group killed while being created or replaced is made afresh.
Every chunk is written even when it equals the fill value, and ``hidden``'s fill
is NaN, so a chunk lost later reads as NaN (and ``actstore verify`` names it),
never as plausible zeros.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from ..errors import ConfigConflictError
from . import layout
from .arrays import CHECKSUM, WRITE_ALL, write_array
from .handle import Store, quiet_zarr
from .precision import storage_dtype
from .sites import SITES_KEY, SiteArray

PROGRESS_ATTR = "progress"
HIDDEN_FILL = {"bfloat16": 0x7FC0, "float32": float("nan")}  # NaN: what a never-written chunk reads as
# Test hook: with ACTSTORE_FAULT_AFTER_BLOCKS=N the process SIGKILLs itself after writing its N-th chunk
# (one chunk per layer) and before committing it, the worst moment to crash (tests/test_crash_resume.py).
FAULT_ENV = "ACTSTORE_FAULT_AFTER_BLOCKS"
# Lossless compression of ``hidden`` (``--compression``): name → the zarr codec applied before the CRC32C, which
# stays outermost so ``actstore verify`` still finds a flipped byte. Standard Zarr v3 codecs, readable by any
# Zarr client; Blosc's typesize is the stored item size (2 for bfloat16 bits). Measured in docs/scaling.md
# ("Compressing hidden"; benchmarks/compression.py), which chose the default.
COMPRESSIONS: dict[str, Any] = {
    "none": None,                                   # the default: raw chunks, the loader's direct read
    "zstd": zarr.codecs.ZstdCodec(level=1),         # ~20-40% smaller; ~0.8 GB/s encode, ~1.2-1.6 decode per core
    "blosc-zstd": zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),  # smallest; ~50 MB/s encode
    "blosc-lz4": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),  # fastest; ~1.3 / 2.5 GB/s
}
DEFAULT_COMPRESSION = "none"


def hidden_compressors(compression: str) -> list[Any]:
    """``hidden``'s bytes-to-bytes codecs for ``compression``: the compressor (if any), then the CRC32C."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    codec = COMPRESSIONS[compression]
    return [CHECKSUM] if codec is None else [codec, CHECKSUM]


@dataclass
class RunWriter:
    """Fills one run group's ``hidden`` array block by block."""

    group: zarr.Group
    hidden: zarr.Array
    chunk_tokens: int
    n_tokens: int
    blocks_written: int = 0

    @property
    def tokens_done(self) -> int:
        return int(self.group.attrs.get(PROGRESS_ATTR, {}).get("tokens_done", 0))

    @property
    def complete(self) -> bool:
        return self.tokens_done >= self.n_tokens

    def write_block(self, start: int, block: np.ndarray) -> None:
        """Write tokens [start, start + len) for all layers, then commit them."""
        stop = write_chunks(self.hidden, start, block)
        self.blocks_written += 1
        self.group.attrs[PROGRESS_ATTR] = {"tokens_done": stop, "complete": stop >= self.n_tokens}


_blocks_written = 0  # in this process, for the fault hook


def write_chunks(hidden: zarr.Array, start: int, block: np.ndarray) -> int:
    """Write tokens [start, start + len) of ``hidden`` for all layers — whole chunks only — and return the stop.

    Whole chunks are what lets many writers fill one array without a lock; in a sharded ``hidden`` the unit is
    the shard (all layers of a token block), since writers of parts of one shard overwrite each other's parts.
    This does not commit them."""
    if not hidden.config.write_empty_chunks:  # a reopened array checks every chunk for fill values before writing
        hidden = hidden.with_config(WRITE_ALL)  # (a full extra pass: ~1.5x the CPU of the write itself)
    chunk_tokens, n_tokens = int((hidden.shards or hidden.chunks)[1]), int(hidden.shape[1])
    stop = start + block.shape[1]
    if start % chunk_tokens or (stop % chunk_tokens and stop != n_tokens) or stop > n_tokens:
        raise ValueError(f"block {start}:{stop} is not aligned to chunks of {chunk_tokens} tokens")
    hidden[:, start:stop, :] = block
    fault_point()
    return stop


def fault_point() -> None:
    """Count one more block written and not yet committed; SIGKILL this process at the N-th (``FAULT_ENV``)."""
    global _blocks_written
    _blocks_written += 1
    if os.environ.get(FAULT_ENV) and _blocks_written >= int(os.environ[FAULT_ENV]):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


@dataclass(frozen=True)
class NewRun:
    """The run ``create_run`` makes: its shape, coordinates and attributes, and how ``hidden`` is stored.

    ``shard`` stores each token block of all layers as one object (Zarr's sharding codec; one chunk per layer
    inside it), so a run makes ``layers`` times fewer objects; benchmarks/store_layout.py measures both.
    ``keep`` (``Keep.attrs()``: layers, positions, unit) says what the run stores: with a layer subset
    ``hidden`` holds only those layers, labelled by the ``layer`` coordinate; with ``unit == "example"``
    it holds one state per example (layer × example × d_model) in ``stored_dtype``. It is recorded in the
    ``capture`` attribute. ``compression`` (a ``COMPRESSIONS`` name; None: the one ``attrs``' provenance records,
    else none) compresses ``hidden`` only; it is fixed at creation, so a resumed run keeps the codecs it began
    with."""

    n_layers: int
    d_model: int
    dtype: str
    chunk_tokens: int
    token_coords: dict[str, np.ndarray]
    example_coords: dict[str, np.ndarray]
    final_norm_applied: np.ndarray
    attrs: dict[str, Any]
    shard: bool = False
    keep: dict[str, Any] | None = None
    stored_dtype: str | None = None
    compression: str | None = None
    sites: tuple[SiteArray, ...] = ()  # sites besides the residual stream: one array each (store/sites.py)


def create_run(store: Store, path: str, run: NewRun) -> RunWriter:
    """Create (or replace) the run ``run`` describes at ``path``: its coordinates and an empty ``hidden``; its
    attrs come last."""
    keep = run.keep or {"layers": list(range(run.n_layers)), "positions": "all", "unit": "token"}
    layers = np.asarray(keep["layers"], dtype=np.int32)
    unit = keep["unit"]
    compression = run.compression
    if compression is None:
        compression = run.attrs.get("provenance", {}).get("compression", DEFAULT_COMPRESSION)
    compressors = hidden_compressors(compression)
    n_tokens = len(run.token_coords["token_id"]) if unit == "token" else len(run.example_coords["item"])
    root = store.root
    if run_attrs(store, path) is not None:  # unmark the old run first: a kill while deleting it leaves no "run"
        root[path].attrs.put({})
    group = root.create_group(path, overwrite=True)
    for name, values in run.token_coords.items():
        write_array(group, name, values, ("token",))
    for name, values in run.example_coords.items():
        write_array(group, name, values, ("example",))
    write_array(group, "example", np.arange(len(run.example_coords["item"]), dtype=np.int64), ("example",))
    write_array(group, "layer", layers, ("layer",))
    write_array(group, "final_norm_applied", np.asarray(run.final_norm_applied, dtype=bool)[layers], ("layer",))
    hidden = _create_hidden(group, run, (len(layers), n_tokens, run.d_model), unit, compressors)
    for site in run.sites:
        write_array(group, site.layer_dim, np.asarray(site.layers, dtype=np.int32), (site.layer_dim,))
        _create_states(group, site.name, run, (len(site.layers), n_tokens, *site.per_unit),
                       site.dims(unit, run.d_model), compressors, {"site": site.record()})
    if run.sites:
        keep = {**keep, SITES_KEY: [site.record() for site in run.sites]}
    group.attrs.update({**run.attrs, layout.CAPTURE_ATTR: keep,
                        PROGRESS_ATTR: {"tokens_done": 0, "complete": n_tokens == 0}})
    return RunWriter(group, hidden, run.chunk_tokens, n_tokens)


def _create_hidden(group: zarr.Group, run: NewRun, shape: tuple[int, int, int], unit: str,
                   compressors: Any) -> zarr.Array:
    """The run's empty ``hidden`` (layer × token or example × d_model), in its stored dtype and codecs."""
    return _create_states(group, layout.HIDDEN, run, shape, ("layer", unit, "d_model"), compressors, {})


def _create_states(group: zarr.Group, name: str, run: NewRun, shape: tuple[int, ...], dims: tuple[str, ...],
                   compressors: Any, attrs: dict[str, Any]) -> zarr.Array:
    """An empty states array (``hidden`` or a site's): layers × units × one unit's shape, one chunk per layer and
    block of units (a shard holding all layers of a block with ``run.shard``), in the stored dtype and codecs."""
    dtype = run.stored_dtype or run.dtype
    encoding = {layout.ENCODING_ATTR: layout.BF16_ENCODING} if dtype == "bfloat16" else {}
    per_unit = tuple(shape[2:])
    with quiet_zarr():
        return group.create_array(
            name, shape=shape, chunks=(1, run.chunk_tokens, *per_unit),
            shards=(shape[0], run.chunk_tokens, *per_unit) if run.shard else None, dtype=storage_dtype(dtype),
            fill_value=HIDDEN_FILL[dtype], dimension_names=dims,
            compressors=compressors, config=WRITE_ALL,
            attributes={**encoding, "dtype": dtype, "chunk_tokens": run.chunk_tokens, **attrs},
        )


def _remove_partials(group: zarr.Group) -> None:
    """Delete the temporary files a killed local write leaves (``*.partial``); the caller holds the run's lock."""
    store = group.store
    if isinstance(store, zarr.storage.LocalStore):
        for leftover in (Path(store.root) / group.path).rglob("*.partial"):
            leftover.unlink(missing_ok=True)


def run_attrs(store: Store, path: str) -> dict[str, Any] | None:
    """Attributes of the run at ``path``, or None when there is none (or it was never finished being created)."""
    node = store.group(path)
    if node is None or layout.HIDDEN not in node or "config_hash" not in node.attrs:
        return None
    return dict(node.attrs)


def _lens_rows(values: np.ndarray) -> int:
    """Rows per unembedding chunk: about 32 MB, spread evenly so the edge chunk is not mostly padding."""
    per_chunk = max(1, (32 << 20) // (values.shape[1] * values.itemsize))
    n_chunks = -(-values.shape[0] // per_chunk)
    return -(-values.shape[0] // n_chunks)


def write_lens(store: Store, model_path: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Store what the logit lens needs for one model, once; refuse a different model under the same name."""
    existing = store.group(model_path)
    if existing is not None and "model_checksum" in existing.attrs:  # set last: a complete head
        if existing.attrs.get("model_checksum") != attrs.get("model_checksum"):
            raise ConfigConflictError(
                f"group '{model_path}' holds a different model (checksum {existing.attrs.get('model_checksum')}); "
                f"use another --name or --overwrite"
            )
        return
    group = store.root.require_group(model_path)
    for name, values in arrays.items():
        dims = {layout.UNEMBEDDING: ("vocab", "d_model"), layout.VOCAB_TOKEN: ("vocab",),
                layout.LOGIT_BIAS: ("vocab",), layout.MEDIA_CODE: ("vocab",)}.get(name, ("d_model",))
        values = np.asarray(values)
        chunks = (_lens_rows(values), values.shape[1]) if values.ndim == 2 else None
        write_array(group, name, values, dims, chunks=chunks)
    group.attrs.update(attrs)


def consolidate_if_stale(store: Store, path: str) -> None:
    """Consolidate unless the consolidated metadata already shows the run at ``path`` as it is on disk.

    A run killed before a consolidation is missing, or unfinished, in the metadata readers open; the
    next run of it repairs that (readers take an unfinished run's progress from its own zarr.json)."""
    disk = dict(store.live_group(path).attrs)
    try:
        with quiet_zarr():
            seen = dict(zarr.open_group(store.zarr_store, mode="r", use_consolidated=True)[path].attrs)
    except (KeyError, ValueError):  # no consolidated metadata, or the run is not in it
        seen = {}
    finished = disk.get(PROGRESS_ATTR, {}).get("complete")
    if seen.get("config_hash") != disk.get("config_hash") or (finished and not seen.get(PROGRESS_ATTR, {}).get("complete")):
        store.consolidate()
