"""The colour lens and the caption-keyword lens end to end: open the run and its lens head, select a media
variant's image/audio tokens, compute (``analyze.media_lens``), save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from ..analyze.media_lens import colour_lens, keyword_lens
from ..analyze.selection import examples_of, select_layers, token_states, tokens_of
from ..errors import ActstoreError
from ..plot.analyses import layer_curves_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store


def _media_states(ds: xr.Dataset, variant: str, modality: str | None) -> xr.DataArray:
    """States of one variant's media tokens (image or audio), labelled with ``token_item``."""
    examples = examples_of(ds, variant=variant)
    if modality is None:
        present = set(ds.modality.values[tokens_of(ds, examples)]) - {"text"}
        if not present:
            raise ActstoreError(f"variant {variant!r} has no image or audio tokens; name the media variant with --variant")
        modality = sorted(present)[0]
    return token_states(ds, "the media lens").isel(token=tokens_of(ds, examples, modality=modality))


def _texts(ds: xr.Dataset, variant: str) -> dict[str, str]:
    """Each item's text in ``variant`` (its colour word or caption)."""
    return {str(ds["item"].values[e]): str(ds.text.values[e]) for e in examples_of(ds, variant=variant)}


def colour_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str = "image",
                       words: str = "en", layers: list[int] | None = None,
                       storage_options: dict[str, Any] | None = None) -> Report:
    """The colour lens: share of ``variant``'s image tokens whose top-1 lens token is the item's word in ``words``."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = colour_lens(_media_states(ds, variant, "image"), open_lens(store, model), _texts(ds, words))
    name = f"colour-lens-{variant}"
    table = result.share_per_item.to_dataframe().reset_index().merge(result.share.to_dataframe().reset_index(), on="layer")
    curves = {"all colours": result.share.values,
              **{str(i): result.share_per_item.sel(item=i).values for i in result.item.values}}
    files = [save_csv(table[["layer", "item", "share_per_item", "share"]], out, name),
             layer_curves_plot(curves, result.layer.values, out / f"{file_name(name)}.png", "share of image tokens",
                               "Colour lens: image tokens whose top-1 token is the colour word")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))


def caption_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str = "image",
                        captions: str = "en", modality: str | None = None, layers: list[int] | None = None,
                        storage_options: dict[str, Any] | None = None) -> Report:
    """The caption-keyword lens over ``variant``'s media tokens, captions from variant ``captions``."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = keyword_lens(_media_states(ds, variant, modality), open_lens(store, model), _texts(ds, captions))
    name = f"caption-lens-{variant}-{captions}"
    table = result[["keyword_prob", "baseline_prob", "difference"]].to_dataframe().reset_index()
    curves = {"own caption's keywords": result.keyword_prob.values,
              "baseline caption's keywords": result.baseline_prob.values}
    files = [save_csv(table, out, name),
             layer_curves_plot(curves, result.layer.values, out / f"{file_name(name)}.png", "mean probability",
                               "Caption-keyword lens over media tokens")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
