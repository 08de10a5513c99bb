"""Probability mass per language through the logit lens, layer by layer.

p(language | token) comes from word frequencies per language (wordfreq, built
offline, no network): a vocabulary string's frequency as a word in each
language, normalised over the languages. Strings that are a word in no
language carry no mass. The table depends only on the vocabulary, so it is
cached per tokenizer (keyed by a hash of the vocabulary strings); a user's own
table (e.g. one derived from mC4) can be loaded from CSV instead.

The mass of language l at a layer is Σ_token p(token | state) · p(l | token),
averaged over the positions analysed."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import xarray as xr

from ..cache import cache_root
from ..errors import ActstoreError
from ..store import layout
from .projection import project
from .selection import examples_of, token_states, tokens_of
from .stats import grouped_mean_ci

DEFAULT_LANGUAGES = ("en", "zh", "ja", "ko", "ru", "ar", "hi", "fr", "de", "es")


def _cache_dir() -> Path:
    return cache_root() / "language-tables"


def _word(token: str) -> str:
    return token.strip().lower()


def build_table(vocab: np.ndarray, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> xr.DataArray:
    """p(language | token) as (vocab, language) from wordfreq's frequency lists."""
    import wordfreq

    available = set(wordfreq.available_languages())
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise ActstoreError(f"wordfreq has no frequency list for {', '.join(unknown)}")
    words = [_word(str(t)) for t in vocab]
    frequencies = np.zeros((len(words), len(languages)), dtype=np.float64)
    for column, lang in enumerate(languages):
        table = wordfreq.get_frequency_dict(lang)
        frequencies[:, column] = [table.get(w, 0.0) if w else 0.0 for w in words]
    total = frequencies.sum(axis=1, keepdims=True)
    probs = np.divide(frequencies, total, out=np.zeros_like(frequencies), where=total > 0)
    return xr.DataArray(probs.astype(np.float32), dims=("vocab", "language"), coords={"language": list(languages)},
                        attrs={"source": f"wordfreq {wordfreq.__version__ if hasattr(wordfreq, '__version__') else ''}".strip()})


def language_table(lens: xr.Dataset, languages: tuple[str, ...] = DEFAULT_LANGUAGES,
                   path: str | Path | None = None) -> xr.DataArray:
    """The table for this lens's vocabulary: from ``path`` (CSV token_id,lang1,…) or built and cached."""
    vocab = lens[layout.VOCAB_TOKEN].values
    if path is not None:
        return _read_table(Path(path), len(vocab))
    key = hashlib.sha256(("\x00".join(map(str, vocab)) + "|" + ",".join(languages)).encode()).hexdigest()[:20]
    cached = _cache_dir() / f"{key}.npz"
    if cached.exists():
        stored = np.load(cached)
        return xr.DataArray(stored["probs"], dims=("vocab", "language"), coords={"language": list(stored["languages"])},
                            attrs={"source": "wordfreq (cached)"})
    table = build_table(vocab, languages)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npz")
    np.savez(partial, probs=table.values, languages=np.array(languages))
    partial.replace(cached)
    return table


def _read_table(path: Path, vocab_size: int) -> xr.DataArray:
    if not path.is_file():
        raise ActstoreError(f"language table not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0] != "token_id" or len(header) < 2:
            raise ActstoreError(f"{path}: expected a header 'token_id,<lang>,<lang>,…'")
        probs = np.zeros((vocab_size, len(header) - 1), dtype=np.float32)
        for number, row in enumerate(reader, start=2):
            try:
                token = int(row[0])
                probs[token] = [float(v) for v in row[1:]]
            except (ValueError, IndexError):
                raise ActstoreError(f"{path}:{number}: expected a token id below {vocab_size} and {len(header) - 1} numbers") from None
    return xr.DataArray(probs, dims=("vocab", "language"), coords={"language": header[1:]}, attrs={"source": str(path)})


def language_mass(hidden: xr.DataArray, lens: xr.Dataset, table: xr.DataArray, mode: str = "normed",
                  n_boot: int = 1000, seed: int = 0) -> xr.DataArray:
    """Per layer and language, the lens's probability mass averaged over the tokens of ``hidden``
    (``mode``: the normed or raw lens, recorded in the result's attrs). When the tokens carry their example
    (``token_example``), coordinates ``ci_low``/``ci_high`` give a 95% interval that resamples whole examples
    (the tokens of one sentence are not independent)."""
    projected = project(hidden, lens, k=1, table=table, mode=mode)
    mass = xr.DataArray(projected.language_mass, dims=(*projected.dims, "language"),
                        coords={"language": table.language.values, **{d: hidden[d].values for d in projected.dims if d in hidden.coords}})
    mass.attrs["lens"] = mode
    if "token" not in mass.dims:
        return mass.rename("mass")
    if "token_example" not in hidden.coords or not mass.sizes["token"]:
        return mass.mean("token", keep_attrs=True).rename("mass")
    mass = mass.assign_coords(token_example=("token", hidden.token_example.values))
    summary = grouped_mean_ci(mass, "token", "token_example", n_boot, seed, weigh="entry")
    out = summary["mean"].assign_coords(ci_low=summary.ci_low, ci_high=summary.ci_high)
    out.attrs.update(lens=mode, interval="95% bootstrap over examples (tokens weighted equally)")
    return out.rename("mass")


def languages(ds: xr.Dataset, lens: xr.Dataset, variant: str | None = None, codes: tuple[str, ...] | list[str] | None = None,
              table: xr.DataArray | None = None, mode: str = "normed") -> xr.DataArray:
    """Probability mass per language and layer over the tokens of ``variant`` (default: every example).

    ``table`` is p(language | token) (default: ``language_table`` for ``codes``); the BOS state, which
    says nothing about the input's language, is left out when the run prepended one. ``mode``: the
    normed or raw lens (see ``lens.lens_input``)."""
    if table is None:
        table = language_table(lens, tuple(codes or DEFAULT_LANGUAGES))
    tokens = tokens_of(ds, examples_of(ds, variant=variant))
    if ds.attrs.get("config", {}).get("bos"):
        tokens = tokens[ds.position.values[tokens] > 0]
    mass = language_mass(token_states(ds, "the language analysis").isel(token=tokens), lens, table, mode=mode)
    mass.attrs.update(variant=variant or "all", table=table.attrs.get("source", ""))
    return mass
