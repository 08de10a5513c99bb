"""Cross-variant similarity per layer (Wu et al. 2024, Eq. 1).

For items i with states x_i (variant a) and y_i (variant b) at a layer:
    score = mean_i cos(x_i, y_i) − mean_{i≠j} cos(x_i, y_j).
The unpaired mean needs no n×n matrix: with unit vectors, Σ_{i≠j} x_i·y_j =
(Σx)·(Σy) − Σ_i x_i·y_i, so memory and time are linear in n. Each item's own
score s_i = x_i·y_i − mean_{j≠i} x_i·y_j averages exactly to the score, and the
95% interval is a bootstrap over items of that average.

Raw cosine on real models is swamped by a few huge dimensions (off-diagonal
≈ 0.99 on Gemma), so states can be centred first: each layer minus the mean
over all compared states of both variants. Results say which was used."""
from __future__ import annotations

from itertools import combinations

import dask
import numpy as np
import xarray as xr

from ..errors import ActstoreError
from .selection import pooled


def pair_by_item(states: xr.DataArray, variant_a: str, variant_b: str) -> tuple[xr.DataArray, xr.DataArray]:
    """States of two variants aligned on the items both have: two (layer, item, d_model) arrays."""
    if variant_a == variant_b:
        raise ActstoreError(f"similarity needs two different variants, got {variant_a!r} twice")
    variants = states.variant.values
    sides = []
    for variant in (variant_a, variant_b):
        if variant not in set(variants):
            raise ActstoreError(f"variant {variant!r} is not in this run; it has {', '.join(sorted(set(variants)))}")
        side = states.isel(example=np.flatnonzero(variants == variant))
        if len(set(side["item"].values)) != side.sizes["example"]:
            raise ActstoreError(f"variant {variant!r} has repeated items, so items do not pair")
        sides.append(side.swap_dims(example="item").drop_vars(["example", "variant"]))
    common = sorted(set(sides[0]["item"].values) & set(sides[1]["item"].values))
    if len(common) < 2:
        raise ActstoreError(f"variants {variant_a!r} and {variant_b!r} share {len(common)} item(s); at least 2 must pair")
    return sides[0].sel(item=common), sides[1].sel(item=common)


def _unit(states: xr.DataArray) -> xr.DataArray:
    return states / np.sqrt((states**2).sum("d_model"))


def similarity(x: xr.DataArray, y: xr.DataArray, center: bool = True, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Paired-minus-unpaired cosine per layer for aligned (layer, item, d_model) states, with a bootstrap CI."""
    n = x.sizes["item"]
    if center:
        mean = (x.mean("item") + y.mean("item")) / 2
        x, y = x - mean, y - mean
    xu, yu = _unit(x.astype(np.float64)), _unit(y.astype(np.float64))
    paired = (xu * yu).sum("d_model")                                      # (layer, item)
    cross = (xu * yu.sum("item")).sum("d_model")                           # x_i · Σy
    paired, cross = dask.compute(paired, cross)                            # one pass over the data
    per_item = paired - (cross - paired) / (n - 1)
    unpaired = (cross.sum("item") - paired.sum("item")) / (n * (n - 1))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    boot = per_item.values[:, draws].mean(axis=-1)                         # (layer, n_boot)
    low, high = np.percentile(boot, [2.5, 97.5], axis=-1)
    score = per_item.mean("item")
    return xr.Dataset(
        {
            "score": score,
            "ci_low": ("layer", low),
            "ci_high": ("layer", high),
            "paired": paired.mean("item"),
            "unpaired": unpaired,
            "per_item": per_item,
            "n_items": n,
        },
        attrs={"centered": int(center), "n_boot": n_boot, "seed": seed,
               "definition": "mean_i cos(x_i,y_i) - mean_{i!=j} cos(x_i,y_j)"
                             + (", states centred by the mean over both variants per layer" if center else ", raw states")},
    )


def variant_similarity(ds: xr.Dataset, variants: list[str], pool: str = "last", center: bool = True,
                       n_boot: int = 1000, seed: int = 0, modality: str | dict[str, str] | None = None) -> xr.Dataset:
    """Similarity for every pair of ``variants`` in a run: a ``pair`` dimension ("en-zh", …).

    ``modality`` pools only that modality's tokens, for every variant or per variant
    (``{"image": "image", "en": "text"}``: mean over the image tokens vs over the words)."""
    if len(variants) < 2:
        raise ActstoreError("similarity needs at least two variants, e.g. --variants en,zh")
    per_variant = modality if isinstance(modality, dict) else {v: modality for v in variants}
    unknown = sorted(set(per_variant) - set(variants))
    if unknown:
        raise ActstoreError(f"modality given for {unknown[0]!r}, which is not among the compared variants {', '.join(variants)}")
    groups = {}
    for variant in variants:
        groups.setdefault(per_variant.get(variant), []).append(variant)
    parts = [pooled(ds, pool, np.flatnonzero(np.isin(ds.variant.values, group)), modality=chosen)
             for chosen, group in groups.items()]
    states = parts[0] if len(parts) == 1 else xr.concat(parts, dim="example")
    results = []
    for a, b in combinations(variants, 2):
        x, y = pair_by_item(states, a, b)
        result = similarity(x, y, center=center, n_boot=n_boot, seed=seed)
        results.append(result.expand_dims(pair=[f"{a}-{b}"]))
    out = xr.concat(results, dim="pair", join="outer")  # per-item scores: NaN where a pair lacks the item
    out.attrs.update(results[0].attrs, pool=pool, variants=",".join(variants),
                     modality=",".join(f"{v}={per_variant.get(v) or 'all'}" for v in variants))
    return out
