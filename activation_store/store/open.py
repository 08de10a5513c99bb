"""Reading a store as labelled, lazy xarray objects.

``open`` gives the whole store as an ``xarray.DataTree``; ``open_run`` one
extraction run and ``open_lens`` one model's logit-lens head as
``xarray.Dataset``. Everything stays dask-backed: nothing is read until computed.
bfloat16 hidden states are decoded to float32 chunk by chunk on access."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..errors import ActstoreError
from . import layout
from .location import missing_store, zarr_store
from .precision import decode_bfloat16

warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)

_COORDS = (*layout.TOKEN_COORDS, *layout.EXAMPLE_COORDS, *layout.LAYER_COORDS)


def _decode(ds: xr.Dataset) -> xr.Dataset:
    """Lazy bfloat16 decoding and coordinate roles for one node's dataset."""
    ds = ds.copy()
    for name, var in ds.data_vars.items():
        if var.attrs.get(layout.ENCODING_ATTR) == layout.BF16_ENCODING:
            data = var.data
            data = data.map_blocks(decode_bfloat16, dtype=np.float32) if hasattr(data, "map_blocks") else decode_bfloat16(np.asarray(data))
            attrs = {k: v for k, v in var.attrs.items() if k != layout.ENCODING_ATTR}
            ds[name] = var.copy(data=data).assign_attrs(attrs)
    for name, var in ds.variables.items():
        if var.dtype.kind == "T":  # numpy's StringDType trips many tools; plain Python strings do not
            ds[name] = var.astype(object)
    present = [name for name in _COORDS if name in ds.variables]
    return ds.set_coords(present)


def _complete_only(ds: xr.Dataset) -> xr.Dataset:
    """During a write, show only the examples whose tokens are all committed."""
    progress = ds.attrs.get("progress", {})
    if progress.get("complete", True) or "token_offset" not in ds.variables:
        return ds
    done = int(progress.get("tokens_done", 0))
    ends = (ds.token_offset + ds.token_count).values
    n_examples = int(np.searchsorted(ends, done, side="right"))
    n_tokens = int(ends[n_examples - 1]) if n_examples else 0
    return ds.isel(example=slice(0, n_examples), token=slice(0, n_tokens))


def _live_attrs(attrs: dict, url: str, storage_options: dict[str, Any] | None, path: str) -> dict:
    """A run unfinished in the consolidated metadata (refreshed only at a run's start and end) gets its
    ``progress`` from its own zarr.json, which the writer commits after every block: one more read, unfinished runs only."""
    progress = attrs.get("progress")
    if not progress or progress.get("complete", True):
        return attrs
    group = zarr.open_group(zarr_store(url, storage_options, read_only=True), path=path, mode="r", use_consolidated=False)
    live = dict(group.attrs)
    if live.get("config_hash") != attrs.get("config_hash"):  # replaced since: none of the new run is readable yet
        live = {"progress": {"tokens_done": 0, "complete": False}}
    return {**attrs, "progress": live.get("progress", progress)}


def _root(url: str, storage_options: dict[str, Any] | None):
    """The store object and its root group, format checked: one request over S3 (consolidated metadata)."""
    store = zarr_store(url, storage_options, read_only=True)
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except FileNotFoundError:
        raise missing_store(url, storage_options) from None
    except ValueError as exc:  # a damaged root zarr.json
        raise layout.unreadable(url, exc) from None
    layout.check_format(dict(root.attrs), url)
    return store, root


def _open_tree(url: str, storage_options: dict[str, Any] | None) -> xr.DataTree:
    store, _ = _root(url, storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_datatree(store, engine="zarr", chunks={}, zarr_format=3, consolidated=None)


def _open_node(url: str, storage_options: dict[str, Any] | None, path: str, what: str) -> xr.Dataset:
    """One group as a Dataset without opening the rest of the tree: a fixed number of requests."""
    store, root = _root(url, storage_options)
    try:
        node = root[path]
    except KeyError:
        node = None
    if not isinstance(node, zarr.Group):
        raise ActstoreError(f"{what} is not in {url}; `actstore ls {url}` lists what is")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_dataset(store, group=path, engine="zarr", chunks={}, zarr_format=3, consolidated=None)


def open(url: str, storage_options: dict[str, Any] | None = None) -> xr.DataTree:  # noqa: A001
    """The whole store: one node per model (its lens head) and per run (``hidden`` and coordinates)."""
    tree = _open_tree(url, storage_options)
    for node in tree.subtree:
        node.attrs = _live_attrs(dict(node.attrs), url, storage_options, node.path.strip("/"))
    return tree.map_over_datasets(lambda ds: _complete_only(_decode(ds)) if ds.data_vars else ds)


def open_run(url: str, model: str, dataset: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One extraction run: ``hidden`` (layer × token × d_model) with its coordinates."""
    ds = _open_node(url, storage_options, layout.run_path(model, dataset), f"model {model!r} / dataset {dataset!r}")
    if layout.HIDDEN not in ds:
        raise ActstoreError(f"model {model!r} / dataset {dataset!r} in {url} holds no activations")
    ds.attrs = _live_attrs(ds.attrs, url, storage_options, layout.run_path(model, dataset))
    return _complete_only(_decode(ds))


def open_lens(url: str, model: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One model's logit-lens head: ``unembedding``, final norm and vocabulary strings."""
    ds = _open_node(url, storage_options, layout.encode_name(model), f"model {model!r}")
    if layout.UNEMBEDDING not in ds:
        raise ActstoreError(f"model {model!r} in {url} has no logit-lens head")
    return _decode(ds)
