"""Sites of a loaded model: which module each requested site is, per block, and hooks that capture them.

A named site is found by the modules a block has, not by its class name, so
one rule serves each family: pre-norm blocks (Llama, Qwen, Mistral, Gemma 1,
Chameleon, GPT-2: attention and MLP outputs are added as they are) and
post-norm blocks (Gemma 2 and 3: ``post_attention_layernorm`` and
``post_feedforward_layernorm`` scale each sublayer's output before it is
added, so those norms' outputs are ``attn_out`` and ``mlp_out``). The blocks
are those of the language model (a multimodal model's vision or audio tower is
never taken): the list beside the model's final norm. Every site is captured
in the forward pass that computes the residual stream; grammar: site_names.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ActstoreError
from .capture import FINAL_NORM_NAMES, final_norm
from .site_names import NAMED, RESIDUAL, RESIDUAL_BASIS, module_request, site_name, tl_site

ATTENTION = ("self_attn", "attn", "attention", "self_attention")
MLP = ("mlp", "feed_forward", "ffn")
PRE_MLP_NORM = ("post_attention_layernorm", "ln_2", "ln2")  # in pre-norm blocks: the MLP's input norm
OUT_PROJ = ("o_proj", "c_proj", "out_proj", "dense", "wo")


@dataclass(frozen=True)
class Site:
    """One site resolved against a model: small and picklable (it travels in fill tasks and into provenance)."""

    name: str                   # array name: a named site, or "<path after the block index>:<io>"
    module: str                 # module path with * for the block index
    io: str                     # "input" | "output"
    per_token: tuple[int, ...]  # one token's shape, measured: (width,) or (heads, d_head)
    residual_basis: bool        # readable by the logit lens
    first_layer: int = 1        # block sites: no layer 0
    heads: int | None = None    # z: the flat output-projection input is split into this many heads
    request: str = ""           # as asked for (canonical): what the hooks resolve again on a worker

    def provenance(self) -> dict[str, Any]:
        """What a store read years later says of the site."""
        return {"module": self.module, "io": self.io, "residual_basis": self.residual_basis}


def blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The language model's decoder blocks and their path: the ModuleList beside the final norm."""
    norm = final_norm(model)
    n_blocks = model.config.get_text_config().num_hidden_layers
    for path, module in model.named_modules():
        if norm is None or not any(getattr(module, name, None) is norm for name in FINAL_NORM_NAMES):
            continue
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n_blocks:
                return (f"{path}.{name}" if path else name), child
    raise ActstoreError(f"cannot find the decoder blocks of {type(model).__name__} (no list of {n_blocks} blocks "
                        f"beside its final norm); capture its sites by module path")


def _child(block: torch.nn.Module, names: Sequence[str]) -> str | None:
    return next((name for name in names if isinstance(getattr(block, name, None), torch.nn.Module)), None)


def named_module(block: torch.nn.Module, site: str) -> tuple[str, str] | None:
    """``(path inside the block, io)`` of a named site, or None when the block has no such module."""
    attention, mlp = _child(block, ATTENTION), _child(block, MLP)
    post_norm = _child(block, ("pre_feedforward_layernorm",)) and _child(block, ("post_feedforward_layernorm",))
    if site == "attn_out":
        return ("post_attention_layernorm", "output") if post_norm else (attention and (attention, "output"))
    if site == "mlp_out":
        return ("post_feedforward_layernorm", "output") if post_norm else (mlp and (mlp, "output"))
    if site == "mlp_in":
        return mlp and (mlp, "input")
    if site == "resid_mid":
        norm = "pre_feedforward_layernorm" if post_norm else _child(block, PRE_MLP_NORM)
        return norm and (norm, "input")
    if site == "z" and attention:
        out = _child(getattr(block, attention), OUT_PROJ)
        return out and (f"{attention}.{out}", "input")
    return None


