"""Picking states out of a run: examples by variant or item, last tokens, mean over tokens.

Each can be restricted to one ``modality`` (text, image, audio): the last text
token, the mean over an image's tokens, the audio slots. Each returns a lazy DataArray with an ``example`` dimension carrying the
``item`` and ``variant`` coordinates, so analyses can pair variants by item.

Last-token and mean states come from the run's stored per-example states when
it has them — a ``--positions last|mean`` run's ``hidden``, or a full run's
pooled views (store/views.py) — and are computed from ``hidden`` otherwise,
with the same functions the views were written with: the same numbers either
way. An analysis that needs every token's states calls ``token_states``, which
refuses a per-example run in one line."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..pooling import mean_states
from ..store.layout import CAPTURE_ATTR, MODALITIES, VIEWS, VIEWS_ATTR

POOLS = ("last", "mean")


STORED = {"last": "each example's last-token state", "mean": "each example's mean state"}


def run_positions(ds: xr.Dataset) -> str:
    """What the run stores per layer: ``all`` tokens, or one ``last``/``mean`` state per example."""
    return ds.attrs.get(CAPTURE_ATTR, {}).get("positions", "all")


def stored_view(ds: xr.Dataset, pool: str) -> xr.DataArray | None:
    """The run's stored (layer, example, d_model) states for ``pool`` (``last``/``mean``), or None."""
    if run_positions(ds) == pool:
        return ds.hidden
    name = VIEWS.get(pool)
    if ds.attrs.get(VIEWS_ATTR, {}).get(pool) == name and name in ds.data_vars:
        return ds[name]
    return None


def token_states(ds: xr.Dataset, what: str = "this analysis") -> xr.DataArray:
    """``hidden`` over tokens; one line naming what the run holds instead when it stores one state per example."""
    positions = run_positions(ds)
    if positions == "all":
        return ds.hidden
    raise ActstoreError(f"{what} needs every token's states, but this run stores only {STORED[positions]} "
                        f"(extracted with --positions {positions}); extract with --positions all")


def modality_mask(ds: xr.Dataset, modality: str | None) -> np.ndarray:
    """Per token, whether it has ``modality`` (all True for None)."""
    if modality is None:
        return np.ones(ds.sizes["token"], dtype=bool)
    if modality not in MODALITIES:
        raise ActstoreError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    mask = ds.modality.values == modality
    if not mask.any():
        present = sorted(set(ds.modality.values)) if ds.sizes["token"] else []
        raise ActstoreError(f"this run has no {modality} tokens; it has {', '.join(present) or 'none'}")
    return mask


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


def select_layers(ds: xr.Dataset, layers: list[int] | None) -> xr.Dataset:
    """The run at the given layers only (all when ``layers`` is empty); an absent layer is an error naming it."""
    if not layers:
        return ds
    stored = ds.layer.values.tolist()
    bad = [layer for layer in layers if layer not in set(stored)]
    if bad:
        if stored == list(range(len(stored))):
            raise ActstoreError(f"layer {bad[0]} is out of range; the run has layers 0..{int(ds.layer.max())}")
        raise ActstoreError(f"layer {bad[0]} is not in this run; it stores layers {', '.join(map(str, stored))} "
                            f"(extracted with --layers)")
    return ds.sel(layer=layers)


def tokens_of(ds: xr.Dataset, examples: np.ndarray, modality: str | None = None) -> np.ndarray:
    """Token indices of the given examples, end to end (only those of ``modality`` when given)."""
    offsets = ds.token_offset.values[examples]
    counts = ds.token_count.values[examples]
    tokens = np.concatenate([np.arange(o, o + c) for o, c in zip(offsets, counts)]) if len(examples) else np.zeros(0, int)
    if modality is None:
        return tokens
    tokens = tokens[modality_mask(ds, modality)[tokens]]
    if not len(tokens):
        raise ActstoreError(f"the selected examples have no {modality} tokens")
    return tokens


