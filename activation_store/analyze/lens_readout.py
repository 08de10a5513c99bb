"""Logit-lens readouts per layer and position: top-k tokens, and log-prob and rank of targets.

The projection onto the vocabulary is ``projection.project``: one chunked,
parallel pass that never holds the whole vocabulary's logits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from .lens import lens_input
from .projection import project
from .selection import examples_of, token_states, tokens_of
from .stats import mean_ci

def target_logits(hidden: xr.DataArray, lens: xr.Dataset, target_ids: xr.DataArray, mode: str = "normed") -> xr.DataArray:
    """The lens logit of one target token per state (``target_ids`` broadcast against ``hidden``)."""
    rows = lens[layout.UNEMBEDDING].isel(vocab=target_ids.clip(min=0))
    out = (lens_input(hidden, lens, mode) * rows).sum("d_model")
    if layout.LOGIT_BIAS in lens:
        out = out + lens[layout.LOGIT_BIAS].isel(vocab=target_ids.clip(min=0))
    cap = lens.attrs.get("final_logit_softcapping")
    return cap * np.tanh(out / cap) if cap else out


def readout(hidden: xr.DataArray, lens: xr.Dataset, k: int = 5, targets: xr.DataArray | None = None,
            mode: str = "normed") -> xr.Dataset:
    """Top-``k`` tokens with probabilities for every hidden state; with ``targets`` (token ids along
    the non-layer dims of ``hidden``, −1 for none), each target's log-probability and rank (0 = top-1).
    ``mode`` is the lens (normed or raw, see ``lens.lens_input``); the result's attrs record it."""
    if k < 1:
        raise ActstoreError(f"top-k must be at least 1, got {k}")
    target_logit = None
    if targets is not None:
        vocab_size = lens.sizes["vocab"]
        if int(targets.max()) >= vocab_size:
            raise ActstoreError(f"target token id {int(targets.max())} is outside the vocabulary of {vocab_size}")
        target_logit = target_logits(hidden, lens, targets.astype(np.int64), mode).compute()
    projected = project(hidden, lens, k=k, target_logit=target_logit, target_id=targets, mode=mode)
    dims = list(projected.dims)
    coords = {name: c for name, c in hidden.coords.items() if set(c.dims) <= set(dims)}
    vocab = lens[layout.VOCAB_TOKEN].values
    result = xr.Dataset(
        {
            "top_id": ((*dims, "rank"), projected.top_id),
            "top_token": ((*dims, "rank"), vocab[projected.top_id]),
            "top_prob": ((*dims, "rank"), np.exp(projected.top_logit - projected.log_normaliser[..., None])),
        },
        coords={**coords, "rank": np.arange(k)},
        attrs={"lens": mode},
    )
    if targets is not None:
        valid = (targets >= 0).broadcast_like(target_logit).transpose(*dims).values
        logprob = target_logit.transpose(*dims).values - projected.log_normaliser
        result["target_id"] = targets.astype(np.int64)
        result["target_logprob"] = (dims, np.where(valid, logprob, np.nan))
        result["target_rank"] = (dims, np.where(valid, projected.target_rank, -1))
    return result


def target_summary(result: xr.Dataset, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Mean target log-prob per layer over the positions that have a target, with a bootstrap 95% interval."""
    have = np.flatnonzero(result.target_rank.isel(layer=0).values >= 0)
    if not len(have):
        raise ActstoreError("no selected position has a target token in the vocabulary")
    logprob = mean_ci(result.target_logprob.isel(token=have).transpose("layer", "token"), "token", n_boot, seed)
    ranks = result.target_rank.isel(token=have).transpose("layer", "token").values
    return xr.Dataset({"mean_logprob": ("layer", logprob["mean"].values), "ci_low": ("layer", logprob.ci_low.values),
                       "ci_high": ("layer", logprob.ci_high.values), "median_rank": ("layer", np.median(ranks, axis=1)),
                       "n_targets": len(have)}, coords={"layer": result.layer.values})


@dataclass(frozen=True)
class LensSelection:
    """Which tokens the logit lens reads: one ``example`` (default: example 0), or all examples of a
    ``variant`` and/or ``item``; ``modality``: only the text, image or audio tokens."""

    example: int | None = None
    variant: str | None = None
    item: str | None = None
    modality: str | None = None


def logit_lens(ds: xr.Dataset, lens: xr.Dataset, *, selection: LensSelection | None = None,
               targets: xr.DataArray | None = None, k: int = 5, mode: str = "normed", **select: Any) -> xr.Dataset:
    """The logit lens over one example (default: example 0; the Figure-1 table) or over all examples of a
    variant and/or item: ``readout`` of their tokens, with the selection, and for one example its text and
    input tokens, in the attributes. The tokens are ``selection``, or ``LensSelection``'s fields by keyword
    (``example=0``, ``variant="en"``, ``item=...``, ``modality="text"``). ``targets``: one token id per stored
    token (−1 for none); ``mode``: the normed or raw lens (see ``lens.lens_input``)."""
    if selection is not None and select:
        raise TypeError("logit_lens takes a selection or its keywords, not both")
    selection = selection if selection is not None else LensSelection(**select)
    example, variant, item, modality = selection.example, selection.variant, selection.item, selection.modality
    if example is not None and (variant is not None or item is not None):
        raise ActstoreError("give example, or variant/item, not both")
    if example is None and variant is None and item is None:
        example = 0
    examples = examples_of(ds, variant=variant, item=item, example=example)
    if not len(examples):
        raise ActstoreError(f"no example has variant {variant!r} and item {item!r}")
    tokens = tokens_of(ds, examples, modality=modality)
    result = readout(token_states(ds, "the logit lens").isel(token=tokens), lens, k=k,
                     targets=targets.isel(token=tokens) if targets is not None else None, mode=mode)
    single = len(examples) == 1
    vocab = lens[layout.VOCAB_TOKEN].values
    selection = "-".join(str(part) for part in (f"example-{example}" if example is not None else None,
                                                   variant, item, modality) if part is not None)
    result.attrs.update(input_tokens=[str(vocab[i]) for i in ds.token_id.values[tokens]] if single else [],
                        selection=selection, k=k, n_examples=len(examples), text=str(ds.text.values[examples[0]]) if single else "")
    return result
