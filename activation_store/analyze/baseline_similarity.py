"""Similarity against an explicit baseline variant (the paper's COGS experiment).

Instead of all mismatched pairs, each item's state in variant a is compared
with its match in variant b and with its own baseline in variant c (the logical
form with the two names swapped):
    score = mean_i cos(x_i, y_i) − mean_i cos(x_i, z_i),
with a bootstrap 95% interval over items. A form that the model reads for who
did what to whom scores above its name-swapped twin."""
from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from ..errors import ActstoreError
from .selection import pooled
from .pair_similarity import _layer_groups, pair_by_item
from .stats import mean_ci


def _matched_and_baseline(x: np.ndarray, y: np.ndarray, z: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos(x_i, y_i) and cos(x_i, z_i) of (optionally centred) (layer, item, d_model) float64 blocks."""
    if center:
        mean = (x.mean(axis=1, keepdims=True) + y.mean(axis=1, keepdims=True) + z.mean(axis=1, keepdims=True)) / 3
        x, y, z = x - mean, y - mean, z - mean
    x, y, z = (v / np.sqrt(np.einsum("lid,lid->li", v, v))[..., None] for v in (x, y, z))
    return np.einsum("lid,lid->li", x, y), np.einsum("lid,lid->li", x, z)


def baseline_similarity(x: xr.DataArray, y: xr.DataArray, z: xr.DataArray, center: bool = True,
                        n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Per layer cos(x, y) − cos(x, z) for aligned (layer, item, d_model) states, with a bootstrap CI
    (read in one dask pass per group of layers and scored with numpy, as ``similarity.similarity``)."""
    x, y, z = (v.transpose("layer", "item", "d_model") for v in (x, y, z))
    n, n_layers = x.sizes["item"], x.sizes["layer"]
    matched, baseline = np.empty((n_layers, n)), np.empty((n_layers, n))
    for group in _layer_groups(n_layers, 3 * n * x.sizes["d_model"] * 8):
        blocks = dask.compute(x.data[group], y.data[group], z.data[group])    # one read of these layers' chunks
        matched[group], baseline[group] = _matched_and_baseline(*(np.asarray(b, dtype=np.float64) for b in blocks), center)
    layer_coords = {name: c.variable for name, c in x.coords.items() if c.dims == ("layer",)}
    coords = {**layer_coords, "item": x["item"].values}
    per_item = xr.DataArray(matched - baseline, dims=("layer", "item"), coords=coords)
    score = mean_ci(per_item, "item", n_boot, seed)                       # the interval: items resampled
    return xr.Dataset(
        {"score": score["mean"], "ci_low": score.ci_low, "ci_high": score.ci_high,
         "matched": ("layer", matched.mean(axis=1)), "baseline": ("layer", baseline.mean(axis=1)),
         "per_item": per_item, "n_items": n},
        attrs={"centered": int(center), "n_boot": n_boot, "seed": seed,
               "definition": "mean_i cos(x_i,y_i) - mean_i cos(x_i,z_i), z = the baseline variant"},
    )


def variant_baseline_similarity(ds: xr.Dataset, variant_a: str | None, variant_b: str | None, baseline: str,
                                pool: str = "last", center: bool = True, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """``baseline_similarity`` between two variants of a run, with a third variant as the baseline; with
    ``variant_a``/``variant_b`` None, the run's two variants other than the baseline."""
    if variant_a is None or variant_b is None:
        others = [v for v in dict.fromkeys(ds.variant.values.tolist()) if v != baseline]
        if len(others) != 2:
            raise ActstoreError(f"a baseline similarity compares exactly two variants (e.g. sentence,form); "
                                f"this run has {len(others)} besides {baseline!r}")
        variant_a, variant_b = others
    if baseline in (variant_a, variant_b):
        raise ActstoreError(f"the baseline variant {baseline!r} must differ from the compared variants")
    states = pooled(ds, pool, np.flatnonzero(np.isin(ds.variant.values, [variant_a, variant_b, baseline])))
    x, y = pair_by_item(states, variant_a, variant_b)
    _, z = pair_by_item(states, variant_a, baseline)
    common = sorted(set(x["item"].values) & set(z["item"].values))
    if len(common) < 2:
        raise ActstoreError(f"variants {variant_a!r}, {variant_b!r} and {baseline!r} share {len(common)} item(s); at least 2 must")
    result = baseline_similarity(x.sel(item=common), y.sel(item=common), z.sel(item=common), center=center,
                                 n_boot=n_boot, seed=seed)
    result.attrs.update(pool=pool, pair=f"{variant_a}-{variant_b}", baseline=baseline)
    return result