def _targets(model: torch.nn.Module, request: str) -> tuple[str, str, dict[int, torch.nn.Module]]:
    """``(pattern, io, {block index: module})`` a request names; a site the model lacks is one line."""
    prefix, layers = blocks(model)
    name = site_name(request)
    if name in NAMED:
        found = named_module(layers[0], name)
        if found is None:
            raise ActstoreError(f"{type(model).__name__} has no {name} ({NAMED[name]}): its blocks have "
                                f"{', '.join(n for n, _ in layers[0].named_children())}; name a module path instead")
        relative, io = found
        return f"{prefix}.*.{relative}", io, {b: block.get_submodule(relative) for b, block in enumerate(layers)}
    pattern, io = module_request(request)
    regex = re.compile("^" + re.escape(pattern).replace(r"\*", r"(\d+)") + "$")
    matched = {int(m.group(1)): module for path, module in model.named_modules() if (m := regex.match(path))}
    if not matched:
        inside = [n for n, _ in layers[0].named_modules() if n][:16]
        raise ActstoreError(f"site {request!r} matches no module of {type(model).__name__}; its blocks are "
                            f"{prefix}.*, holding {', '.join(inside)}")
    if sorted(matched) != list(range(len(layers))):
        raise ActstoreError(f"site {request!r} matches blocks {sorted(matched)} of {len(layers)}; a site covers "
                            f"every block")
    return pattern, io, matched


def site_modules(model: torch.nn.Module, request: str) -> dict[int, torch.nn.Module]:
    """Each block's module of a site (block index → module): where a hook on that site goes."""
    return _targets(model, request)[2]


def resolve_sites(model: torch.nn.Module, requests: Sequence[str]) -> tuple[tuple[Site, ...], tuple[int, ...] | None]:
    """The requested sites (the residual stream left out: it is always stored) with their shapes measured by
    one two-token forward, and the layers TransformerLens names with a block index name (None: all)."""
    sites, layers = {}, []
    for request in requests:
        name = site_name(request)
        tl = tl_site(request)
        if tl is not None and tl[1] is not None:
            layers.append(tl[1])
        if name == RESIDUAL or name in sites:
            continue
        pattern, io, _ = _targets(model, request)
        sites[name] = (request, Site(name, pattern, io, (), name in RESIDUAL_BASIS))
    shapes = _measure(model, [request for request, _ in sites.values()])
    resolved = []
    for (request, site), shape in zip(sites.values(), shapes):
        heads = None
        if site.name == "z":
            text = model.config.get_text_config()
            heads = int(getattr(text, "num_attention_heads", None) or text.n_head)
            shape = (heads, shape[-1] // heads)
        resolved.append(Site(site.name, site.module, site.io, tuple(shape), site.residual_basis, heads=heads,
                             request=request))
    return tuple(resolved), (tuple(sorted(set(layers))) if layers else None)


@torch.inference_mode()
def _measure(model: torch.nn.Module, requests: Sequence[str]) -> list[tuple[int, ...]]:
    """One token's shape at each requested site, from a two-token forward through block 0."""
    if not requests:
        return []
    seen: dict[int, tuple[int, ...]] = {}
    handles = []
    for i, request in enumerate(requests):
        _, io, modules = _targets(model, request)
        handles.append(_hook(modules[0], io, lambda t, i=i: seen.__setitem__(i, tuple(t.shape[2:]))))
    try:
        device = next(model.parameters()).device
        model.base_model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(requests))]


def _hook(module: torch.nn.Module, io: str, keep) -> Any:
    """A hook handing ``keep`` the module's first output (``io="output"``) or its hidden-states input."""
    if io == "output":
        return module.register_forward_hook(lambda m, a, out: keep(out[0] if isinstance(out, tuple) else out))

    def before(m, args, kwargs):
        keep(args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()))))

    return module.register_forward_pre_hook(before, with_kwargs=True)


class SiteHooks:
    """Hooks for ``sites`` at the kept ``layers`` (block sites at block ``layer - 1``), removed on exit. Each
    forward pass fills them; ``take(site)`` gives (site layers, batch, seq, one token's shape) and clears it."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[Site], layers: Sequence[int]):
        self.model, self.sites = model, tuple(sites)
        self.layers = {site.name: [layer for layer in layers if layer >= site.first_layer] for site in self.sites}
        self.seen: dict[tuple[str, int], torch.Tensor] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> SiteHooks:
        try:
            for site in self.sites:
                _, io, modules = _targets(self.model, site.request)
                for layer in self.layers[site.name]:
                    self.handles.append(_hook(modules[layer - 1], io,
                                              lambda t, key=(site.name, layer): self.seen.__setitem__(key, t.detach())))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.seen.clear()

    def take(self, site: Site) -> torch.Tensor:
        """The site's states of the last forward pass, stacked over its layers (on the first one's device)."""
        parts = [self.seen.pop((site.name, layer)) for layer in self.layers[site.name]]
        stacked = torch.stack([p.to(parts[0].device, non_blocking=True) for p in parts])
        return stacked.unflatten(-1, (site.heads, -1)) if site.heads else stacked