def last_tokens(ds: xr.Dataset, examples: np.ndarray | None = None, modality: str | None = None) -> xr.DataArray:
    """The last token's state of each example (its last ``modality`` token when given): (layer, example, d_model)."""
    examples = np.arange(ds.sizes["example"]) if examples is None else np.asarray(examples)
    view = stored_view(ds, "last") if modality is None else None
    if view is not None:  # as if picked from ``hidden``: its name and attributes
        picked = view.isel(example=examples).rename(ds.hidden.name)
        picked.attrs = dict(ds.hidden.attrs)
        return _with_example_coords(picked, ds, examples)
    hidden = token_states(ds, "the last token of each " + (f"example's {modality} tokens" if modality else "example"))
    index = (ds.token_offset.values + ds.token_count.values - 1)[examples]
    if modality is not None:
        mask = modality_mask(ds, modality)
        owner = ds.token_example.values
        last = np.full(ds.sizes["example"], -1, dtype=np.int64)
        np.maximum.at(last, owner[mask], np.flatnonzero(mask))
        index = last[examples]
        if (index < 0).any():
            bad = examples[np.flatnonzero(index < 0)[0]]
            raise ActstoreError(f"example {int(bad)} ({ds.variant.values[bad]}, item {ds['item'].values[bad]!r}) "
                                f"has no {modality} token")
    states = hidden.isel(token=xr.DataArray(index, dims="example"))
    return _with_example_coords(states, ds, examples)


def mean_tokens(ds: xr.Dataset, examples: np.ndarray | None = None, skip_first: bool | None = None,
                modality: str | None = None) -> xr.DataArray:
    """Each example's states averaged over its tokens: (layer, example, d_model) float32.

    A segment sum per token chunk, then a tree sum over chunks: memory stays at a
    chunk plus one (examples × d_model) partial, whatever the run's size.
    ``skip_first`` leaves out position 0 (default: when the run prepended BOS,
    whose state is an outlier the mean would be dominated by). With ``modality``
    only that modality's tokens count (e.g. the mean over an image's tokens).
    The run's stored means serve the default (all modalities, BOS left out as recorded)."""
    bos = bool(ds.attrs.get("config", {}).get("bos", False))
    if skip_first is None:
        skip_first = bos
    examples = np.arange(ds.sizes["example"]) if examples is None else np.asarray(examples)
    slot = np.full(ds.sizes["example"], -1, dtype=np.int64)
    slot[examples] = np.arange(len(examples))
    owner = slot[ds.token_example.values]
    if skip_first:
        owner[ds.position.values == 0] = -1
    if modality is not None:
        owner[~modality_mask(ds, modality)] = -1
    counts = np.bincount(owner[owner >= 0], minlength=len(examples))
    if (counts == 0).any():
        raise ActstoreError(f"some examples have no {modality + ' ' if modality else ''}tokens to average"
                            + ("" if modality else " (only BOS); use --pool last"))
    view = stored_view(ds, "mean") if modality is None and skip_first == bos else None
    if view is not None:  # as ``mean_states`` gives them: unnamed, no attributes
        picked = view.isel(example=examples).rename(None)
        picked.attrs = {}
        return _with_example_coords(picked, ds, examples)
    data = token_states(ds, "the mean over each " + (f"example's {modality} tokens" if modality else "example's tokens")).data
    means = xr.DataArray(mean_states(data, owner, counts), dims=("layer", "example", "d_model"),
                         coords={"layer": ds.layer.values, "final_norm_applied": ("layer", ds.final_norm_applied.values)})
    return _with_example_coords(means.rename(None), ds, examples)


def pooled(ds: xr.Dataset, pool: str, examples: np.ndarray | None = None, modality: str | None = None) -> xr.DataArray:
    if pool == "last":
        return last_tokens(ds, examples, modality=modality)
    if pool == "mean":
        return mean_tokens(ds, examples, modality=modality)
    raise ActstoreError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}")


def _with_example_coords(states: xr.DataArray, ds: xr.Dataset, examples: np.ndarray) -> xr.DataArray:
    drop = [name for name in states.coords if set(states[name].dims) - {"layer"}]  # per-token coords of the picked tokens
    states = states.drop_vars(drop)
    return states.assign_coords(
        example=("example", ds.example.values[examples]),
        item=("example", ds["item"].values[examples]),
        variant=("example", ds.variant.values[examples]),
    )
