"""Forward passes of a steered model: next-token logits, and continuations on the prompts' key-value cache.

Generating on the cache (one token a step) instead of rerunning prompt + earlier tokens gives the
same tokens (benchmarks/intervention_generation.py checks it) at a fraction of the cost."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .hooks import Steering
from .parse import GREEDY
from .positions import steer_mask


def _last_logits(net, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on final states (already final-normed), with the model's logit soft-capping."""
    logits = net.get_output_embeddings()(hidden)
    cap = getattr(net.config.get_text_config(), "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits


@torch.inference_mode()
def _forward(net, ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, **inputs):
    """Next-token logits after position ``lengths − 1`` of each row, and all hidden states; ``inputs`` are a
    media batch's pixels or audio features."""
    out = net.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, **inputs)
    last = out.last_hidden_state[torch.arange(ids.shape[0]), lengths - 1]
    return _last_logits(net, last).double(), out.hidden_states


@torch.inference_mode()
def _prompt_cache(net, rows: list[list[int]], pad_id: int, hook: Steering, coefficient: float,
                  chosen: list[np.ndarray], inputs: dict):
    """The steered prompts' key-value cache, left-padded (so every row's next token sits at the same cache index
    and index distances equal position distances, as sliding-window attention assumes), and its attention mask.
    ``chosen`` are each row's steered positions, counted from its first token; ``inputs`` a media batch's."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    hook.set(coefficient, steer_mask([width - len(row) + np.asarray(c) for row, c in zip(rows, chosen)], width))
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    out = net.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **inputs)
    return out.cache, mask


def _pick(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


@dataclass(frozen=True)
class Continuation:
    """One batch's prompts as they are continued under one condition: the same for each of its samples."""

    hook: Steering
    coefficient: float
    where: str | slice  # the prompt's selection; with "all" the generated tokens are steered too
    steps: int
    lengths: torch.Tensor  # each prompt's length
    first_logits: torch.Tensor  # the recorded next-token distribution, which gives the first token
    mask: torch.Tensor | None = None  # the left-padded prompts' attention mask (None when steps is 1)
    batch_index: int = 0  # with the seed, fixes the random draws: the same in every condition


@torch.inference_mode()
def continue_prompts(net, job: Continuation, past, seed: int) -> np.ndarray:
    """``job.steps`` tokens after each prompt of a batch, one token a step on the prompts' left-padded cache ``past``.

    Token t of row i sits at cache index width + t with position id length_i + t, the pads masked out, so it sees
    exactly what an uncached rerun of prompt + earlier tokens sees. The prompt's steering is in the cache;
    with ``all`` positions each generated token is steered too. ``seed`` GREEDY decodes greedily."""
    generator = None if seed == GREEDY else torch.Generator().manual_seed(int(seed) * 1_000_003 + job.batch_index)
    n, steps, lengths = len(job.lengths), job.steps, job.lengths
    if steps == 1:
        return _pick(job.first_logits, generator)[:, None].numpy()
    width = job.mask.shape[1]
    attention = torch.cat([job.mask, torch.zeros((n, steps), dtype=job.mask.dtype)], dim=1)
    out = torch.zeros((n, steps), dtype=torch.long)
    logits = job.first_logits
    job.hook.set(job.coefficient if job.where == "all" else 0.0, torch.ones((n, 1)))
    for t in range(steps):
        chosen = _pick(logits, generator)
        out[:, t] = chosen
        if t + 1 == steps:
            break
        attention[:, width + t] = 1
        result = net.base_model(input_ids=chosen[:, None], attention_mask=attention[:, : width + t + 1],
                                position_ids=(lengths + t)[:, None], cache=past, use_cache=True)
        past = result.cache
        logits = _last_logits(net, result.last_hidden_state[:, -1]).double()
    return out.numpy()


def _generate(net, mask: torch.Tensor | None, lengths: torch.Tensor, first_logits: torch.Tensor, past,
              *steering) -> np.ndarray:
    """The earlier positional form, kept for benchmarks/intervention_generation.py: ``steering`` is hook,
    coefficient, where, steps, seed, batch_index."""
    hook, coefficient, where, steps, seed, batch_index = steering
    job = Continuation(hook, coefficient, where, steps, lengths, first_logits, mask, batch_index)
    return continue_prompts(net, job, past, seed)
