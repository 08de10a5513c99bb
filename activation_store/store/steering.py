"""Steering vectors as data: one group per vector under its model, ``/<model>/steering/<name>``.

A vector is a ``vector`` (d_model) float32 array; its attributes say where it is
added (``layer`` l: the output of decoder layer l − 1, which is ``hidden_states[l]``,
the residual stream after block l), its default coefficient and how it was made.
Vectors live under the model, not a run, so replacing a run never deletes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..errors import ActstoreError
from . import layout
from .arrays import write_array
from .handle import Store

STEERING, INTERVENTIONS, RESERVED = layout.STEERING, layout.INTERVENTIONS, layout.RESERVED_GROUPS
VECTOR = "vector"


@dataclass
class SteeringVector:
    name: str
    vector: np.ndarray
    attrs: dict[str, Any]

    @property
    def layer(self) -> int:
        return int(self.attrs["layer"])


def vector_path(model: str, name: str) -> str:
    return f"{layout.encode_name(model)}/{STEERING}/{layout.encode_name(name)}"


def hook_description(layer: int) -> str:
    """Exactly where a vector at ``layer`` is added, in words."""
    return (f"added to the output of decoder layer {layer - 1} (0-based), i.e. to hidden_states[{layer}], "
            f"the residual stream after block {layer}")


def check_reserved(model_group: zarr.Group) -> None:
    """Refuse a store where a run took a reserved group name (a dataset called 'steering' or 'interventions')."""
    for name in RESERVED:
        node = model_group.get(name)
        if isinstance(node, zarr.Group) and layout.HIDDEN in node:
            raise ActstoreError(f"a run named {name!r} occupies the group steering data needs; rename that dataset")


def write_vector(store: str | Store, model: str, name: str, vector: np.ndarray, attrs: dict[str, Any], *,
                 overwrite: bool = False, storage_options: dict[str, Any] | None = None) -> str:
    """Store one steering vector (refusing to replace an existing one unless ``overwrite``); returns its path."""
    store = Store.open(store, storage_options, mode="r+")
    root = store.root
    model_group = store.group(layout.encode_name(model))
    if model_group is None:
        raise ActstoreError(f"model {model!r} is not in {store.url}; run `actstore extract` with it first")
    check_reserved(model_group)
    path = vector_path(model, name)
    if path in root and not overwrite:
        raise ActstoreError(f"steering vector {name!r} already exists for {model}; pass --overwrite to replace it")
    group = root.create_group(path, overwrite=True)
    write_array(group, VECTOR, np.asarray(vector, dtype=np.float32), ("d_model",))
    group.attrs.update({**attrs, "name": name})  # attributes last: a group without them is no vector
    store.consolidate()
    return path


def _vector_group(store: Store, model: str, name: str) -> zarr.Group | None:
    node = store.group(vector_path(model, name))
    return node if node is not None and VECTOR in node and "layer" in node.attrs else None


def list_vectors(store: Store, model: str) -> list[str]:
    """Names of the complete steering vectors of ``model``, sorted."""
    group = store.group(f"{layout.encode_name(model)}/{STEERING}")
    if group is None:
        return []
    return sorted(layout.decode_name(key) for key, _ in group.groups()
                  if _vector_group(store, model, layout.decode_name(key)) is not None)


def read_vector(store: Store, model: str, name: str) -> SteeringVector:
    group = _vector_group(store, model, name)
    if group is None:
        known = list_vectors(store, model)
        raise ActstoreError(f"no steering vector {name!r} for model {model!r} in {store.url}; "
                            + (f"it has {', '.join(known)}" if known else "define one with `actstore steering define`"))
    return SteeringVector(name, np.asarray(group[VECTOR][...], dtype=np.float32), dict(group.attrs))

