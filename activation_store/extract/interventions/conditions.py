"""The recording loop: every condition (coefficient) over every batch, one block of arrays per condition.

What all conditions share travels in one ``Recording``; what one condition fills in, in a ``_Block``.
The baseline (coefficient 0) runs first, exactly as a plain extraction (same batches, padding,
no hook), and fixes the *support*: the ids whose log-probs every condition records."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ...store import Store
from ...store.steering import SteeringVector
from ..capture import pad_batch
from ..models import ModelPlan
from ..progress import progress_bar
from ..spec import RunSpec
from ..tokens import TokenLayout
from .generate import Continuation, _forward, _prompt_cache, continue_prompts
from .hooks import Steering, steered_layers, steered_modules
from .parse import InterventionSpec
from .positions import steer_mask

Arrays = dict[str, tuple[tuple[str, ...], np.ndarray]]  # name → (dims, values), as the store writes them
BLOCK_DIMS = {  # one condition's arrays (the baseline's block also holds the support)
    "support_id": ("example", "support"),
    "logprob": ("example", "support"),
    "top_id": ("example", "rank"),
    "top_logprob": ("example", "rank"),
    "target_logprob": ("example", "target"),
    "generated_id": ("sample", "example", "step"),
    "states": ("layer", "token", "d_model"),
}


@dataclass(frozen=True, eq=False)
class Recording:
    """One recorded intervention, prepared: the run, the loaded model and vector, where it is written, the tokens
    and what is recorded of them. The one context every step takes, instead of a dozen parameters each."""

    spec: RunSpec
    steering: InterventionSpec
    data: Any  # the loaded dataset
    model: ModelPlan
    net: Any  # the loaded weights
    steer: SteeringVector
    target: Store
    path: str  # the recorded group's path in the store
    head: tuple[dict, dict]  # the lens head's arrays and attributes
    tokens: TokenLayout
    wanted: list[str]  # the target token strings
    target_ids: list[int]
    layers: list[int]  # hidden-state layers whose states are recorded
    selected: list[np.ndarray]  # each example's steered prompt positions

    @property
    def k(self) -> int:
        """Each condition's own top-k."""
        return min(self.steering.top_k, self.net.get_output_embeddings().weight.shape[0])

    @property
    def width(self) -> int:
        """Ids in the support: targets + top-k × conditions, at most the vocabulary."""
        vocab_size = self.net.get_output_embeddings().weight.shape[0]
        return min(vocab_size, len(set(self.target_ids)) + self.k * len(self.steering.coefficients))


@dataclass
class _Block:
    """One condition being computed: its coefficient, its arrays being filled, and the support."""

    coefficient: float
    baseline: bool  # the baseline fills ``support_id``; the others read it
    support_id: np.ndarray
    arrays: dict[str, np.ndarray]


def steer_width(net) -> int:
    return net.get_output_embeddings().weight.shape[1]


def _support(target_ids: list[int], baseline_order: np.ndarray, width: int) -> np.ndarray:
    """Targets, then the baseline's ranks, to ``width`` ids (fixed before any steered condition runs, so each
    condition can be written as soon as it is done)."""
    chosen = dict.fromkeys(target_ids)
    for i in baseline_order:
        if len(chosen) >= width:
            break
        chosen.setdefault(int(i))
    return np.array(list(chosen)[:width], dtype=np.int64)


def run_conditions(rec: Recording, resume: dict[int, dict[str, np.ndarray]],
                   save: Callable[[int, Arrays], None]) -> Arrays:
    """Every condition (the baseline first: it fixes the support) over every batch: the recorded arrays, by name.

    Each condition is one block: taken from ``resume`` when an interrupted run finished it, else computed
    and handed to ``save`` at once."""
    coefficients, n_ex = rec.steering.coefficients, len(rec.tokens.ids)
    blocks, support_id = [], None
    hooked = steered_modules(rec.net, rec.steering.site,
                             steered_layers(rec.steer.layer, rec.model.n_decoder_layers, rec.steering.onward))
    with Steering(hooked, torch.from_numpy(rec.steer.vector).float(), rec.steering.mode) as hook, \
            progress_bar(len(coefficients) * n_ex, unit="ex", desc="intervene", enabled=rec.spec.progress) as bar:
        for c, coefficient in enumerate(coefficients):
            block = resume.get(c)
            if block is None:
                block = _condition(rec, hook, coefficient, support_id, bar)
                save(c, {name: (dims, block[name]) for name, dims in BLOCK_DIMS.items() if name in block})
            else:
                bar.update(n_ex)
            support_id = block["support_id"] if c == 0 else support_id
            blocks.append(block)
    return _assemble(rec, blocks, support_id)


