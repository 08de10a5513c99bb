"""Running the model and keeping every layer's hidden state of every real token.

The base model (no LM head: its logits are not stored) runs with
``output_hidden_states``; right padding keeps each example's positions, and
padding is dropped before anything leaves this module."""
from __future__ import annotations

import torch

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


@torch.inference_mode()
def capture(model, ids: list[list[int]], pad_id: int, **inputs) -> torch.Tensor:
    """Hidden states of a batch, packed: (layers, real tokens, d_model), examples end to end.
    ``inputs`` are what a multimodal model needs beside the ids (pixel values, audio features)."""
    input_ids, mask = pad_batch(ids, pad_id)
    input_ids, mask = input_ids.to(model.device), mask.to(model.device)
    out = model.base_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False, **inputs)
    stacked = torch.stack(out.hidden_states)  # (layers, batch, seq, d_model)
    return stacked[:, mask.bool()].float().cpu()


@torch.inference_mode()
def final_norm_applied(model, ids: list[list[int]], pad_id: int) -> list[bool]:
    """Per layer, whether the final norm is already in the hidden state — measured, not assumed."""
    norm = final_norm(model)
    n_layers = model.config.get_text_config().num_hidden_layers + 1
    if norm is None:
        return [False] * n_layers
    seen: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, _i, output: seen.append(output))
    try:
        hidden = capture(model, ids, pad_id)
    finally:
        handle.remove()
    input_ids, mask = pad_batch(ids, pad_id)
    normed = seen[-1][mask.bool().to(seen[-1].device)].float().cpu()
    applied = [False] * (hidden.shape[0] - 1) + [bool(torch.allclose(hidden[-1], normed, rtol=1e-5, atol=1e-5))]
    return applied
