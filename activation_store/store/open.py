"""Reading a store as labelled, lazy xarray objects.

``open`` gives the whole store as an ``xarray.DataTree``; ``open_run`` one
extraction run and ``open_lens`` one model's logit-lens head as
``xarray.Dataset``. The big arrays stay dask-backed (nothing is read until
computed; bfloat16 is decoded to float32 chunk by chunk); the small coordinates
of a run are loaded on open, so plain-xarray selection (``.where``, ``.isin``,
``groupby``) works on them directly. Tokens carry their example's ``variant``
and ``item`` as ``token_variant`` / ``token_item``."""
from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from ..errors import ActstoreError
from . import layout
from .arrays import strings_as_objects
from .commits import live_attrs
from .handle import Store, quiet_zarr
from .precision import decode_bfloat16
from .sites import of_run, on_run_layers

_COORDS = (*layout.TOKEN_COORDS, *layout.EXAMPLE_COORDS, *layout.LAYER_COORDS, *layout.MEDIA_TOKEN_COORDS,
           *layout.MEDIA_EXAMPLE_COORDS)


def _decode(ds: xr.Dataset) -> xr.Dataset:
    """Lazy bfloat16 decoding, plain strings and coordinate roles for one node's dataset."""
    ds = strings_as_objects(ds)
    for name, var in ds.data_vars.items():
        if var.attrs.get(layout.ENCODING_ATTR) == layout.BF16_ENCODING:
            data = var.data
            data = data.map_blocks(decode_bfloat16, dtype=np.float32) if hasattr(data, "map_blocks") else decode_bfloat16(np.asarray(data))
            attrs = {k: v for k, v in var.attrs.items() if k != layout.ENCODING_ATTR}
            ds[name] = var.copy(data=data).assign_attrs(attrs)
    return ds.set_coords([name for name in _COORDS if name in ds.variables])


def _labelled(ds: xr.Dataset) -> xr.Dataset:
    """A run with its coordinates in memory and each token labelled with its example's variant and item."""
    names = list(ds.coords)
    loaded = dask.compute(*(ds[name].variable for name in names))  # concurrently: one round trip over S3, not one each
    ds = ds.assign_coords(dict(zip(names, loaded)))
    if "token_example" in ds.coords and "variant" in ds.coords:
        owner = ds.token_example.values
        ds = ds.assign_coords(token_variant=("token", ds.variant.values[owner] if owner.size else ds.variant.values[:0]),
                              token_item=("token", ds.item.values[owner] if owner.size else ds.item.values[:0]))
    return ds


def _complete_only(ds: xr.Dataset) -> xr.Dataset:
    """During a write, show only the examples whose tokens are all committed."""
    progress = ds.attrs.get("progress", {})
    if progress.get("complete", True) or "token_offset" not in ds.variables:
        return ds
    done = int(progress.get("tokens_done", 0))  # in the stored unit: tokens, or examples in a per-example run
    ends = (ds.token_offset + ds.token_count).values
    if ds.attrs.get(layout.CAPTURE_ATTR, {}).get("unit", "token") == "example":
        n_examples = min(done, len(ends))
    else:
        n_examples = int(np.searchsorted(ends, done, side="right"))
    n_tokens = int(ends[n_examples - 1]) if n_examples else 0
    return ds.isel(example=slice(0, n_examples), token=slice(0, n_tokens))


def _run_view(store: Store, ds: xr.Dataset, path: str) -> xr.Dataset:
    ds.attrs = live_attrs(store, dict(ds.attrs), path)
    return _labelled(_complete_only(on_run_layers(_decode(ds), of_run(ds.attrs))))


def _is_legacy_result(path: str, runs: set[str]) -> bool:
    """Results the first landing saved inside a run group (``/<model>/<dataset>/results/…``): their own token
    dimension does not align with the run's, so the tree leaves them out (``actstore analyze`` saves anew under ``/results``)."""
    parts = path.strip("/").split("/")
    return len(parts) >= 3 and parts[2] == "results" and "/".join(parts[:2]) in runs


def _open_group(store: Store, path: str) -> xr.Dataset:
    with quiet_zarr():
        return xr.open_dataset(store.zarr_store, group=path, engine="zarr", chunks={}, zarr_format=3, consolidated=None)


def _node(store: Store, path: str, what: str) -> xr.Dataset:
    """One group as a Dataset without opening the rest of the tree: a fixed number of requests."""
    if store.group(path) is None:
        raise ActstoreError(f"{what} is not in {store.url}; `actstore ls {store.url}` lists what is")
    return _open_group(store, path)


def open(store: str | Store, storage_options: dict[str, Any] | None = None) -> xr.DataTree:  # noqa: A001
    """The whole store: one node per model (its lens head), per run (``hidden`` and coordinates), and saved results."""
    store = Store.open(store, storage_options)
    with quiet_zarr():
        groups = xr.open_groups(store.zarr_store, engine="zarr", chunks={}, zarr_format=3, consolidated=None)
    runs = {path.strip("/") for path, ds in groups.items() if layout.HIDDEN in ds.variables}
    nodes = {}
    for path, ds in groups.items():
        if _is_legacy_result(path, runs):
            continue
        nodes[path] = _run_view(store, ds, path.strip("/")) if path.strip("/") in runs else _decode(ds)
    return xr.DataTree.from_dict(nodes)


def open_run(store: str | Store, model: str, dataset: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One extraction run: ``hidden`` (the residual stream, layer × token × d_model), every other site it
    captured (``mlp_out``…, on the same ``layer``), with its coordinates."""
    store = Store.open(store, storage_options)
    path = layout.run_path(model, dataset)
    ds = _node(store, path, f"model {model!r} / dataset {dataset!r}")
    if layout.HIDDEN not in ds:
        raise ActstoreError(f"model {model!r} / dataset {dataset!r} in {store.url} holds no activations")
    return _run_view(store, ds, path)


def open_lens(store: str | Store, model: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One model's logit-lens head: ``unembedding``, final norm and vocabulary strings."""
    store = Store.open(store, storage_options)
    ds = _node(store, layout.encode_name(model), f"model {model!r}")
    if layout.UNEMBEDDING not in ds:
        raise ActstoreError(f"model {model!r} in {store.url} has no logit-lens head")
    return _decode(ds)


def open_group(store: str | Store, path: str, what: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Any other group (a recorded intervention, a saved result) as a decoded Dataset."""
    store = Store.open(store, storage_options)
    return _decode(_node(store, path, what))