def _assemble(rec: Recording, blocks: list[dict[str, np.ndarray]], support_id: np.ndarray) -> Arrays:
    """The condition blocks stacked along ``condition``, and the continuations decoded to text."""
    generated = np.stack([b["generated_id"] for b in blocks])
    eos, tokenizer = rec.model.tokenizer.eos_token_id, rec.model.tokenizer
    texts = np.empty(generated.shape[:3], dtype=object)
    for index in np.ndindex(*texts.shape):
        row = generated[index].tolist()
        row = row[: row.index(eos)] if eos in row else row
        texts[index] = tokenizer.decode(row, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    out = {"support_id": (("example", "support"), support_id)}
    for name, dims in BLOCK_DIMS.items():
        if name != "support_id":
            out[name] = (("condition", *dims), np.stack([b[name] for b in blocks]))
    out["generated_text"] = (("condition", "sample", "example"), texts)
    return out


def _condition(rec: Recording, hook: Steering, coefficient: float, support_id: np.ndarray | None,
               bar: Any) -> dict[str, np.ndarray]:
    """One condition over every batch. ``support_id`` None: this is the baseline, whose ranks make the support."""
    n_ex, width, k, steering = len(rec.tokens.ids), rec.width, rec.k, rec.steering
    baseline = support_id is None
    arrays = {
        "logprob": np.zeros((n_ex, width), np.float32), "top_id": np.zeros((n_ex, k), np.int64),
        "top_logprob": np.zeros((n_ex, k), np.float32),
        "target_logprob": np.zeros((n_ex, len(rec.target_ids)), np.float32),
        "generated_id": np.zeros((len(steering.samples), n_ex, steering.generate), np.int64),
        "states": np.zeros((len(rec.layers), rec.tokens.n_tokens, steer_width(rec.net)), np.float32),
    }
    block = _Block(coefficient, baseline, np.zeros((n_ex, width), np.int64) if baseline else support_id, arrays)
    token_start = 0
    for start in range(0, n_ex, rec.spec.batch_size):
        token_start += _batch(rec, hook, block, start, token_start)
        bar.update(min(n_ex, start + rec.spec.batch_size) - start)
    if baseline:
        arrays["support_id"] = block.support_id
    return arrays


def _batch(rec: Recording, hook: Steering, block: _Block, start: int, token_start: int) -> int:
    """One batch of one condition into ``block``: states, next-token log-probs, continuations; its token count."""
    rows = rec.tokens.ids[start:start + rec.spec.batch_size]
    stop = start + len(rows)
    lengths = torch.tensor([len(r) for r in rows])
    ids, mask = pad_batch(rows, rec.model.pad_id)
    chosen = rec.selected[start:stop]
    inputs = rec.tokens.model_inputs(start, stop)  # a media batch's pixels / audio features
    hook.set(block.coefficient, steer_mask(chosen, ids.shape[1]))
    logits, states = _forward(rec.net, ids, mask, lengths, **inputs)
    real = mask.bool()
    n_real = int(real.sum())
    for j, layer_index in enumerate(rec.layers):
        block.arrays["states"][j, token_start:token_start + n_real] = states[layer_index][real].float().numpy()
    _next_token(rec, block, logits, start, stop)
    samples, steps = rec.steering.samples, rec.steering.generate
    if samples:
        past, left_mask = (_prompt_cache(rec.net, rows, rec.model.pad_id, hook, block.coefficient, chosen, inputs)
                           if steps > 1 else (None, None))
        job = Continuation(hook, block.coefficient, rec.steering.where, steps, lengths, logits, left_mask,
                           start // rec.spec.batch_size)
        for s, seed in enumerate(samples):  # each sample extends its own copy of the cache
            cache = None if steps == 1 else past if s + 1 == len(samples) else copy.deepcopy(past)
            block.arrays["generated_id"][s, start:stop] = continue_prompts(rec.net, job, cache, seed)
    return n_real


def _next_token(rec: Recording, block: _Block, logits: torch.Tensor, start: int, stop: int) -> None:
    """Rows [start, stop) of the next-token arrays: top-k, targets, and the support (which the baseline fixes)."""
    logp = torch.log_softmax(logits, dim=-1)
    out, k, width = block.arrays, rec.k, rec.width
    order = torch.sort(logp, dim=-1, descending=True, stable=True).indices
    out["top_id"][start:stop] = order[:, :k].numpy()
    out["top_logprob"][start:stop] = torch.gather(logp, 1, order[:, :k]).numpy()
    if rec.target_ids:
        out["target_logprob"][start:stop] = logp[:, rec.target_ids].numpy()
    if block.baseline:
        for i in range(stop - start):
            block.support_id[start + i] = _support(rec.target_ids, order[i, :width].numpy(), width)
    out["logprob"][start:stop] = torch.gather(logp, 1, torch.from_numpy(block.support_id[start:stop])).numpy()
