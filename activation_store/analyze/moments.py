"""Per-layer moments of a run's stored states: the centring and normalisation probes and SAE trainers want.

``state_moments`` reads the statistics the extraction wrote (store/views.py)
when the run has them and computes them from ``hidden`` otherwise, with the
same function (``activation_store.pooling.moments``): the same numbers either way."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..pooling import moments
from ..store.layout import STATS, VIEWS_ATTR


def state_moments(ds: xr.Dataset) -> xr.Dataset:
    """Per layer over every stored state (token, or example in a per-example run): ``mean`` and
    ``second_moment`` per dimension (layer, d_model) float64, ``abs_max`` (layer,) float32, and ``n_states`` (how many)."""
    views = ds.attrs.get(VIEWS_ATTR, {})
    layer_coords = {name: c.variable for name, c in ds.hidden.coords.items() if c.dims == ("layer",)}
    if views.get("stats") and all(name in ds.data_vars for name in STATS):
        values = dict(zip(("mean", "second_moment", "abs_max"), (np.asarray(ds[name].values) for name in STATS)))
        values["count"] = int(views["stat_count"])
    else:
        values = moments(ds.hidden.data)
    return xr.Dataset({"mean": (("layer", "d_model"), values["mean"]),
                       "second_moment": (("layer", "d_model"), values["second_moment"]),
                       "abs_max": ("layer", values["abs_max"]), "n_states": values["count"]}, coords=layer_coords,
                      attrs={"over": views.get("over") or f"every stored {ds.hidden.dims[1]}"})
