"""The logit lens over media tokens: the colour lens and the caption-keyword lens (Wu et al. 2024, vision).

- Colour lens: for images of one solid colour, the share of image tokens whose
  top-1 lens token is the colour word (any vocabulary spelling of it: "red",
  " red", "▁Red"…), per layer.
- Caption-keyword lens: for each image, the mean probability of its caption's
  keywords (first token of " word") over the image tokens, against the same
  for the caption that shares the fewest words with it (the baseline), per layer.
Both take hidden states over the media tokens only (``token`` dim) with the
per-token ``token_item`` and read the model's media-code mask through the lens, so
Chameleon's image codes never win the top-1. Pure: nothing is read or written here."""
from __future__ import annotations

import re

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import layout
from ..vocabulary import vocabulary_index
from .lens_readout import target_logits
from .projection import project

STOPWORDS = frozenset(
    "the a an and or of on in at to with from by for is are was were be been being this that these those it its "
    "there their his her some two three one four five very while near next into onto over under".split()
)


def _spelling(token: str) -> str:
    """A vocabulary string as a plain lower-case word (byte-level ``Ġ`` and SentencePiece ``▁`` spaces dropped)."""
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


def word_ids(lens: xr.Dataset, word: str) -> np.ndarray:
    """Every vocabulary id that spells ``word`` (case and a leading space ignored)."""
    vocab = lens[layout.VOCAB_TOKEN].values
    wanted = word.strip().lower()
    ids = np.array([i for i, token in enumerate(vocab) if _spelling(str(token)) == wanted], dtype=np.int64)
    if layout.MEDIA_CODE in lens and len(ids):
        ids = ids[~lens[layout.MEDIA_CODE].values[ids]]
    return ids


def first_token_id(lens: xr.Dataset, word: str) -> int | None:
    """The id of the word's first token as it follows a space (" dog", else "dog", "▁dog", "Ġdog"), or None."""
    index = vocabulary_index(lens[layout.VOCAB_TOKEN].values)
    for form in (f" {word}", word, f"▁{word}", f"Ġ{word}"):
        if form in index:
            return index[form]
    return None


def caption_keywords(caption: str) -> list[str]:
    """Content words of a caption (lower case, ≥ 3 letters, no stop words), in order, once each."""
    words = re.findall(r"[^\W\d_]+", caption.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= 3 and w not in STOPWORDS))


def colour_lens(hidden: xr.DataArray, lens: xr.Dataset, words: dict[str, str]) -> xr.Dataset:
    """Share of tokens whose top-1 lens token is their item's colour word, per layer and per item.

    ``hidden``: (layer, token, d_model) over image tokens, with the per-token ``token_item`` coordinate;
    ``words``: item → colour word."""
    items = [str(i) for i in hidden["token_item"].values]
    missing = sorted(set(items) - set(words))
    if missing:
        raise ActstoreError(f"no colour word for item {missing[0]!r}")
    ids = {item: word_ids(lens, words[item]) for item in set(items)}
    absent = sorted(words[i] for i in ids if not len(ids[i]))
    if absent:
        raise ActstoreError(f"the vocabulary has no token spelling the colour word {absent[0]!r}")
    top1 = project(hidden, lens, k=1).top_id[..., 0]                          # (layer, token)
    hit = np.stack([np.isin(top1[:, t], ids[item]) for t, item in enumerate(items)], axis=1)
    names = sorted(set(items))
    per_item = np.stack([hit[:, np.array(items) == name].mean(axis=1) for name in names], axis=1)
    return xr.Dataset(
        {"share": ("layer", hit.mean(axis=1)), "share_per_item": (("layer", "item"), per_item),
         "n_tokens": ("item", [int((np.array(items) == name).sum()) for name in names])},
        coords={"layer": hidden.layer.values, "item": names, "word": ("item", [words[n] for n in names])},
        attrs={"definition": "share of image tokens whose top-1 logit-lens token spells the item's colour word"},
    )


def fewest_shared(keywords: dict[str, list[str]]) -> dict[str, str]:
    """Each item's baseline: the other item whose keywords overlap its own least (first in order on ties)."""
    if len(keywords) < 2:
        raise ActstoreError("the caption-keyword lens needs at least two items (the baseline is another item's caption)")
    out = {}
    for item, words in keywords.items():
        others = [o for o in keywords if o != item]
        out[item] = min(others, key=lambda o: len(set(words) & set(keywords[o])))
    return out


def keyword_lens(hidden: xr.DataArray, lens: xr.Dataset, captions: dict[str, str]) -> xr.Dataset:
    """Mean keyword probability over each item's media tokens, for its own caption and its baseline caption.

    ``hidden``: (layer, token, d_model) over media tokens with ``token_item``; ``captions``: item → text."""
    keywords = {}
    for item, caption in captions.items():
        ids = [first_token_id(lens, w) for w in caption_keywords(caption)]
        keywords[item] = sorted({i for i in ids if i is not None})
    empty = [item for item in set(map(str, hidden["token_item"].values)) if not keywords.get(item)]
    if empty:
        raise ActstoreError(f"the caption of item {empty[0]!r} has no keyword in the vocabulary")
    baseline = fewest_shared(keywords)
    normaliser = xr.DataArray(project(hidden, lens, k=1).log_normaliser, dims=("layer", "token"))
    items = np.array([str(i) for i in hidden["token_item"].values])
    names = sorted(set(items))
    matched, other = [], []
    for name in names:
        states = hidden.isel(token=np.flatnonzero(items == name))
        norm = normaliser.isel(token=np.flatnonzero(items == name))
        for ids, out in ((keywords[name], matched), (keywords[baseline[name]], other)):
            logit = target_logits(states, lens, xr.DataArray(np.asarray(ids, dtype=np.int64), dims="keyword"))
            out.append(np.exp(logit - norm).mean(["token", "keyword"]).values)
    matched, other = np.stack(matched, axis=1), np.stack(other, axis=1)              # (layer, item)
    return xr.Dataset(
        {"keyword_prob": ("layer", matched.mean(axis=1)), "baseline_prob": ("layer", other.mean(axis=1)),
         "difference": ("layer", (matched - other).mean(axis=1)),
         "keyword_prob_per_item": (("layer", "item"), matched), "baseline_prob_per_item": (("layer", "item"), other)},
        coords={"layer": hidden.layer.values, "item": names, "baseline_item": ("item", [baseline[n] for n in names])},
        attrs={"definition": "mean over media tokens and caption keywords of p(first token of ' keyword'); "
                             "baseline: the caption sharing the fewest keywords"},
    )
