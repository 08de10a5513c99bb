"""The dataset registry: built-in sets by name, or a user's file by path."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...errors import ActstoreError
from .arithmetic import arithmetic
from .base import Dataset, Example
from .files import from_file
from .media import colors, colors_split, spoken_words
from .multilingual import django_ui

BUILTIN: dict[str, Callable[[], Dataset]] = {
    "django-ui": django_ui,
    "arithmetic": arithmetic,
    "colors": colors,
    "colors-split": colors_split,
    "spoken-words": spoken_words,
}
DEFAULT_DATASET = "django-ui"

__all__ = ["BUILTIN", "DEFAULT_DATASET", "Dataset", "Example", "load_dataset"]


def load_dataset(name: str = DEFAULT_DATASET, variants: list[str] | None = None, limit: int | None = None) -> Dataset:
    """A dataset by built-in name or file path, restricted to ``variants`` and the first ``limit`` items."""
    if name in BUILTIN:
        dataset = BUILTIN[name]()
    elif Path(name).suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv") or Path(name).exists():
        dataset = from_file(Path(name))
    else:
        raise ActstoreError(f"unknown dataset {name!r}; built in: {', '.join(BUILTIN)}, or a .jsonl/.csv/.tsv file")
    if variants:
        unknown = [v for v in variants if v not in dataset.variants]
        if unknown:
            raise ActstoreError(f"dataset {dataset.name!r} has no variant {', '.join(map(repr, unknown))}; it has {', '.join(dataset.variants)}")
        dataset.variants = tuple(variants)
        dataset.items = [(i, {v: t[v] for v in variants if v in t}) for i, t in dataset.items]
        dataset.items = [(i, t) for i, t in dataset.items if t]
    if limit is not None:
        if limit < 1:
            raise ActstoreError(f"--limit must be at least 1, got {limit}")
        dataset.items = dataset.items[:limit]
    if not dataset.examples():
        raise ActstoreError(f"dataset {dataset.name!r} has no examples")
    return dataset
