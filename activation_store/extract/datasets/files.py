"""Users' own parallel data: JSONL, CSV or TSV with an ``id`` column and one column per variant."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ...errors import ActstoreError
from .base import Dataset
from .media import attach_media
from ...checksums import sha256_file


def from_file(path: Path) -> Dataset:
    if not path.is_file():
        raise ActstoreError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path)
    elif suffix in (".csv", ".tsv"):
        rows = _table_rows(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise ActstoreError(f"unknown dataset file type {path.suffix!r} for {path}; use .jsonl, .csv or .tsv")
    variants: list[str] = []
    items = []
    lines: dict[str, int] = {}
    seen: set[str] = set()
    for line, row in rows:
        item_id = str(row.pop("id", line))
        if item_id in seen:
            raise ActstoreError(f"{path}:{line}: duplicate id {item_id!r}")
        seen.add(item_id)
        lines[item_id] = line
        texts = {}
        for variant, text in row.items():
            if not isinstance(text, str):
                raise ActstoreError(f"{path}:{line}: value of {variant!r} is not a string")
            if text.strip():
                texts[variant] = text
                if variant not in variants:
                    variants.append(variant)
        items.append((item_id, texts))
    dataset = Dataset(name=path.stem, version=f"sha256:{sha256_file(path)[:16]}", variants=tuple(variants),
                      items=items, source=str(path.resolve()))
    return attach_media(dataset, path.resolve().parent, lines)  # image/audio variants: read, checked, hashed


def _jsonl_rows(path: Path):
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ActstoreError(f"{path}:{number}: not UTF-8 text ({exc.reason})") from None
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ActstoreError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ActstoreError(f"{path}:{number}: expected an object like {{\"id\": ..., \"en\": \"...\"}}")
            yield number, row


def _table_rows(path: Path, delimiter: str):
    try:
        yield from _checked_table_rows(path, delimiter)
    except UnicodeDecodeError as exc:
        raise ActstoreError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ActstoreError(f"{path}: not a valid {'TSV' if delimiter == chr(9) else 'CSV'} file ({exc})") from None


def _checked_table_rows(path: Path, delimiter: str):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise ActstoreError(f"{path}: no header row")
        names = [name.strip() for name in reader.fieldnames]
        if "" in names:
            raise ActstoreError(f"{path}:1: header has an empty column name (column {names.index('') + 1})")
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate is not None:
            raise ActstoreError(f"{path}:1: header names column {duplicate!r} twice")
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise ActstoreError(f"{path}:{number}: more fields than the header has")
            yield number, {k.strip(): (v if v is not None else "") for k, v in row.items()}
