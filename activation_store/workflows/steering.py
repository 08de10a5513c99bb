"""Defining a steering vector end to end: open the store, compute the vector, check it, store it under the model.

The vector's arithmetic is in ``analyze.steering_vectors``; here are the steps that
open runs, read a .npy file and write to the store. Nothing here needs the model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analyze.steering_vectors import check_layer, mean_last_state, parse_selector, random_like, vector_from_unembedding
from ..errors import ActstoreError
from ..store import Store, open_lens, open_run
from ..store.steering import hook_description, read_vector, write_vector


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


def vector_like(store: str, model: str, like: str, seed: int,
                storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, int, dict[str, Any]]:
    """A random control for stored vector ``like``: same norm, random direction (seeded), and ``like``'s layer."""
    original = read_vector(Store.open(store, storage_options), model, like)
    vector = random_like(original.vector.astype(np.float64), seed)
    return vector, original.layer, {"method": "random", "source": like, "minus": None, "seed": int(seed),
                                    "like_norm": float(np.linalg.norm(original.vector))}


@dataclass(frozen=True)
class VectorSource:
    """Where a steering vector comes from: exactly one of stored states (a selector), an unembedding row (a
    token), a .npy file, or a random control of a stored vector (with its ``seed``); ``minus`` subtracts a
    second selector's states (or token's row) from the first."""

    from_states: str | None = None
    from_unembedding: str | None = None
    from_file: str | None = None
    minus: str | None = None
    random_like: str | None = None
    seed: int | None = None

    def check(self) -> None:
        given = [s for s in (self.from_states, self.from_unembedding, self.from_file, self.random_like) if s is not None]
        if len(given) != 1:
            raise ActstoreError("give exactly one of --from-states, --from-unembedding, --from-file, --random-like")
        if self.from_file is not None and self.minus is not None:
            raise ActstoreError("--minus goes with --from-states or --from-unembedding, not --from-file")
        if self.random_like is not None and (self.minus is not None or self.seed is None):
            raise ActstoreError("--random-like NAME takes --seed S and no --minus")
        if self.random_like is None and self.seed is not None:
            raise ActstoreError("--seed goes with --random-like NAME")


def define_vector(store: str, model: str, name: str, layer: int | None, source: VectorSource | None = None, *,
                  coefficient: float = 1.0, overwrite: bool = False, storage_options: dict[str, Any] | None = None,
                  **source_keywords: Any) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Compute a steering vector from the store (or a file, or as a random control of a stored one) and store it
    under the model; everything is checked first. Where it comes from is ``source``, or ``VectorSource``'s
    fields by keyword (``from_states="D:variant=en"``, ``minus=...``)."""
    if source is not None and source_keywords:
        raise TypeError("define_vector takes a source or its keywords, not both")
    source = source if source is not None else VectorSource(**source_keywords)
    source.check()
    like = None
    if source.random_like is not None:
        like = vector_like(store, model, source.random_like, source.seed, storage_options)
        if layer is not None and layer != like[1]:
            raise ActstoreError(f"--layer {layer}: a random control sits at its vector's layer ({like[1]}); omit --layer")
        layer = like[1]
    if layer is None:
        raise ActstoreError("--layer is required (except with --random-like)")
    if not np.isfinite(coefficient):
        raise ActstoreError(f"--coefficient must be a finite number, got {coefficient}")
    lens = open_lens(store, model, storage_options)
    d_model = int(lens.sizes["d_model"])
    n_layers = int(lens.attrs.get("n_layers", 0)) or None
    if n_layers is None:
        raise ActstoreError(f"the lens head of {model!r} does not record its layer count; re-extract with this actstore")
    check_layer(layer, n_layers)
    if like is not None:
        vector, info = like[0], like[2]
    else:
        vector, info = _computed(store, model, layer, source, lens, storage_options)
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


def _computed(store: str, model: str, layer: int, source: VectorSource, lens: Any,
              storage_options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The vector (and its provenance) from states, an unembedding row or a file."""
    if source.from_states is not None:
        return vector_from_states(store, model, layer, source.from_states, source.minus, storage_options)
    if source.from_unembedding is not None:
        return vector_from_unembedding(lens, source.from_unembedding, source.minus)
    return vector_from_file(source.from_file)
