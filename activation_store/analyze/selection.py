"""Picking states out of a run: examples by variant or item, last tokens, mean over tokens.

Each can be restricted to one ``modality`` (text, image, audio): the last text
token, the mean over an image's tokens, the audio slots. Each returns a lazy DataArray with an ``example`` dimension carrying the
``item`` and ``variant`` coordinates, so analyses can pair variants by item."""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store.layout import MODALITIES

POOLS = ("last", "mean")


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
    present = set(ds.layer.values.tolist())
    bad = [layer for layer in layers if layer not in present]
    if bad:
        raise ActstoreError(f"layer {bad[0]} is out of range; the run has layers 0..{int(ds.layer.max())}")
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
    states = ds.hidden.isel(token=xr.DataArray(index, dims="example"))
    return _with_example_coords(states, ds, examples)


def _segment_sums(block: np.ndarray, owner: np.ndarray, n_out: int) -> np.ndarray:
    """Sums of runs of tokens with the same owner in one (layer, token, d_model) block: (layer, 1, n_out, d_model)."""
    out = np.zeros((block.shape[0], 1, n_out, block.shape[2]), dtype=np.float64)
    if not len(owner):
        return out
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    sums = np.add.reduceat(block.astype(np.float64), starts, axis=1)
    keep = owner[starts] >= 0
    out[:, 0, owner[starts][keep]] = sums[:, keep]
    return out


def mean_tokens(ds: xr.Dataset, examples: np.ndarray | None = None, skip_first: bool | None = None,
                modality: str | None = None) -> xr.DataArray:
    """Each example's states averaged over its tokens: (layer, example, d_model).

    A segment sum per token chunk, then a tree sum over chunks: memory stays at a
    chunk plus one (examples × d_model) partial, whatever the run's size.
    ``skip_first`` leaves out position 0 (default: when the run prepended BOS,
    whose state is an outlier the mean would be dominated by). With ``modality``
    only that modality's tokens count (e.g. the mean over an image's tokens)."""
    if skip_first is None:
        skip_first = bool(ds.attrs.get("config", {}).get("bos", False))
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
    data = ds.hidden.data
    token_chunks = data.chunks[1]
    owners = da.from_array(owner, chunks=(token_chunks,))
    partial = da.map_blocks(
        lambda block, who: _segment_sums(block, who.reshape(-1), len(examples)), data, owners[None, :, None],
        new_axis=[2], chunks=(data.chunks[0], (1,) * len(token_chunks), (len(examples),), data.chunks[2]),
        dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
    )
    sums = partial.sum(axis=1)
    means = xr.DataArray(sums / counts[None, :, None], dims=("layer", "example", "d_model"),
                         coords={"layer": ds.layer.values, "final_norm_applied": ("layer", ds.final_norm_applied.values)})
    return _with_example_coords(means, ds, examples)


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
