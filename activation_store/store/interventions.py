"""Recorded interventions in a store: ``/<model>/interventions/<dataset>/<vector>``.

One group per (dataset, vector) holds what running the model with the vector ×
each coefficient did, over a ``condition`` dimension (condition 0 is the baseline,
coefficient 0). It sits under the model, not the run, so a plain extraction that
replaces ``/<model>/<dataset>`` never deletes it. Arrays are written first and the
group's ``config_hash`` last: a group without it is no recorded run.

While a recording runs, each finished condition is written at once as a block
``<group>/partial/<condition>`` (its arrays, then its attributes with the
recording's config hash): a killed run resumes from the blocks whose hash
matches and recomputes only the missing conditions. The final write replaces
the group, blocks included."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..errors import ActstoreError
from . import layout
from .arrays import write_array
from .handle import Store
from .open import open_group
from .steering import INTERVENTIONS

COORDS = ("coefficient", "item", "variant", "text", "token_offset", "token_count", "token_id", "token_example",
          "position", "modality", "steered", "target_token", "target_id", "seed", "layer", "final_norm_applied",
          *layout.MEDIA_TOKEN_COORDS, *layout.MEDIA_EXAMPLE_COORDS)


def recorded_name(vector: str, site: str | None = None) -> str:
    """A recorded intervention's name: the vector's, with ``@<site>`` when it was steered at a sublayer's output."""
    return vector if site in (None, "resid_post") else f"{vector}@{site}"


def intervention_path(model: str, dataset: str, vector: str) -> str:
    return f"{layout.encode_name(model)}/{INTERVENTIONS}/{layout.encode_name(dataset)}/{layout.encode_name(vector)}"


def recorded_attrs(store: Store, path: str) -> dict[str, Any] | None:
    """Attributes of a finished recorded run at ``path``, or None."""
    node = store.group(path)
    if node is None or "config_hash" not in node.attrs:
        return None
    return dict(node.attrs)


def write_recorded(store: Store, path: str, arrays: dict[str, tuple[tuple[str, ...], np.ndarray]],
                   attrs: dict[str, Any]) -> None:
    """Replace the group at ``path`` with ``arrays`` (name → (dims, values)); attributes last."""
    root = store.root
    if path in root:
        root[path].attrs.put({})  # unmark first: a kill while replacing leaves no "finished" group
    group = root.create_group(path, overwrite=True)
    for name, (dims, values) in arrays.items():
        write_array(group, name, values, dims)
    group.attrs.update(attrs)


PARTIAL = "partial"


def read_partial(store: Store, path: str, config_hash: str) -> dict[int, dict[str, np.ndarray]]:
    """The finished condition blocks of an interrupted recording with this ``config_hash`` (condition → arrays).

    Read from the blocks' own metadata (a killed run never consolidated them); blocks of another
    configuration are ignored (and replaced as the new run writes its own)."""
    try:
        blocks = store.live_group(f"{path}/{PARTIAL}")
    except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return {}
    found = {}
    for key, group in blocks.groups():
        if group.attrs.get("config_hash") == config_hash and key.isdigit():
            found[int(key)] = {name: np.asarray(array[...]) for name, array in group.arrays()}
    return found


def _exists_live(store: Store, path: str) -> bool:
    try:
        store.live_group(path)
    except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return True


def write_partial(store: Store, path: str, config_hash: str, condition: int,
                  arrays: dict[str, tuple[tuple[str, ...], np.ndarray]]) -> None:
    """One finished condition's arrays as a block of the running recording at ``path``; attributes last."""
    root = store.root
    if path in root and "config_hash" in root[path].attrs:
        root[path].attrs.put({})  # a finished group being recomputed (--overwrite) is finished no more
    group = root.create_group(f"{path}/{PARTIAL}/{condition}", overwrite=True)
    for name, (dims, values) in arrays.items():
        write_array(group, name, values, dims)
    group.attrs.update({"config_hash": config_hash, "condition": int(condition)})


def clear_partial(store: Store, path: str) -> None:
    """Drop an interrupted recording's blocks (``--overwrite`` recomputes everything)."""
    if _exists_live(store, f"{path}/{PARTIAL}"):
        store.root.create_group(f"{path}/{PARTIAL}", overwrite=True)


def list_recorded(store: Store) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(model, dataset, vector, attrs)`` of every finished recorded run in the store."""
    found = []
    for model_key, model_group in sorted(store.root.groups()):
        if model_key in layout.RESERVED_ROOT_GROUPS:
            continue
        runs = model_group.get(INTERVENTIONS)
        if not isinstance(runs, zarr.Group) or layout.HIDDEN in runs:
            continue
        for dataset_key, dataset_group in sorted(runs.groups()):
            for vector_key, group in sorted(dataset_group.groups()):
                if "config_hash" in group.attrs:
                    found.append((layout.decode_name(model_key), layout.decode_name(dataset_key),
                                  layout.decode_name(vector_key), dict(group.attrs)))
    return found


def open_recorded(store: str | Store, model: str, dataset: str, vector: str,
                  storage_options: dict[str, Any] | None = None, site: str | None = None) -> xr.Dataset:
    """One recorded intervention run as a Dataset over (condition, example, …), lazily; ``site`` names one steered
    at a sublayer's output (``vector="v", site="mlp_out"`` is ``vector="v@mlp_out"``)."""
    store = Store.open(store, storage_options)
    vector = recorded_name(vector, site)
    path = intervention_path(model, dataset, vector)
    if recorded_attrs(store, path) is None:
        raise ActstoreError(f"no recorded intervention of vector {vector!r} on {model!r} / {dataset!r} in {store.url}; "
                            f"run `actstore extract --intervene {vector}` first")
    ds = open_group(store, path, f"recorded intervention {vector!r}")
    return ds.set_coords([name for name in COORDS if name in ds.variables])
