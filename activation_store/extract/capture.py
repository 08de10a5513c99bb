"""Running the model and keeping every layer's hidden state of every real token.

The base model (no LM head: its logits are not stored) runs with
``output_hidden_states``; right padding keeps each example's positions, and
padding is dropped before anything leaves this module."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..errors import ActstoreError

FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "final_norm")


def final_norm(model) -> torch.nn.Module | None:
    """The final norm of the (language) model: on the base model, or on a multimodal model's ``language_model``."""
    for base in (model.base_model, getattr(model.base_model, "language_model", None)):
        for name in FINAL_NORM_NAMES:
            module = getattr(base, name, None)
            if isinstance(module, torch.nn.Module):
                return module
    return None


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return input_ids, mask


def real_token_index(ids: list[list[int]]) -> torch.Tensor:
    """Flat (batch × width) positions of the real tokens, computed on the host so the device never syncs."""
    width = max(len(row) for row in ids)
    return torch.cat([torch.arange(len(row)) + i * width for i, row in enumerate(ids)])


@torch.inference_mode()
def forward_states(model, ids: list[list[int]], pad_id: int, device: str | torch.device | None = None,
                   **inputs) -> torch.Tensor:
    """Hidden states of a batch, packed, where the model computed them: (layers, real tokens, d_model).

    ``inputs`` are what a multimodal model needs beside the ids (pixel values, audio features; floating
    ones run in the model's dtype). Nothing here waits for the device: the real-token index is built on
    the host, and states that several devices computed (a device map) are gathered onto the first layer's device."""
    device = torch.device(device if device is not None else model.device)
    input_ids, mask = pad_batch(ids, pad_id)
    index = real_token_index(ids)
    if device.type == "cuda":
        input_ids, mask, index = (t.pin_memory().to(device, non_blocking=True) for t in (input_ids, mask, index))
    else:
        input_ids, mask, index = input_ids.to(device), mask.to(device), index.to(device)
    inputs = {k: v.to(device, dtype=model.dtype if v.is_floating_point() else v.dtype)
              if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    out = model.base_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False,
                           **inputs)
    states = out.hidden_states
    home = states[0].device
    packed = torch.empty((len(states), index.numel(), states[0].shape[-1]), dtype=states[0].dtype, device=home)
    index = index.to(home, non_blocking=True)
    for layer, state in enumerate(states):
        packed[layer] = state.to(home, non_blocking=True).flatten(0, 1).index_select(0, index)
    return packed


class HostCopy:
    """A batch's states on their way to the host as float32 (the first look at a run's examples).

    On CUDA the copy runs on its own stream into pinned memory and ``result`` waits only for it;
    elsewhere the copy is immediate. A per-layer finiteness flag travels with the states, so
    non-finite states (float16 overflow) are refused by layer before anything can store them."""

    _streams: dict[torch.device, torch.cuda.Stream] = {}

    def __init__(self, states: torch.Tensor):
        self.dtype = states.dtype
        finite = torch.isfinite(states).flatten(1).all(dim=1)
        if states.device.type != "cuda":
            self._states, self._finite, self._event = states.cpu(), finite.cpu(), None
            return
        stream = self._streams.setdefault(states.device, torch.cuda.Stream(states.device))
        stream.wait_stream(torch.cuda.current_stream(states.device))
        self._states = torch.empty(states.shape, dtype=states.dtype, pin_memory=True)
        self._finite = torch.empty(finite.shape, dtype=finite.dtype, pin_memory=True)
        with torch.cuda.stream(stream):
            self._states.copy_(states, non_blocking=True)
            self._finite.copy_(finite, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(stream)
        states.record_stream(stream)  # the caching allocator must not reuse them before the copy ends
        finite.record_stream(stream)

    def result(self) -> torch.Tensor:
        """The states as float32 on the host; a one-line error naming the first layer with inf/NaN."""
        if self._event is not None:
            self._event.synchronize()
        bad = (~self._finite).nonzero()
        if len(bad):
            raise nonfinite_error(int(bad[0, 0]), str(self.dtype).removeprefix("torch."))
        return self._states.float()


def nonfinite_error(layer: int, compute_dtype: str, site: str = "hidden") -> ActstoreError:
    """The one-line refusal of a batch whose states at ``layer`` (of ``site``) hold inf or NaN."""
    overflow = " (float16 overflows past 65504: use --compute-dtype bfloat16 or float32)" \
        if compute_dtype == "float16" else ""
    what = "hidden states" if site == "hidden" else f"{site} states"
    return ActstoreError(f"the model produced inf/NaN {what} at layer {layer} in {compute_dtype} "
                         f"compute{overflow}; none of them are stored")


class PackedSites:
    """A run's sites besides the residual stream, captured by hooks during each forward pass and packed like
    ``hidden``: (site layers, real tokens, one token's shape), on the device ``hidden`` is gathered on."""

    def __init__(self, hooks, sites):
        self.hooks, self.sites = hooks, sites

    def packed(self, ids: list[list[int]], home: torch.device) -> dict[str, torch.Tensor]:
        if self.hooks is None:
            return {}
        index = real_token_index(ids).to(home, non_blocking=True)
        out = {}
        for site in self.sites:
            taken = self.hooks.take(site).to(home, non_blocking=True)  # (layers, batch, width, …)
            out[site.name] = taken.flatten(1, 2).index_select(1, index)
        return out


@contextlib.contextmanager
def site_hooks(model, keep) -> Iterator[PackedSites]:
    """Hooks on ``model`` for the sites ``keep`` stores besides ``hidden`` (none: no hooks), removed on exit."""
    if not keep.sites:
        yield PackedSites(None, ())
        return
    from .sites import SiteHooks

    with SiteHooks(model, keep.sites, keep.layers) as hooks:
        yield PackedSites(hooks, keep.sites)


def capture(model, ids: list[list[int]], pad_id: int, device: str | torch.device | None = None,
            **inputs) -> torch.Tensor:
    """Hidden states of a batch, packed, as float32 on the host: (layers, real tokens, d_model)."""
    return HostCopy(forward_states(model, ids, pad_id, device, **inputs)).result()


@torch.inference_mode()
def final_norm_applied(model, ids: list[list[int]], pad_id: int, device: str | torch.device | None = None) -> list[bool]:
    """Per layer, whether the final norm is already in the hidden state — measured, not assumed."""
    norm = final_norm(model)
    n_layers = model.config.get_text_config().num_hidden_layers + 1
    if norm is None:
        return [False] * n_layers
    seen: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, _i, output: seen.append(output))
    try:
        hidden = capture(model, ids, pad_id, device)
    finally:
        handle.remove()
    normed = seen[-1].flatten(0, 1).index_select(0, real_token_index(ids).to(seen[-1].device)).float().cpu()
    applied = [False] * (hidden.shape[0] - 1) + [bool(torch.allclose(hidden[-1], normed, rtol=1e-5, atol=1e-5))]
    return applied
