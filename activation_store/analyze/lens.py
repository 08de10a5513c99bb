"""The logit lens from a stored head: hidden states → the model's own vocabulary logits.

Layers whose states are raw residual stream get the model's final norm first
(with its stored convention: Gemma multiplies by 1 + weight, Llama by weight);
layers already normed (``final_norm_applied``) go straight to the unembedding.
Final logit soft-capping is applied when the model has it; vocabulary ids that
are media codes (Chameleon's image tokens, ``media_code``) get −inf, as the
model masks them out of its own logits. Lazy throughout.

``mode="raw"`` is the paper's own lens (Wu et al.'s code): no final norm on
any layer, so intermediate layers' raw residual stream meets the unembedding
(the last layer, already normed by the model, is the same either way)."""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from .sites import require_residual

LENS_MODES = ("normed", "raw")


def final_norm(hidden: xr.DataArray, lens: xr.Dataset) -> xr.DataArray:
    """The model's final norm applied to every vector along ``d_model``."""
    spec = lens.attrs.get("final_norm")
    if spec is None:
        return hidden
    weight = lens[layout.NORM_WEIGHT]
    scale = (1 + weight) if spec["convention"] == "1+weight" else weight
    if spec["kind"] == "rmsnorm":
        return hidden * (1 / np.sqrt((hidden**2).mean("d_model") + spec["eps"])) * scale
    if spec["kind"] == "layernorm":
        centred = hidden - hidden.mean("d_model")
        normed = centred * (1 / np.sqrt((centred**2).mean("d_model") + spec["eps"])) * scale
        return normed + lens[layout.NORM_BIAS] if layout.NORM_BIAS in lens else normed
    raise ActstoreError(f"unknown final norm kind {spec['kind']!r} in the stored lens")


def check_mode(mode: str) -> str:
    """``mode`` itself when it names a lens (normed, raw); else one error listing them."""
    if mode not in LENS_MODES:
        raise ActstoreError(f"unknown lens {mode!r}; choose one of {', '.join(LENS_MODES)}")
    return mode


def lens_input(hidden: xr.DataArray, lens: xr.Dataset, mode: str = "normed") -> xr.DataArray:
    """Hidden states as the unembedding sees them: final-normed where the layer is not already
    (``normed``), or exactly as stored (``raw``). States of a site outside the residual basis are refused."""
    require_residual(hidden)
    if check_mode(mode) == "raw":
        return hidden
    if "final_norm_applied" not in hidden.coords:
        raise ActstoreError("hidden states carry no 'final_norm_applied' coordinate; open them with actstore.open_run")
    return xr.where(hidden.final_norm_applied, hidden, final_norm(hidden, lens))


def logits(hidden: xr.DataArray, lens: xr.Dataset, mode: str = "normed") -> xr.DataArray:
    """Logit-lens logits over ``vocab`` for each hidden state (chunked like the stored unembedding)."""
    normed = lens_input(hidden, lens, mode).astype(np.float32)
    out = xr.dot(normed, lens[layout.UNEMBEDDING], dim="d_model")
    if layout.LOGIT_BIAS in lens:
        out = out + lens[layout.LOGIT_BIAS]
    cap = lens.attrs.get("final_logit_softcapping")
    if cap:
        out = cap * np.tanh(out / cap)
    if layout.MEDIA_CODE in lens:
        out = out.where(~lens[layout.MEDIA_CODE].astype(bool), -np.inf)
    return out.rename("logits")

