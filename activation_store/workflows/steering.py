"""Defining a steering vector end to end: open the store, compute the vector, check it, store it under the model.

The vector's arithmetic is in ``analyze.steering_vectors``; here are the steps that
open runs, read a .npy file and write to the store. Nothing here needs the model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..analyze.steering_vectors import check_layer, mean_last_state, parse_selector, vector_from_unembedding
from ..errors import ActstoreError
from ..store import open_lens, open_run
from ..store.steering import hook_description, write_vector


def vector_from_states(store: str, model: str, layer: int, source: str, minus: str | None,
                       storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Mean last-token state at ``layer`` of the ``source`` selector's examples, minus ``minus``'s, with provenance."""
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


def vector_from_file(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A 1-D .npy array of numbers, read without pickles."""
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
