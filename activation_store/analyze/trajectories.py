"""Arithmetic trajectories in a plane anchored on the model's number tokens (Wu et al. 2024, arithmetic PCA).

Each state and each anchor is standardised on its own (mean 0, standard
deviation 1 over ``d_model``), so layers of very different norms share one
plane. The plane is a PCA fitted on the anchors alone: the unembedding rows of
the digits "0"…"9" and the words " zero"…" nine". Every item's per-layer states
are then projected into it, giving one path per item through the layers."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from ..vocabulary import token_ids

DIGITS = tuple(str(d) for d in range(10))
WORDS = (" zero", " one", " two", " three", " four", " five", " six", " seven", " eight", " nine")


def _standardise(values: np.ndarray) -> np.ndarray:
    values = values - values.mean(axis=-1, keepdims=True)
    return values / values.std(axis=-1, keepdims=True)


def number_anchors(lens: xr.Dataset, strings: tuple[str, ...] = DIGITS + WORDS) -> xr.DataArray:
    """The unembedding rows of the anchor strings: (anchor, d_model)."""
    rows = lens[layout.UNEMBEDDING].isel(vocab=token_ids(lens[layout.VOCAB_TOKEN].values, list(strings))).values.astype(np.float64)
    return xr.DataArray(rows, dims=("anchor", "d_model"), coords={"anchor": list(strings)})


def anchored_pca(states: xr.DataArray, anchors: xr.DataArray, n_components: int = 2) -> xr.Dataset:
    """Project (layer, example, d_model) ``states`` onto the top principal components of ``anchors``."""
    if anchors.sizes["anchor"] <= n_components:
        raise ActstoreError(f"a {n_components}-component PCA needs more than {n_components} anchors")
    fitted = _standardise(anchors.values.astype(np.float64))
    centre = fitted.mean(axis=0)
    _, singular, vt = np.linalg.svd(fitted - centre, full_matrices=False)
    axes = vt[:n_components]                                                      # (component, d_model)
    values = _standardise(states.transpose("layer", "example", "d_model").values.astype(np.float64))
    path = (values - centre) @ axes.T                                             # (layer, example, component)
    explained = singular**2 / (singular**2).sum()
    coords = {name: c for name, c in states.coords.items() if set(c.dims) <= {"layer", "example"}}
    return xr.Dataset(
        {"trajectory": (("layer", "example", "component"), path),
         "anchor_position": (("anchor", "component"), (fitted - centre) @ axes.T),
         "explained_variance": ("component", explained[:n_components])},
        coords={**coords, "anchor": anchors.anchor.values, "component": np.arange(n_components)},
        attrs={"definition": "states and anchors standardised per vector; PCA fitted on the anchors only"},
    )
