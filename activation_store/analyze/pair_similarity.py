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
from .stats import mean_ci


def pair_by_item(states: xr.DataArray, variant_a: str, variant_b: str) -> tuple[xr.DataArray, xr.DataArray]:
    """States of two variants aligned on the items both have: two (layer, item, d_model) arrays."""
    if variant_a == variant_b:
        raise ActstoreError(f"similarity needs two different variants, got {variant_a!r} twice")
    variants, items = states.variant.values, states["item"].values
    rows = []
    for variant in (variant_a, variant_b):
        if variant not in set(variants):
            raise ActstoreError(f"variant {variant!r} is not in this run; it has {', '.join(sorted(set(variants)))}")
        mine = np.flatnonzero(variants == variant)
        row_of = dict(zip(items[mine].tolist(), mine.tolist()))
        if len(row_of) != len(mine):
            raise ActstoreError(f"variant {variant!r} has repeated items, so items do not pair")
        rows.append(row_of)
    common = sorted(rows[0].keys() & rows[1].keys())
    if len(common) < 2:
        raise ActstoreError(f"variants {variant_a!r} and {variant_b!r} share {len(common)} item(s); at least 2 must pair")
    # one selection per side, straight to the common items in order (not a variant cut, then a second by item)
    return tuple(states.isel(example=[row_of[item] for item in common]).swap_dims(example="item")
                 .drop_vars(["example", "variant"]) for row_of in rows)


BLOCK_BYTES = 256 << 20  # float32 states of both variants held at once: layers are done in groups this size


def _layer_groups(n_layers: int, per_layer_bytes: int) -> list[slice]:
    step = max(1, BLOCK_BYTES // max(1, per_layer_bytes))
    return [slice(start, min(start + step, n_layers)) for start in range(0, n_layers, step)]


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a_li · b_li for (layer, item, d_model) blocks, as batched (1 × d) @ (d × 1) products (BLAS, not einsum)."""
    return np.matmul(a[..., None, :], b[..., None])[..., 0, 0]


def _paired_and_cross(x: np.ndarray, y: np.ndarray, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """x_i·y_i and x_i·Σy of unit (optionally centred) states, for (layer, item, d_model) float32 blocks.

    The states are bfloat16 (or float32) to begin with, so float32 arithmetic loses nothing they hold:
    the mean is taken in float64 and the centred states stay float32 (on Gemma's 30,000-sized outlier
    dimensions the scores move by ~1e-7 against float64 throughout, at a quarter of the time)."""
    if center:
        mean = (x.mean(axis=1, keepdims=True, dtype=np.float64) + y.mean(axis=1, keepdims=True, dtype=np.float64)) / 2
        x, y = x - mean.astype(x.dtype), y - mean.astype(y.dtype)
    x_norm = np.sqrt(_rowwise_dot(x, x).astype(np.float64))
    y_norm = np.sqrt(_rowwise_dot(y, y).astype(np.float64))
    paired = _rowwise_dot(x, y) / (x_norm * y_norm)
    unit_sum = np.matmul((1 / y_norm)[:, None, :].astype(y.dtype), y)          # (layer, 1, d): Σ_j y_j / |y_j|
    cross = np.matmul(x, unit_sum.transpose(0, 2, 1))[..., 0] / x_norm
    return paired, cross


def similarity(x: xr.DataArray, y: xr.DataArray, center: bool = True, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Paired-minus-unpaired cosine per layer for aligned (layer, item, d_model) states, with a bootstrap CI.

    The pooled states are small next to the run (one vector per item and layer), so they are read in one
    dask pass per group of layers (all layers at once up to ``BLOCK_BYTES``) and scored with numpy:
    building and scheduling a dask graph for the arithmetic cost far more than the arithmetic."""
    n = x.sizes["item"]
    x, y = x.transpose("layer", "item", "d_model"), y.transpose("layer", "item", "d_model")
    n_layers = x.sizes["layer"]
    paired, cross = np.empty((n_layers, n)), np.empty((n_layers, n))
    for group in _layer_groups(n_layers, 2 * n * x.sizes["d_model"] * 4):
        xs, ys = dask.compute(x.data[group], y.data[group])                # one read of these layers' chunks
        paired[group], cross[group] = _paired_and_cross(np.asarray(xs, dtype=np.float32),
                                                        np.asarray(ys, dtype=np.float32), center)
    unpaired = (cross.sum(axis=1) - paired.sum(axis=1)) / (n * (n - 1))
    layer_coords = {name: c.variable for name, c in x.coords.items() if c.dims == ("layer",)}
    per_item = xr.DataArray(paired - (cross - paired) / (n - 1), dims=("layer", "item"),
                            coords={**layer_coords, "item": x["item"].values})
    score = mean_ci(per_item, "item", n_boot, seed)                       # the interval: items resampled
    return xr.Dataset(
        {
            "score": score["mean"],
            "ci_low": score.ci_low,
            "ci_high": score.ci_high,
            "paired": ("layer", paired.mean(axis=1)),
            "unpaired": ("layer", unpaired),
            "per_item": per_item,
            "n_items": n,
        },
        attrs={"centered": int(center), "n_boot": n_boot, "seed": seed,
               "definition": "mean_i cos(x_i,y_i) - mean_{i!=j} cos(x_i,y_j)"
                             + (", states centred by the mean over both variants per layer" if center else ", raw states")},
    )


def variant_similarity(ds: xr.Dataset, variants: list[str] | None = None, pool: str = "last", center: bool = True,
                       n_boot: int = 1000, seed: int = 0, modality: str | dict[str, str] | None = None) -> xr.Dataset:
    """Similarity for every pair of ``variants`` (default: all of the run's) in a run: a ``pair`` dimension ("en-zh", …).

    ``modality`` pools only that modality's tokens, for every variant or per variant
    (``{"image": "image", "en": "text"}``: mean over the image tokens vs over the words)."""
    variants = variants or sorted(set(ds.variant.values))
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
    if states.nbytes <= BLOCK_BYTES:  # pooled states are small: one read for every pair, then plain numpy
        states = states.compute()
    results = []
    for a, b in combinations(variants, 2):
        x, y = pair_by_item(states, a, b)
        result = similarity(x, y, center=center, n_boot=n_boot, seed=seed)
        results.append(result.expand_dims(pair=[f"{a}-{b}"]))
    out = xr.concat(results, dim="pair", join="outer")  # per-item scores: NaN where a pair lacks the item
    out.attrs.update(results[0].attrs, pool=pool, variants=",".join(variants),
                     modality=",".join(f"{v}={per_variant.get(v) or 'all'}" for v in variants))
    return out
