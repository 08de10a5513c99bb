"""The dataset registry: built-in sets by name, a user's file by path, or ``hf:NAME[:CONFIG][:SPLIT]``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...errors import ActstoreError
from .arithmetic import arithmetic
from .base import Annotation, Dataset, Example
from .code import from_path as code_from_path
from .code import humaneval
from .files import from_file
from .media import colors, colors_split, spoken_words
from .huggingface import PREFIX as HF_PREFIX
from .huggingface import from_huggingface
from .multilingual import django_ui
from .semantics import semantics
from .sentiment import sentiment_es, sentiment_zh

BUILTIN: dict[str, Callable[[], Dataset]] = {
    "django-ui": django_ui,
    "arithmetic": arithmetic,
    "code": humaneval,
    "semantics": semantics,
    "sentiment-zh": sentiment_zh,
    "sentiment-es": sentiment_es,
    "colors": colors,
    "colors-split": colors_split,
    "spoken-words": spoken_words,
}
CODE_PREFIX = "code:"  # code:PATH — a user's .py file or folder, annotated like the built-in code set
DEFAULT_DATASET = "django-ui"

__all__ = ["BUILTIN", "DEFAULT_DATASET", "Annotation", "Dataset", "Example", "load_dataset"]


def load_dataset(name: str = DEFAULT_DATASET, variants: list[str] | None = None, limit: int | None = None,
                 columns: dict[str, str] | None = None, id_column: str | None = None) -> Dataset:
    """A dataset by built-in name, file path or ``hf:`` spec, restricted to ``variants`` and the first ``limit``
    items; ``columns`` (variant → column) and ``id_column`` apply to ``hf:`` datasets."""
    if name.startswith(HF_PREFIX):
        dataset = from_huggingface(name, columns, id_column)
    elif columns or id_column:
        raise ActstoreError("--columns and --id-column apply to Hugging Face datasets (--dataset hf:NAME) only")
    elif name in BUILTIN:
        dataset = BUILTIN[name]()
    elif name.startswith(CODE_PREFIX):
        dataset = code_from_path(name[len(CODE_PREFIX):])
    elif Path(name).suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv") or Path(name).exists():
        dataset = from_file(Path(name))
    else:
        raise ActstoreError(f"unknown dataset {name!r}; built in: {', '.join(BUILTIN)}, a .jsonl/.csv/.tsv file, "
                            f"code:PATH or hf:NAME[:CONFIG][:SPLIT]")
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
