"""Tokenizing a dataset into the packed token layout of the store.

All examples' tokens lie end to end (no padding) along one ``token`` axis; each
example knows its offset and length. BOS is prepended explicitly, so the
setting means the same for every tokenizer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ActstoreError
from .datasets import Example


@dataclass
class TokenLayout:
    examples: list[Example]
    ids: list[list[int]]
    inputs: list[str]

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
        return {
            "token_id": np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32),
            "token_example": np.repeat(np.arange(len(counts), dtype=np.int32), counts),
            "position": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]) if len(counts) else np.zeros(0, np.int32),
            "modality": np.array(["text"] * int(counts.sum()), dtype=object),
        }

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
    encoded = tokenizer(inputs, add_special_tokens=False)["input_ids"]
    prefix = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
    ids = [prefix + list(row) for row in encoded]
    empty = [e for e, row in zip(examples, ids) if not row]
    if empty:
        raise ActstoreError(f"example {empty[0].item!r} ({empty[0].variant}) has no tokens")
    return TokenLayout(examples, ids, inputs)
