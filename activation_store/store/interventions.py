"""Recorded interventions in a store: ``/<model>/interventions/<dataset>/<vector>``.

One group per (dataset, vector) holds what running the model with the vector ×
each coefficient did, over a ``condition`` dimension (condition 0 is the baseline,
coefficient 0). It sits under the model, not the run, so a plain extraction that
replaces ``/<model>/<dataset>`` never deletes it. Arrays are written first and the
group's ``config_hash`` last: a group without it is no recorded run."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..errors import ActstoreError
from . import layout
from .location import zarr_store
from .steering import INTERVENTIONS
from .write import CHECKSUM, WRITE_ALL

COORDS = ("coefficient", "item", "variant", "text", "token_offset", "token_count", "token_id", "token_example",
          "position", "target_token", "target_id", "seed", "layer", "final_norm_applied")


def intervention_path(model: str, dataset: str, vector: str) -> str:
    return f"{layout.encode_name(model)}/{INTERVENTIONS}/{layout.encode_name(dataset)}/{layout.encode_name(vector)}"


def recorded_attrs(root: zarr.Group, path: str) -> dict[str, Any] | None:
    """Attributes of a finished recorded run at ``path``, or None."""
    try:
        node = root[path]
    except KeyError:
        return None
    if not isinstance(node, zarr.Group) or "config_hash" not in node.attrs:
        return None
    return dict(node.attrs)


def write_recorded(root: zarr.Group, path: str, arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                   attrs: dict[str, Any]) -> None:
    """Replace the group at ``path`` with ``arrays`` (name → (dims, values)); attributes last."""
    if path in root:
        root[path].attrs.put({})  # unmark first: a kill while replacing leaves no "finished" group
    group = root.create_group(path, overwrite=True)
    for name, (dims, values) in arrays.items():
        values = np.asarray(values)
        dtype, fill = (str, "") if values.dtype.kind in "UTO" else (values.dtype, 0)
        array = group.create_array(name, shape=values.shape, dtype=dtype, fill_value=fill, dimension_names=dims,
                                   compressors=[CHECKSUM], overwrite=True, config=WRITE_ALL)
        if values.size:
            array[...] = values
    group.attrs.update(attrs)


def list_recorded(root: zarr.Group) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(model, dataset, vector, attrs)`` of every finished recorded run in the store."""
    found = []
    for model_key, model_group in sorted(root.groups()):
        runs = model_group.get(INTERVENTIONS)
        if not isinstance(runs, zarr.Group) or layout.HIDDEN in runs:
            continue
        for dataset_key, dataset_group in sorted(runs.groups()):
            for vector_key, group in sorted(dataset_group.groups()):
                if "config_hash" in group.attrs:
                    found.append((layout.decode_name(model_key), layout.decode_name(dataset_key),
                                  layout.decode_name(vector_key), dict(group.attrs)))
    return found


def open_recorded(url: str, model: str, dataset: str, vector: str,
                  storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One recorded intervention run as a Dataset over (condition, example, …), lazily."""
    store = zarr_store(url, storage_options, read_only=True)
    path = intervention_path(model, dataset, vector)
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except FileNotFoundError:
        raise ActstoreError(f"no actstore store at {url}") from None
    layout.check_format(dict(root.attrs), url)
    if recorded_attrs(root, path) is None:
        raise ActstoreError(f"no recorded intervention of vector {vector!r} on {model!r} / {dataset!r} in {url}; "
                            f"run `actstore extract --intervene {vector}` first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = xr.open_dataset(store, group=path, engine="zarr", chunks={}, zarr_format=3, consolidated=None)
    for name, var in ds.variables.items():
        if var.dtype.kind == "T":
            ds[name] = var.astype(object)
    return ds.set_coords([name for name in COORDS if name in ds.variables])
