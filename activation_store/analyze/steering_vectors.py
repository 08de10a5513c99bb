"""Steering vectors from stored data: mean-state differences (ActAdd) and unembedding rows.

``--from-states D:variant=en:item=good --minus D:variant=en:item=bad`` at layer l is
mean(last-token state at l over the first set) − mean(over the second), as in
ActAdd; ``--from-unembedding " start" --minus " end"`` is W_U[a] − W_U[b] from the
stored lens head. Pure functions on xarray objects; ``workflows.steering`` opens the
store and saves the vector."""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from ..vocabulary import token_ids
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


def vector_from_unembedding(lens: xr.Dataset, source: str, minus: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    ids = token_ids(lens[layout.VOCAB_TOKEN].values, [source] + ([minus] if minus is not None else []))
    rows = lens.unembedding.isel(vocab=ids).values.astype(np.float64)
    vector = rows[0] - rows[1] if minus is not None else rows[0]
    return vector, {"method": "unembedding", "source": source, "minus": minus, "token_ids": [int(i) for i in ids]}


def random_like(vector: np.ndarray, seed: int) -> np.ndarray:
    """A control for ``vector``: a uniformly random direction (normalised Gaussian draw from ``default_rng(seed)``)
    with the same norm, so any effect it has is what steering by that much in no particular direction does."""
    if seed < 0:
        raise ActstoreError(f"--seed must be a non-negative integer, got {seed}")
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        raise ActstoreError("the vector to imitate has norm 0; a random control of norm 0 is the baseline itself")
    draw = np.random.default_rng(seed).standard_normal(np.shape(vector))
    return draw / np.linalg.norm(draw) * norm
