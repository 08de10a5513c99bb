"""Hugging Face ``datasets`` as input: ``hf:NAME[:CONFIG][:SPLIT]``, read offline.

NAME is a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(then only a SPLIT may follow), a local directory of data files, or a hub name
already in the local datasets cache; nothing is ever downloaded. Each row is one
item; ``columns`` maps variant names to text columns (default: every string
column but the id column). The dataset's own fingerprint, with the column
mapping, is recorded as the run's dataset checksum, so a changed dataset or a
different mapping is a different run."""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import ActstoreError
from .base import Dataset

PREFIX = "hf:"
INSTALL = "Hugging Face datasets need the 'datasets' package: pip install 'actstore[hf]'"


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[:CONFIG][:SPLIT]`` → (name, config, split); a save_to_disk directory takes ``hf:DIR[:SPLIT]``."""
    parts = spec[len(PREFIX):].split(":")
    name = parts[0]
    if not name or len(parts) > 3 or any(not p for p in parts[1:]):
        raise ActstoreError(f"expected hf:NAME[:CONFIG][:SPLIT], got {spec!r}")
    if _saved(name):
        if len(parts) > 2:
            raise ActstoreError(f"{name} is a save_to_disk directory: it has splits but no configs; use hf:{name}[:SPLIT]")
        return name, None, parts[1] if len(parts) == 2 else None
    return name, parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None


def _saved(name: str) -> bool:
    path = Path(name)
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _datasets():
    os.environ["HF_HUB_OFFLINE"] = "1"  # read before datasets is first imported …
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError:
        raise ActstoreError(INSTALL) from None
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True  # … or set here if it was
    datasets.disable_progress_bars()
    return datasets


def _load(name: str, config: str | None, split: str | None):
    datasets = _datasets()
    try:
        if _saved(name):
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, config)
    except ActstoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing, not cached, unreadable: all one line
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ActstoreError(f"cannot load Hugging Face dataset {name!r} offline (only save_to_disk directories, "
                            f"local data files and the local datasets cache are read): {detail}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None:
            if len(splits) != 1:
                raise ActstoreError(f"dataset {name!r} has splits {', '.join(splits)}; name one, e.g. hf:{name}:"
                                    f"{config + ':' if config else ''}{splits[0]}")
            split = splits[0]
        if split not in loaded:
            raise ActstoreError(f"dataset {name!r} has no split {split!r}; it has {', '.join(splits)}")
        return loaded[split]
    if split is not None and split != str(loaded.split or split):
        raise ActstoreError(f"dataset {name!r} is one split ({loaded.split}), not {split!r}")
    return loaded


def from_huggingface(spec: str, columns: dict[str, str] | None = None, id_column: str | None = None) -> Dataset:
    """Items from one split of a Hugging Face dataset: one item per row, one variant per mapped text column."""
    name, config, split = parse_spec(spec)
    table = _load(name, config, split)
    features = table.features
    if id_column is not None and id_column not in features:
        raise ActstoreError(f"--id-column {id_column!r} is not a column of {name!r}; it has {', '.join(features)}")
    id_column = id_column if id_column is not None else ("id" if "id" in features else None)
    if columns:
        missing = [c for c in columns.values() if c not in features]
        if missing:
            raise ActstoreError(f"column {missing[0]!r} is not in {name!r}; it has {', '.join(features)}")
    else:
        columns = {c: c for c, f in features.items()
                   if c != id_column and getattr(f, "dtype", None) in ("string", "large_string")}
        if not columns:
            raise ActstoreError(f"dataset {name!r} has no text columns; map variants with --columns VARIANT=COLUMN,…")
    items, seen = [], set()
    data = table.select_columns(list(dict.fromkeys([*columns.values(), *([id_column] if id_column else [])]))).to_dict()
    for row in range(len(table)):
        item = str(data[id_column][row]) if id_column else str(row)
        if item in seen:
            raise ActstoreError(f"{name}: row {row}: duplicate id {item!r}")
        seen.add(item)
        texts = {}
        for variant, column in columns.items():
            text = data[column][row]
            if text is None:
                continue
            if not isinstance(text, str):
                raise ActstoreError(f"{name}: row {row}: column {column!r} is {type(text).__name__}, not text")
            if text.strip():
                texts[variant] = text
        items.append((item, texts))
    mapping = ",".join(f"{v}={c}" for v, c in columns.items())
    checksum = f"hf-fingerprint:{table._fingerprint};columns:{mapping};id:{id_column or '(row)'}"
    label = Path(name).name if Path(name).is_dir() else name.rsplit("/", 1)[-1]
    split_name = split or (str(table.split) if table.split else None)
    return Dataset(name="-".join(filter(None, (label, config, split))), version=f"hf-fingerprint:{table._fingerprint}",
                   variants=tuple(columns), items=items, checksum_of_source=checksum,
                   source=f"Hugging Face dataset {name}" + (f" config {config}" if config else "")
                          + (f" split {split_name}" if split_name else ""))
