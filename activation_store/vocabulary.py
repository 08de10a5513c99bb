"""Vocabulary strings to token ids, from the vocabulary stored with a model's lens head.

Shared by extraction (which records target tokens) and analysis (which reads them),
so it imports neither: only numpy."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ActstoreError


def vocabulary_index(vocab: Iterable) -> dict[str, int]:
    """Each vocabulary string's first token id (a few tokenizers spell two ids alike)."""
    index: dict[str, int] = {}
    for i, token in enumerate(vocab):
        index.setdefault(str(token), i)
    return index


def token_ids(vocab: Iterable | dict[str, int], strings: Sequence[str]) -> np.ndarray:
    """Token ids of exact vocabulary strings (e.g. " sofa", "8"); a missing one is one error naming it.

    ``vocab`` is the stored ``vocab_token`` array, or an index from ``vocabulary_index`` when
    looking up many times."""
    index = vocab if isinstance(vocab, dict) else vocabulary_index(vocab)
    missing = [s for s in strings if s not in index]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ActstoreError(f"the vocabulary has no token {missing[0]!r}{more}")
    return np.array([index[s] for s in strings], dtype=np.int64)
