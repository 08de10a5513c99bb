"""Which prompt tokens of each example get the vector, and that choice as a batch mask.

The selection itself (``last``, ``all``, a slice, a modality, an image half) is parsed by
activation_store/positions.py; here it meets each example's tokens and their media grid."""
from __future__ import annotations

import numpy as np
import torch

from ...errors import ActstoreError
from ...positions import HALVES, STEER_OPTION
from ...store import layout
from ..tokens import TokenLayout
from .parse import InterventionSpec


def steered_positions(positions: str | slice, length: int, coords: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Prompt positions (0-based) of one example that get the vector; ``coords`` are its tokens' ``modality``,
    ``media_row`` and ``media_col`` (a text layout's tokens are all text)."""
    if positions == "last":
        return np.array([length - 1])
    if positions == "all":
        return np.arange(length)
    if isinstance(positions, slice):
        return np.arange(length)[positions]
    kind, _, half = positions.partition(":")
    modality = coords["modality"] if coords else np.full(length, "text", dtype=object)
    chosen = modality == kind
    if half:
        cell = coords[HALVES[half]] if coords and HALVES[half] in coords else np.full(length, -1)
        size = int(cell[chosen].max()) + 1 if chosen.any() else 0
        chosen &= (cell >= 0) & ((cell < size // 2) if half in ("top", "left") else (cell >= (size + 1) // 2))
    return np.flatnonzero(chosen)


def example_token_coords(tokens: TokenLayout) -> list[dict[str, np.ndarray]]:
    """Each example's per-token modality and grid cells (what a media position selection reads)."""
    coords = tokens.token_coords()
    bounds = np.append(tokens.offsets, tokens.n_tokens).astype(np.int64)
    names = [n for n in ("modality", *layout.MEDIA_TOKEN_COORDS) if n in coords]
    return [{n: coords[n][a:b] for n in names} for a, b in zip(bounds[:-1], bounds[1:])]


def select_positions(tokens: TokenLayout, steering: InterventionSpec) -> list[np.ndarray]:
    """The steered prompt positions of every example; an example where the selection finds none is refused."""
    where, selected = steering.where, []
    for example, ids, coords in zip(tokens.examples, tokens.ids, example_token_coords(tokens)):
        chosen = steered_positions(where, len(ids), coords)
        if not len(chosen):
            kind = where.partition(":")[0] if isinstance(where, str) and where not in ("all", "last") else None
            hint = ("" if kind in (None, "text") else f"; choose the {kind} variants with --variants"
                    if not (coords["modality"] == kind).any() else "; its image has no row × column grid here")
            raise ActstoreError(f"{STEER_OPTION} {steering.positions} selects no token of example {example.item!r} "
                                f"({example.variant}, {len(ids)} tokens){hint}")
        selected.append(chosen)
    return selected


def steer_mask(rows_positions: list[np.ndarray], width: int) -> torch.Tensor:
    """Batch × width, 1 at each row's steered positions."""
    mask = torch.zeros((len(rows_positions), width), dtype=torch.float32)
    for i, chosen in enumerate(rows_positions):
        mask[i, chosen] = 1.0
    return mask
