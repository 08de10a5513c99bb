"""Making steering vectors from a store: mean-state differences (ActAdd), unembedding rows, or a file.

``--from-states D:variant=en:item=good --minus D:variant=en:item=bad`` at layer l is
mean(last-token state at l over the first set) − mean(over the second), as in
ActAdd; ``--from-unembedding " start" --minus " end"`` is W_U[a] − W_U[b] from the
stored lens head. Nothing here needs the model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import open_lens, open_run
from ..store.steering import hook_description, write_vector
from .logit_lens import vocabulary_ids
from .selection import examples_of, last_tokens

SELECTOR_KEYS = ("variant", "item", "example")


def parse_selector(text: str) -> tuple[str, dict[str, Any]]:
    """``"D:variant=en:item=good"`` → ``("D", {"variant": "en", "item": "good"})``."""
    dataset, *parts = text.split(":")
    if not dataset:
        raise ActstoreError(f"selector {text!r} names no dataset; write DATASET:variant=en:item=good")
    filters: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in SELECTOR_KEYS:
            raise ActstoreError(f"selector {text!r}: expected key=value with key one of {', '.join(SELECTOR_KEYS)}, got {part!r}")
        if key == "example":
            try:
                value = int(value)
            except ValueError:
                raise ActstoreError(f"selector {text!r}: example must be an integer") from None
        filters[key] = value
    return dataset, filters


def mean_last_state(ds: xr.Dataset, layer: int, filters: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Mean over the selected examples of their last token's state at ``layer``, and how many there were."""
    examples = examples_of(ds, **filters)
    if not len(examples):
        raise ActstoreError(f"no example matches {filters}")
    states = last_tokens(ds, examples).sel(layer=layer)
    return states.astype(np.float64).mean("example").values, len(examples)


def check_layer(layer: int, n_layers: int) -> None:
    """Vectors go where a decoder layer's output is the stored state: layers 1 … L−1 (L is final-normed)."""
    last = n_layers - 1
    if not 1 <= layer <= last - 1:
        raise ActstoreError(f"layer {layer} is out of range for steering; use 1..{last - 1} (0 is the embeddings, "
                            f"{last} is after the final norm)")


def vector_from_states(store: str, model: str, layer: int, source: str, minus: str | None,
                       storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    vectors, info = [], {"method": "states", "source": source, "minus": minus, "pool": "last token of each example",
                         "statistic": "mean"}
    for role, selector in (("source", source), ("minus", minus)):
        if selector is None:
            continue
        dataset, filters = parse_selector(selector)
        ds = open_run(store, model, dataset, storage_options)
        if layer not in set(ds.layer.values.tolist()):
            raise ActstoreError(f"layer {layer} is out of range; run {dataset!r} has layers 0..{int(ds.layer.max())}")
        mean, count = mean_last_state(ds, layer, filters)
        vectors.append(mean)
        info[f"n_{role}"] = count
        info[f"{role}_dataset_checksum"] = ds.attrs.get("config", {}).get("dataset_checksum", "")
    vector = vectors[0] - vectors[1] if len(vectors) == 2 else vectors[0]
    return vector, info


def vector_from_unembedding(lens: xr.Dataset, source: str, minus: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    ids = vocabulary_ids(lens, [source] + ([minus] if minus is not None else []))
    rows = lens.unembedding.isel(vocab=ids).values.astype(np.float64)
    vector = rows[0] - rows[1] if minus is not None else rows[0]
    return vector, {"method": "unembedding", "source": source, "minus": minus, "token_ids": [int(i) for i in ids]}


def vector_from_file(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    if not Path(path).is_file():
        raise ActstoreError(f"vector file not found: {path}")
    try:
        vector = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ActstoreError(f"cannot read {path} as a .npy array ({str(exc).splitlines()[0]})") from None
    vector = np.squeeze(vector)
    if vector.ndim != 1 or vector.dtype.kind not in "fiu":
        raise ActstoreError(f"{path} holds an array of shape {np.shape(vector)} ({vector.dtype}); a steering vector is 1-D numbers")
    return vector.astype(np.float64), {"method": "file", "source": str(Path(path).name), "minus": None}


def define_vector(store: str, model: str, name: str, layer: int, *, from_states: str | None = None,
                  from_unembedding: str | None = None, from_file: str | None = None, minus: str | None = None,
                  coefficient: float = 1.0, overwrite: bool = False,
                  storage_options: dict[str, Any] | None = None) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Compute a steering vector from the store (or a file) and store it under the model; everything is checked first."""
    given = [s for s in (from_states, from_unembedding, from_file) if s is not None]
    if len(given) != 1:
        raise ActstoreError("give exactly one of --from-states, --from-unembedding, --from-file")
    if from_file is not None and minus is not None:
        raise ActstoreError("--minus goes with --from-states or --from-unembedding, not --from-file")
    if not np.isfinite(coefficient):
        raise ActstoreError(f"--coefficient must be a finite number, got {coefficient}")
    lens = open_lens(store, model, storage_options)
    d_model = int(lens.sizes["d_model"])
    n_layers = int(lens.attrs.get("n_layers", 0)) or None
    if n_layers is None:
        raise ActstoreError(f"the lens head of {model!r} does not record its layer count; re-extract with this actstore")
    check_layer(layer, n_layers)
    if from_states is not None:
        vector, info = vector_from_states(store, model, layer, from_states, minus, storage_options)
    elif from_unembedding is not None:
        vector, info = vector_from_unembedding(lens, from_unembedding, minus)
    else:
        vector, info = vector_from_file(from_file)
    if vector.shape != (d_model,):
        raise ActstoreError(f"the vector has {vector.shape[0]} dimensions but {model!r} has hidden size {d_model}")
    if not np.isfinite(vector).all():
        raise ActstoreError("the vector has non-finite values")
    attrs = {**info, "layer": int(layer), "hook": hook_description(layer), "d_model": d_model,
             "default_coefficient": float(coefficient), "norm": float(np.linalg.norm(vector)),
             "model_checksum": lens.attrs.get("model_checksum", "")}
    path = write_vector(store, model, name, vector.astype(np.float32), attrs, overwrite=overwrite,
                        storage_options=storage_options)
    return path, vector.astype(np.float32), attrs
