"""Putting a vector into the residual stream: forward hooks on the language model's decoder layers.

The vector for hidden-state layer l goes on the output of decoder layer l − 1 (``hidden_states[0]``
is the embeddings), and with ``onward`` on every later decoder layer's output too. At a sublayer
site (``attn_out``, ``mlp_out``) it goes on that sublayer's output in the same block, before it is
added to the residual stream (after Gemma's post-sublayer norms: the module extract/sites.py names)."""
from __future__ import annotations

import torch

from ...errors import ActstoreError
from ..sites import site_modules


def steer_state(hidden: torch.Tensor, mask: torch.Tensor, value: torch.Tensor, mode: str) -> torch.Tensor:
    """``hidden`` (batch × width × d) with ``value`` added to it, or put in its place, where ``mask`` (batch ×
    width, 0/1) is 1; ``value`` is coefficient × vector."""
    mask = mask[:, : hidden.shape[1], None]
    if mode == "replace":
        return torch.where(mask.bool(), value.to(hidden.dtype), hidden)
    return hidden + (mask * value).to(hidden.dtype)


def decoder_layers(net) -> torch.nn.ModuleList:
    """The language model's stack of decoder layers (the ModuleList as long as num_hidden_layers): a
    vision/audio-language model's is searched in its ``language_model``, never in its vision or audio tower."""
    n = net.config.get_text_config().num_hidden_layers
    language = getattr(net.base_model, "language_model", None)
    language = net.base_model if language is None else language
    direct = getattr(language, "layers", None)
    if isinstance(direct, torch.nn.ModuleList) and len(direct) == n:
        return direct
    for module in language.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ActstoreError(f"cannot find the decoder layers of {type(net).__name__}")


def steered_modules(net, site: str, layers: list[int]) -> list[torch.nn.Module]:
    """The modules whose outputs get the vector, one per steered hidden-state layer (block ``layer − 1``)."""
    if site == "resid_post":
        stack = decoder_layers(net)
        return [stack[layer - 1] for layer in layers]
    found = site_modules(net, site)
    return [found[layer - 1] for layer in layers]


def steered_layers(layer: int, n_decoder: int, onward: bool) -> list[int]:
    """The hidden-state layers that get the vector: its own, and with ``onward`` every later one through the last."""
    return list(range(layer, n_decoder + 1)) if onward else [layer]


class Steering:
    """Forward hooks on one or more decoder layers adding ``coefficient × vector`` where ``mask`` is 1 (batch ×
    width), or with mode ``replace`` putting it in place of the state there, before any other hook."""

    def __init__(self, layer_modules: torch.nn.Module | list[torch.nn.Module], vector: torch.Tensor, mode: str = "add"):
        self.modules = layer_modules if isinstance(layer_modules, list) else [layer_modules]
        self.vector, self.mode, self.value, self.mask = vector, mode, None, None

    def __enter__(self):
        # prepended: before transformers' own recorder, so the recorded hidden states show the change
        self.handles = [module.register_forward_hook(self._hook, prepend=True) for module in self.modules]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def set(self, coefficient: float, mask: torch.Tensor | None) -> None:
        """Steer the next forward passes with ``coefficient`` at ``mask``; coefficient 0 runs the model untouched."""
        self.value = None if coefficient == 0 or mask is None else coefficient * self.vector
        self.mask = mask

    def _hook(self, _module, _inputs, output):
        if self.value is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        steered = steer_state(hidden, self.mask, self.value, self.mode)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered
