"""The grammar of ``--sites``, without a model: named sites, module paths, TransformerLens hook names.

The CLI checks a request here before anything heavy is imported (nothing here
imports torch); ``sites.py`` resolves it against the loaded model. The layer
convention is the run's: layer 0 is the embeddings and layer l the residual
stream after block l-1, so a block's sites are stored at layer ``block + 1``
and ``resid_post[l] = resid_post[l-1] + attn_out[l] + mlp_out[l]``. The table
of names, per architecture family, is docs/guide/sites.md."""
from __future__ import annotations

import re
from typing import Any, Sequence

from ..errors import ActstoreError

RESIDUAL = "resid_post"
NAMED: dict[str, str] = {  # name -> what it is (the one table the docs and the errors quote)
    "resid_post": "the residual stream after each block (layer 0: the embeddings); stored as hidden",
    "resid_mid": "the residual stream between attention and MLP (the pre-MLP norm's input)",
    "attn_out": "what the attention sublayer adds to the residual stream (after any post-attention norm)",
    "mlp_out": "what the MLP sublayer adds to the residual stream (after any post-MLP norm)",
    "mlp_in": "the MLP's input (after the pre-MLP norm): what transcoders read",
    "z": "each head's attention output before the output projection (heads × d_head)",
}
RESIDUAL_BASIS = ("resid_post", "resid_mid", "attn_out", "mlp_out")
# TransformerLens hook (after ``blocks.<b>.``) -> (site, layer offset from the block index)
TL_HOOKS: dict[str, tuple[str, int]] = {
    "hook_resid_pre": ("resid_post", 0), "hook_resid_post": ("resid_post", 1), "hook_resid_mid": ("resid_mid", 1),
    "hook_mlp_in": ("resid_mid", 1), "hook_attn_out": ("attn_out", 1), "hook_mlp_out": ("mlp_out", 1),
    "ln2.hook_normalized": ("mlp_in", 1), "attn.hook_z": ("z", 1),
}
_TL = re.compile(r"^blocks\.(\d+|\*)\.(" + "|".join(re.escape(k) for k in TL_HOOKS) + r")$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_]+$")
IOS = ("input", "output")
BLOCK = "block"  # the name of a module-path site on the block itself: ``model.layers.*:input`` -> ``block:input``
EXAMPLES = "a module path with * for the block index (model.layers.*.mlp.down_proj:input)"


def tl_site(request: str) -> tuple[str, int | None] | None:
    """``(site, layer)`` of a TransformerLens hook name (layer None for ``blocks.*``), else None."""
    match = _TL.match(request)
    if match is None:
        return None
    block, hook = match.groups()
    site, offset = TL_HOOKS[hook]
    return site, None if block == "*" else int(block) + offset


def module_request(request: str) -> tuple[str, str] | None:
    """``(path pattern, io)`` of a module-path request (``model.layers.*.mlp.down_proj:input``), else None."""
    if request in NAMED or tl_site(request) is not None:
        return None
    path, _, io = request.partition(":")
    return path, io or "output"


def site_name(request: str) -> str:
    """The site (and array) name a request stores: a named site, or ``<path after the block index>:<io>``
    (``block:<io>`` for the block itself)."""
    if request in NAMED:
        return request
    tl = tl_site(request)
    if tl is not None:
        return tl[0]
    path, io = module_request(request)
    after = path.split("*", 1)[1].lstrip(".")
    return f"{after or BLOCK}:{io}"


def _unknown(request: str) -> ActstoreError:
    hooks = ", ".join(f"blocks.<N|*>.{hook}" for hook in TL_HOOKS)
    return ActstoreError(f"unknown site {request!r}; choose from {', '.join(NAMED)}, {EXAMPLES}, or a "
                         f"TransformerLens hook name ({hooks})")


def _check(request: str) -> str:
    """The canonical form of one request (module paths get their ``:output``), or a one-line refusal."""
    if request in NAMED or tl_site(request) is not None:
        return request
    if request.startswith("blocks.") or ("." not in request and ":" not in request):
        raise _unknown(request)
    path, io = module_request(request)
    if io not in IOS:
        raise ActstoreError(f"site {request!r}: a module path ends in :input or :output, not :{io}")
    parts = path.split(".")
    if parts.count("*") != 1 or parts[0] == "*" or not all(p == "*" or _COMPONENT.match(p) for p in parts):
        raise ActstoreError(f"site {request!r}: a module path names the block index with one * between dots "
                            f"(e.g. model.layers.*.mlp.down_proj), as in model.named_modules()")
    return f"{path}:{io}"


def parse_sites(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Every request of ``--sites`` (comma-separated, or a list), checked and in canonical form, duplicates
    dropped, in order: syntax only, no model (the CLI calls it before loading anything)."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    if not parts or not all(parts):
        raise ActstoreError(f"--sites has an empty name: {spec!r}; choose from {', '.join(NAMED)}, {EXAMPLES}, "
                            f"or a TransformerLens hook name")
    return tuple(dict.fromkeys(_check(p) for p in parts))


def site_requests(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The requests of ``--sites`` besides ``resid_post`` (always stored, as ``hidden``); None when nothing
    else is asked for. TransformerLens names of the residual stream are kept: they name layers."""
    if spec is None:
        return None
    requests = tuple(r for r in parse_sites(spec) if r != RESIDUAL)
    return requests or None


def implied_layers(requests: Sequence[str] | None) -> tuple[int, ...] | None:
    """The layers TransformerLens names with block indices name (``blocks.5.hook_mlp_out``: layer 6), when
    every request has one; None (all layers) otherwise."""
    layers = []
    for request in requests or ():
        tl = tl_site(request)
        if tl is None or tl[1] is None:
            return None
        layers.append(tl[1])
    return tuple(sorted(set(layers))) or None


def site_first_layer(request: str) -> int:
    """0 for the residual stream (the embeddings are layer 0), 1 for a block's sites."""
    return 0 if site_name(request) == RESIDUAL else 1


def site_width(config: Any, request: str) -> tuple[int, ...] | None:
    """One token's shape from the model's config, for ``--dry-run``; None for a module path (known once loaded).
    ``resolve_sites`` measures the same shape on the loaded model."""
    name = site_name(request)
    if name not in NAMED:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
    if name != "z":
        return (int(hidden),)
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
    head_dim = getattr(text, "head_dim", None) or int(hidden) // int(heads)
    return int(heads), int(head_dim)
