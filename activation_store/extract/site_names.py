"""The grammar of ``--sites``, without a model: named sites, module paths, TransformerLens hook names.

The CLI checks a request here before anything heavy is imported; ``sites.py``
resolves it against the loaded model. The layer convention is the run's: layer
0 is the embeddings and layer l the residual stream after block l-1, so a
block's sites are stored at layer ``block + 1`` and
``resid_post[l] = resid_post[l-1] + attn_out[l] + mlp_out[l]``. The table of
names, per architecture family, is docs/guide/sites.md."""
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
    "hook_attn_out": ("attn_out", 1), "hook_mlp_out": ("mlp_out", 1), "ln2.hook_normalized": ("mlp_in", 1),
    "attn.hook_z": ("z", 1),
}
_TL = re.compile(r"^blocks\.(\d+|\*)\.(" + "|".join(re.escape(k) for k in TL_HOOKS) + r")$")
IOS = ("input", "output")


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
    """The site (and array) name a request stores: a named site, or ``<path after the block index>:<io>``."""
    if request in NAMED:
        return request
    tl = tl_site(request)
    if tl is not None:
        return tl[0]
    path, io = module_request(request)
    return f"{path.split('*.', 1)[1]}:{io}"


def _check(request: str) -> str:
    if request in NAMED or tl_site(request) is not None:
        return request
    if request.startswith("blocks."):
        raise ActstoreError(f"unknown TransformerLens hook {request!r}; actstore maps blocks.<N|*>."
                            f"{{{','.join(TL_HOOKS)}}}")
    if "." not in request and ":" not in request:
        raise ActstoreError(f"unknown site {request!r}; choose from {', '.join(NAMED)}, a module path such as "
                            f"model.layers.*.mlp.down_proj:input, or a TransformerLens hook name such as "
                            f"blocks.5.hook_mlp_out")
    path, io = module_request(request)
    if io not in IOS:
        raise ActstoreError(f"site {request!r}: a module path ends in :input or :output, not :{io}")
    if path.count("*") != 1 or "*." not in path:
        raise ActstoreError(f"site {request!r}: a module path names its block with one *, "
                            f"e.g. model.layers.*.mlp.down_proj")
    return f"{path}:{io}"


def site_requests(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The requests of ``--sites`` (comma-separated, or a list), checked and in canonical form, the residual
    stream left out (it is always stored); None when nothing else is asked for."""
    if spec is None:
        return None
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    if not all(parts):
        raise ActstoreError(f"--sites has an empty name: {spec!r}")
    requests = tuple(dict.fromkeys(_check(p) for p in parts if p != RESIDUAL))
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
    """One token's shape from the model's config, for ``--dry-run``; None for a module path (known once loaded)."""
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
