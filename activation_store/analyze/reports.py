"""Each analysis end to end: open the store, compute, save under the store, write CSV and PNG.

These are what the CLI's ``analyze`` commands and the quickstart call; notebooks
can call them too, or use the pure functions they are built from."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from ..store import open_lens, open_run
from . import plots
from .languages import DEFAULT_LANGUAGES, language_mass, language_table
from .logit_lens import readout
from .media_lens import colour_lens, keyword_lens
from .results import file_name, save_csv, save_to_store
from .selection import examples_of, tokens_of
from .similarity import variant_similarity
from .targets import RULES, from_file, from_rule


@dataclass
class Report:
    result: xr.Dataset
    files: list[Path] = field(default_factory=list)
    store_path: str = ""


def _check_layers(ds: xr.Dataset, layers: list[int] | None) -> xr.Dataset:
    if not layers:
        return ds
    bad = [layer for layer in layers if layer not in set(ds.layer.values.tolist())]
    if bad:
        raise ActstoreError(f"layer {bad[0]} is out of range; the run has layers 0..{int(ds.layer.max())}")
    return ds.sel(layer=layers)


def similarity_report(store: str, model: str, dataset: str, variants: list[str] | None, out: Path, *,
                      pool: str = "last", center: bool = True, n_boot: int = 1000, layers: list[int] | None = None,
                      modality: str | dict[str, str] | None = None,
                      storage_options: dict[str, Any] | None = None) -> Report:
    ds = _check_layers(open_run(store, model, dataset, storage_options), layers)
    variants = variants or sorted(set(ds.variant.values))
    result = variant_similarity(ds, variants, pool=pool, center=center, n_boot=n_boot, modality=modality)
    name = f"similarity-{pool}-{'centered' if center else 'raw'}"
    if modality:
        name += "-" + (modality if isinstance(modality, str) else "-".join(f"{k}.{v}" for k, v in modality.items()))
    table = result.drop_vars(["per_item", "item"]).to_dataframe().reset_index()
    columns = [c for c in ("pair", "layer", "score", "ci_low", "ci_high", "paired", "unpaired", "n_items") if c in table]
    per_item = result.per_item.to_dataframe().dropna().reset_index()[["pair", "layer", "item", "per_item"]]
    files = [save_csv(table[columns], out, name), save_csv(per_item, out, f"{name}-per-item"),
             plots.similarity_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name, storage_options))


def _targets(spec: str | None, ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray | None:
    if spec is None:
        return None
    return from_rule(spec, ds, lens) if spec in RULES else from_file(spec, ds, lens)


def logit_lens_report(store: str, model: str, dataset: str, out: Path, *, example: int | None = None,
                      variant: str | None = None, item: str | None = None, targets: str | None = None, k: int = 5,
                      layers: list[int] | None = None, modality: str | None = None,
                      storage_options: dict[str, Any] | None = None) -> Report:
    """Logit lens over one example (a Figure-1 table and heatmap) or over all examples of a variant/item."""
    ds = _check_layers(open_run(store, model, dataset, storage_options), layers)
    lens = open_lens(store, model, storage_options)
    if example is None and variant is None and item is None:
        example = 0
    examples = examples_of(ds, variant=variant, item=item, example=example)
    if not len(examples):
        raise ActstoreError(f"no example has variant {variant!r} and item {item!r}")
    tokens = tokens_of(ds, examples, modality=modality)
    target_ids = _targets(targets, ds, lens)
    hidden = ds.hidden.isel(token=tokens)
    result = readout(hidden, lens, k=k, targets=target_ids.isel(token=tokens) if target_ids is not None else None)
    single = len(examples) == 1
    vocab = lens.vocab_token.values
    selection = "-".join(str(part) for part in (f"example-{example}" if example is not None else None,
                                                   variant, item, modality) if part is not None)
    result.attrs.update(input_tokens=[str(vocab[i]) for i in ds.token_id.values[tokens]] if single else [],
                        selection=selection, k=k, text=str(ds.text.values[examples[0]]) if single else "")
    name = f"logit-lens-{selection}"
    frame = result.drop_vars([v for v in ("target_id", "target_logprob", "target_rank") if v in result]).to_dataframe().reset_index()
    files = [save_csv(frame[["layer", "token", "position", "rank", "top_id", "top_token", "top_prob"]], out, name)]
    if single:
        files.append(plots.logit_lens_plot(result, out / f"{file_name(name)}.png", title=f"Logit lens: {result.attrs['text']!r}"))
    if target_ids is not None:
        summary = target_summary(result)
        result["mean_logprob"], result["ci_low"], result["ci_high"] = summary.mean_logprob, summary.ci_low, summary.ci_high
        files.append(save_csv(summary.to_dataframe().reset_index(), out, f"{name}-targets"))
        files.append(plots.target_plot(summary, out / f"{file_name(name)}-targets.png"))
    return Report(result, files, save_to_store(result.drop_vars(["top_token"]), store, model, dataset, name, storage_options))


def target_summary(result: xr.Dataset, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Mean target log-prob per layer over the positions that have a target, with a bootstrap 95% interval."""
    have = result.target_rank.isel(layer=0).values >= 0
    if not have.any():
        raise ActstoreError("no selected position has a target token in the vocabulary")
    logprob = result.target_logprob.isel(token=np.flatnonzero(have)).transpose("layer", "token").values
    draws = np.random.default_rng(seed).integers(0, logprob.shape[1], size=(n_boot, logprob.shape[1]))
    boot = logprob[:, draws].mean(axis=-1)
    low, high = np.percentile(boot, [2.5, 97.5], axis=-1)
    ranks = result.target_rank.isel(token=np.flatnonzero(have)).transpose("layer", "token").values
    return xr.Dataset({"mean_logprob": ("layer", logprob.mean(axis=1)), "ci_low": ("layer", low), "ci_high": ("layer", high),
                       "median_rank": ("layer", np.median(ranks, axis=1)), "n_targets": int(have.sum())},
                      coords={"layer": result.layer.values})


