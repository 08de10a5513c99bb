"""Logit-lens readouts per layer and position: top-k tokens, and log-prob and rank of targets.

The projection onto the vocabulary is ``projection.project``: one chunked,
parallel pass that never holds the whole vocabulary's logits."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..target_sets import vocabulary_index
from ..store import layout
from .lens import lens_input
from .projection import project

def target_logits(hidden: xr.DataArray, lens: xr.Dataset, target_ids: xr.DataArray) -> xr.DataArray:
    """The lens logit of one target token per state (``target_ids`` broadcast against ``hidden``)."""
    rows = lens[layout.UNEMBEDDING].isel(vocab=target_ids.clip(min=0))
    out = (lens_input(hidden, lens) * rows).sum("d_model")
    if layout.LOGIT_BIAS in lens:
        out = out + lens[layout.LOGIT_BIAS].isel(vocab=target_ids.clip(min=0))
    cap = lens.attrs.get("final_logit_softcapping")
    return cap * np.tanh(out / cap) if cap else out


def readout(hidden: xr.DataArray, lens: xr.Dataset, k: int = 5, targets: xr.DataArray | None = None) -> xr.Dataset:
    """Top-``k`` tokens with probabilities for every hidden state; with ``targets`` (token ids along
    the non-layer dims of ``hidden``, −1 for none), each target's log-probability and rank (0 = top-1)."""
    if k < 1:
        raise ActstoreError(f"top-k must be at least 1, got {k}")
    target_logit = None
    if targets is not None:
        vocab_size = lens.sizes["vocab"]
        if int(targets.max()) >= vocab_size:
            raise ActstoreError(f"target token id {int(targets.max())} is outside the vocabulary of {vocab_size}")
        target_logit = target_logits(hidden, lens, targets.astype(np.int64)).compute()
    projected = project(hidden, lens, k=k, target_logit=target_logit, target_id=targets)
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
    )
    if targets is not None:
        valid = (targets >= 0).broadcast_like(target_logit).transpose(*dims).values
        logprob = target_logit.transpose(*dims).values - projected.log_normaliser
        result["target_id"] = targets.astype(np.int64)
        result["target_logprob"] = (dims, np.where(valid, logprob, np.nan))
        result["target_rank"] = (dims, np.where(valid, projected.target_rank, -1))
    return result


def vocabulary_ids(lens: xr.Dataset, strings: list[str]) -> np.ndarray:
    """Token ids of exact vocabulary strings (e.g. " sofa", "8"); a missing one is an error naming it."""
    index = vocabulary_index(lens[layout.VOCAB_TOKEN].values)
    missing = [s for s in strings if s not in index]
    if missing:
        raise ActstoreError(f"the vocabulary has no token {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return np.array([index[s] for s in strings], dtype=np.int64)
