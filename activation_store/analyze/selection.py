"""Picking states out of a run: examples by variant or item, last tokens, mean over tokens.

Each returns a lazy DataArray with an ``example`` dimension carrying the
``item`` and ``variant`` coordinates, so analyses can pair variants by item."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError

POOLS = ("last", "mean")


def examples_of(ds: xr.Dataset, variant: str | None = None, item: str | None = None,
                example: int | None = None) -> np.ndarray:
    """Indices of the examples matching all the given selectors (in store order)."""
    mask = np.ones(ds.sizes["example"], dtype=bool)
    if example is not None:
        if not 0 <= example < ds.sizes["example"]:
            raise ActstoreError(f"example {example} is out of range (the run has {ds.sizes['example']} examples)")
        mask &= np.arange(ds.sizes["example"]) == example
    for name, value in (("variant", variant), ("item", item)):
        if value is not None:
            values = ds[name].values
            if value not in set(values):
                raise ActstoreError(f"{name} {value!r} is not in this run; it has {', '.join(sorted(set(values))[:12])}")
            mask &= values == value
    return np.flatnonzero(mask)


def tokens_of(ds: xr.Dataset, examples: np.ndarray) -> np.ndarray:
    """Token indices of the given examples, end to end."""
    offsets = ds.token_offset.values[examples]
    counts = ds.token_count.values[examples]
    return np.concatenate([np.arange(o, o + c) for o, c in zip(offsets, counts)]) if len(examples) else np.zeros(0, int)


def last_tokens(ds: xr.Dataset, examples: np.ndarray | None = None) -> xr.DataArray:
    """The last token's state of each example: (layer, example, d_model)."""
    examples = np.arange(ds.sizes["example"]) if examples is None else np.asarray(examples)
    index = (ds.token_offset.values + ds.token_count.values - 1)[examples]
    states = ds.hidden.isel(token=xr.DataArray(index, dims="example"))
    return _with_example_coords(states, ds, examples)


def mean_tokens(ds: xr.Dataset, examples: np.ndarray | None = None, skip_first: bool | None = None) -> xr.DataArray:
    """Each example's states averaged over its tokens: (layer, example, d_model).

    ``skip_first`` leaves out position 0 (default: when the run prepended BOS,
    whose state is an outlier the mean would be dominated by)."""
    if skip_first is None:
        skip_first = bool(ds.attrs.get("config", {}).get("bos", False))
    examples = np.arange(ds.sizes["example"]) if examples is None else np.asarray(examples)
    tokens = tokens_of(ds, examples)
    if skip_first:
        tokens = tokens[ds.position.values[tokens] > 0]
    owner = ds.token_example.values[tokens]
    if len(np.unique(owner)) != len(examples):
        raise ActstoreError("some examples have no tokens left to average (only BOS); use --pool last")
    hidden = ds.hidden.isel(token=tokens).assign_coords(owner=("token", owner))
    means = hidden.groupby("owner").mean("token").rename(owner="example")
    means = means.sel(example=ds.example.values[examples]).drop_vars("example")
    return _with_example_coords(means, ds, examples)


def pooled(ds: xr.Dataset, pool: str, examples: np.ndarray | None = None) -> xr.DataArray:
    if pool == "last":
        return last_tokens(ds, examples)
    if pool == "mean":
        return mean_tokens(ds, examples)
    raise ActstoreError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}")


def _with_example_coords(states: xr.DataArray, ds: xr.Dataset, examples: np.ndarray) -> xr.DataArray:
    drop = [name for name in states.coords if set(states[name].dims) - {"layer"}]  # per-token coords of the picked tokens
    states = states.drop_vars(drop)
    return states.assign_coords(
        example=("example", ds.example.values[examples]),
        item=("example", ds["item"].values[examples]),
        variant=("example", ds.variant.values[examples]),
    )
