"""Tokenizing a dataset into the packed token layout of the store.

All examples' tokens lie end to end (no padding) along one ``token`` axis; each
example knows its offset and length. BOS is prepended explicitly, so the
setting means the same for every tokenizer. A dataset's annotations (reading
positions given as character offsets) become the per-token ``target`` and
``alternatives`` coordinates through the tokenizer's offset mapping, each word
spelled as its first token's vocabulary string (what the logit lens reads)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import ActstoreError
from .datasets import Example


@dataclass
class TokenLayout:
    examples: list[Example]
    ids: list[list[int]]
    inputs: list[str]
    targets: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # global token -> (target, alts)

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.ids], dtype=np.int32)

    @property
    def offsets(self) -> np.ndarray:
        counts = self.counts.astype(np.int64)
        return np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    def token_coords(self) -> dict[str, np.ndarray]:
        counts = self.counts
        coords = {
            "token_id": np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32),
            "token_example": np.repeat(np.arange(len(counts), dtype=np.int32), counts),
            "position": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]) if len(counts) else np.zeros(0, np.int32),
            "modality": np.array(["text"] * int(counts.sum()), dtype=object),
        }
        if self.targets:  # only annotated datasets carry these, so other runs are unchanged
            target, alternatives = np.full(self.n_tokens, "", dtype=object), np.full(self.n_tokens, "", dtype=object)
            for token, (word, others) in self.targets.items():
                target[token], alternatives[token] = word, json.dumps(list(others), ensure_ascii=False)
            coords.update(target=target, alternatives=alternatives)
        return coords

    def model_inputs(self, start: int, stop: int) -> dict:
        """Inputs the model needs beside the ids of examples [start, stop) (media layouts add pixels, audio)."""
        return {}

    def example_coords(self) -> dict[str, np.ndarray]:
        return {
            "item": np.array([e.item for e in self.examples], dtype=object),
            "variant": np.array([e.variant for e in self.examples], dtype=object),
            "text": np.array(self.inputs, dtype=object),
            "token_offset": self.offsets,
            "token_count": self.counts,
        }


def tokenize(tokenizer, examples: list[Example], bos: bool = True, suffixes: dict[str, str] | None = None) -> TokenLayout:
    """Token ids per example: optional BOS, then the text with its variant's suffix."""
    suffixes = suffixes or {}
    inputs = [e.text + suffixes.get(e.variant, "") for e in examples]
    annotated = any(e.annotations for e in examples)
    if annotated and not getattr(tokenizer, "is_fast", False):
        raise ActstoreError(f"this dataset marks reading positions, which need a fast tokenizer's offset mapping; "
                            f"{type(tokenizer).__name__} has none")
    encoded = tokenizer(inputs, add_special_tokens=False, return_offsets_mapping=annotated)
    prefix = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
    ids = [prefix + list(row) for row in encoded["input_ids"]]
    empty = [e for e, row in zip(examples, ids) if not row]
    if empty:
        raise ActstoreError(f"example {empty[0].item!r} ({empty[0].variant}) has no tokens")
    layout = TokenLayout(examples, ids, inputs)
    if annotated:
        layout.targets = _targets(tokenizer, examples, ids, encoded["offset_mapping"], len(prefix), layout.offsets)
    return layout


def _targets(tokenizer, examples, ids, offset_mapping, n_prefix: int, starts) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Global token index -> (target, alternatives) for every annotation that lands on a token ending at its
    character; an alternative spelled like the target (same first token) is dropped, and so is an annotation
    left with none of the alternatives it had."""
    first: dict[str, str] = {}

    def spell(word: str) -> str:
        if word not in first:
            word_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            first[word] = tokenizer.decode(word_ids[:1], clean_up_tokenization_spaces=False) if word_ids else ""
        return first[word]

    out: dict[int, tuple[str, tuple[str, ...]]] = {}
    for number, (example, offsets) in enumerate(zip(examples, offset_mapping)):
        for mark in example.annotations:
            hits = [i for i, (start, end) in enumerate(offsets) if start <= mark.char < end]
            if not hits or offsets[hits[-1]][1] != mark.char + 1:
                continue  # the token holding the character goes on past it (merged with what follows)
            position = hits[-1]
            if mark.token is not None:
                piece = tokenizer.decode([ids[number][n_prefix + position]], clean_up_tokenization_spaces=False)
                if piece.strip() != mark.token:
                    continue
            target = spell(mark.target)
            others = tuple(dict.fromkeys(a for a in map(spell, mark.alternatives) if a and a != target))
            if not target or (mark.alternatives and not others):
                continue
            out.setdefault(int(starts[number]) + n_prefix + position, (target, others))
    return out
