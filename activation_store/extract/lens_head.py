"""What the logit lens needs from a model, read off it once.

The final norm's kind and weight convention are measured by running the module
on a probe vector and matching the result against the candidate formulas —
Gemma's RMSNorm multiplies by (1 + weight), Llama's by weight — rather than
guessed from class names."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from ..errors import ActstoreError
from ..store import layout
from .capture import final_norm
from .media import media_code_ids

if TYPE_CHECKING:
    from .models import ModelPlan


def _norm_eps(norm: torch.nn.Module) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise ActstoreError(f"cannot find the epsilon of the final norm {type(norm).__name__}")


@contextmanager
def on_host(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with its weights on the CPU for a moment, also where accelerate offloaded them to disk."""
    from accelerate.utils import align_module_device

    with align_module_device(module, torch.device("cpu")):
        yield module


@contextmanager
def in_float32(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` run in float32 for a moment (a bfloat16/float16 model's weights convert back exactly)."""
    dtype = next(module.parameters()).dtype
    module.float()
    try:
        yield module
    finally:
        module.to(dtype)


@torch.inference_mode()
def describe_norm(norm: torch.nn.Module) -> dict[str, Any]:
    """``{"kind", "convention", "eps"}`` that reproduce ``norm`` on a probe vector (in float32, on the CPU)."""
    with on_host(norm), in_float32(norm):
        return _describe(norm)


def _describe(norm: torch.nn.Module) -> dict[str, Any]:
    weight = norm.weight.detach().float()
    bias = getattr(norm, "bias", None)
    bias = bias.detach().float() if isinstance(bias, torch.Tensor) else torch.zeros_like(weight)
    eps = _norm_eps(norm)
    probe = torch.randn(4, weight.shape[0], generator=torch.Generator().manual_seed(0)) * 3
    expected = norm(probe).float()
    centred = probe - probe.mean(-1, keepdim=True)
    forms = {
        ("rmsnorm", "weight"): probe * torch.rsqrt(probe.pow(2).mean(-1, keepdim=True) + eps) * weight,
        ("rmsnorm", "1+weight"): probe * torch.rsqrt(probe.pow(2).mean(-1, keepdim=True) + eps) * (1 + weight),
        ("layernorm", "weight"): centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight + bias,
    }
    for (kind, convention), value in forms.items():
        if torch.allclose(value, expected, rtol=1e-4, atol=1e-4):
            return {"kind": kind, "convention": convention, "eps": eps}
    raise ActstoreError(f"final norm {type(norm).__name__} matches no known formula; the logit lens cannot be stored")


def lens_head(model, tokenizer) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (unembedding, norm weight/bias, logit bias, vocabulary strings) and lens attributes."""
    with on_host(model.get_output_embeddings()) as output:
        unembedding = output.weight.detach().float().cpu().numpy()
        arrays: dict[str, np.ndarray] = {layout.UNEMBEDDING: unembedding}
        if getattr(output, "bias", None) is not None:
            arrays[layout.LOGIT_BIAS] = output.bias.detach().float().cpu().numpy()
    norm = final_norm(model)
    norm_attrs = None
    if norm is not None:
        norm_attrs = describe_norm(norm)
        with on_host(norm):
            arrays[layout.NORM_WEIGHT] = norm.weight.detach().float().cpu().numpy()
            if isinstance(getattr(norm, "bias", None), torch.Tensor):
                arrays[layout.NORM_BIAS] = norm.bias.detach().float().cpu().numpy()
    vocab_size = unembedding.shape[0]
    known = min(vocab_size, len(tokenizer))
    strings = tokenizer.batch_decode([[i] for i in range(known)], clean_up_tokenization_spaces=False)
    arrays[layout.VOCAB_TOKEN] = np.array(strings + [""] * (vocab_size - known), dtype=object)
    codes = media_code_ids(model)
    if codes is not None:  # ids the model masks out of its own logits (Chameleon's image codes): the lens does too
        mask = np.zeros(vocab_size, dtype=bool)
        mask[codes[codes < vocab_size]] = True
        arrays[layout.MEDIA_CODE] = mask
    config = model.config.get_text_config()
    attrs = {
        "final_norm": norm_attrs,
        "final_logit_softcapping": getattr(config, "final_logit_softcapping", None),
        "vocab_size": vocab_size,
        "d_model": int(unembedding.shape[1]),
    }
    return arrays, attrs


def model_head(net, model: ModelPlan) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``lens_head`` with the model's identity in the attributes: what a run writes under ``/<model>``."""
    arrays, attrs = lens_head(net, model.tokenizer)
    return arrays, {**attrs, "model": model.name, "model_source": model.source, "model_checksum": model.checksum,
                    "architecture": type(net).__name__, "n_layers": model.n_layers}