def languages_report(store: str, model: str, dataset: str, out: Path, *, variant: str | None = None,
                     languages: list[str] | None = None, table_path: str | None = None, layers: list[int] | None = None,
                     storage_options: dict[str, Any] | None = None) -> Report:
    ds = _check_layers(open_run(store, model, dataset, storage_options), layers)
    lens = open_lens(store, model, storage_options)
    table = language_table(lens, tuple(languages or DEFAULT_LANGUAGES), table_path)
    tokens = tokens_of(ds, examples_of(ds, variant=variant))
    if ds.attrs.get("config", {}).get("bos"):  # the BOS state says nothing about the input's language
        tokens = tokens[ds.position.values[tokens] > 0]
    mass = language_mass(ds.hidden.isel(token=tokens), lens, table)
    name = f"languages-{variant or 'all'}"
    result = mass.to_dataset()
    result.attrs.update(variant=variant or "all", table=table.attrs.get("source", ""))
    files = [save_csv(mass.to_pandas().reset_index(), out, name), plots.language_plot(mass, out / f"{file_name(name)}.png",
             title=f"Logit lens on {variant or 'all'} input: probability mass per language")]
    return Report(result, files, save_to_store(result, store, model, dataset, name, storage_options))


def _media_states(ds: xr.Dataset, variant: str, modality: str | None) -> xr.DataArray:
    """States of one variant's media tokens (image or audio), labelled with ``token_item``."""
    examples = examples_of(ds, variant=variant)
    if modality is None:
        present = set(ds.modality.values[tokens_of(ds, examples)]) - {"text"}
        if not present:
            raise ActstoreError(f"variant {variant!r} has no image or audio tokens; name the media variant with --variant")
        modality = sorted(present)[0]
    tokens = tokens_of(ds, examples, modality=modality)
    return ds.hidden.isel(token=tokens)


def _texts(ds: xr.Dataset, variant: str) -> dict[str, str]:
    examples = examples_of(ds, variant=variant)
    return {str(ds["item"].values[e]): str(ds.text.values[e]) for e in examples}


def colour_lens_report(store: str, model: str, dataset: str, out: Path, *, variant: str = "image", words: str = "en",
                       layers: list[int] | None = None, storage_options: dict[str, Any] | None = None) -> Report:
    """The colour lens: share of ``variant``'s image tokens whose top-1 lens token is the item's word in ``words``."""
    ds = _check_layers(open_run(store, model, dataset, storage_options), layers)
    lens = open_lens(store, model, storage_options)
    result = colour_lens(_media_states(ds, variant, "image"), lens, _texts(ds, words))
    name = f"colour-lens-{variant}"
    table = result.share_per_item.to_dataframe().reset_index().merge(result.share.to_dataframe().reset_index(), on="layer")
    files = [save_csv(table[["layer", "item", "share_per_item", "share"]], out, name),
             plots.layer_curves_plot({"all colours": result.share.values,
                                      **{str(i): result.share_per_item.sel(item=i).values for i in result.item.values}},
                                     result.layer.values, out / f"{file_name(name)}.png", "share of image tokens",
                                     "Colour lens: image tokens whose top-1 token is the colour word")]
    return Report(result, files, save_to_store(result, store, model, dataset, name, storage_options))


def caption_lens_report(store: str, model: str, dataset: str, out: Path, *, variant: str = "image", captions: str = "en",
                        modality: str | None = None, layers: list[int] | None = None,
                        storage_options: dict[str, Any] | None = None) -> Report:
    """The caption-keyword lens over ``variant``'s media tokens, captions from variant ``captions``."""
    ds = _check_layers(open_run(store, model, dataset, storage_options), layers)
    lens = open_lens(store, model, storage_options)
    result = keyword_lens(_media_states(ds, variant, modality), lens, _texts(ds, captions))
    name = f"caption-lens-{variant}-{captions}"
    table = result[["keyword_prob", "baseline_prob", "difference"]].to_dataframe().reset_index()
    files = [save_csv(table, out, name),
             plots.layer_curves_plot({"own caption's keywords": result.keyword_prob.values,
                                      "baseline caption's keywords": result.baseline_prob.values},
                                     result.layer.values, out / f"{file_name(name)}.png", "mean probability",
                                     "Caption-keyword lens over media tokens")]
    return Report(result, files, save_to_store(result, store, model, dataset, name, storage_options))
