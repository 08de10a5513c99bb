"""The colour lens and the caption-keyword lens as registered analyses: the runner opens the run and its
lens head, these select a media variant's image/audio tokens, compute (``analyze.media_lens``) and say which
table and figure they make."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ..analyze.media_lens import colour_lens, keyword_lens
from ..analyze.selection import examples_of, token_states, tokens_of
from ..errors import ActstoreError
from ..store import Store
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at


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


def _curves_plot(computed: Computed, out: Path, curves: dict[str, Any], ylabel: str, title: str) -> list[Path]:
    from ..plot.analyses import layer_curves_plot

    return [layer_curves_plot(curves, computed.result.layer.values, png_path(out, computed.name), ylabel, title)]


# --- the colour lens ---------------------------------------------------------------------------------------
def colour_compute(inputs: Inputs, *, variant: str = "image", words: str = "en") -> Computed:
    """Share of ``variant``'s image tokens whose top-1 lens token is the item's word in ``words``."""
    result = colour_lens(_media_states(inputs.run, variant, "image"), inputs.lens, _texts(inputs.run, words))
    return Computed(result, f"colour-lens-{variant}")


def colour_tables(computed: Computed) -> dict[str, pd.DataFrame]:
    result = computed.result
    table = result.share_per_item.to_dataframe().reset_index().merge(result.share.to_dataframe().reset_index(), on="layer")
    return {computed.name: table[["layer", "item", "share_per_item", "share"]]}


def colour_plot(computed: Computed, out: Path) -> list[Path]:
    result = computed.result
    curves = {"all colours": result.share.values,
              **{str(i): result.share_per_item.sel(item=i).values for i in result.item.values}}
    return _curves_plot(computed, out, curves, "share of image tokens",
                        "Colour lens: image tokens whose top-1 token is the colour word")


COLOUR_LENS = register_analysis(Analysis(
    name="colour-lens",
    help="Share of image tokens whose top-1 logit-lens token is the colour word, per layer (e.g. on --dataset colors).",
    compute=colour_compute, tables=colour_tables, plot=colour_plot, needs_lens=True,
    printed="activation_store.cli.tables:show_colour_lens",
    params=(Param("--variant", "variant", "The image variant.", default="image"),
            Param("--words", "words", "The variant holding each item's colour word.", default="en"))))


# --- the caption-keyword lens --------------------------------------------------------------------------------
def caption_compute(inputs: Inputs, *, variant: str = "image", captions: str = "en",
                    modality: str | None = None) -> Computed:
    """The caption-keyword lens over ``variant``'s media tokens, captions from variant ``captions``."""
    result = keyword_lens(_media_states(inputs.run, variant, modality), inputs.lens, _texts(inputs.run, captions))
    return Computed(result, f"caption-lens-{variant}-{captions}")


def caption_tables(computed: Computed) -> dict[str, pd.DataFrame]:
    return {computed.name: computed.result[["keyword_prob", "baseline_prob", "difference"]].to_dataframe().reset_index()}


def caption_plot(computed: Computed, out: Path) -> list[Path]:
    curves = {"own caption's keywords": computed.result.keyword_prob.values,
              "baseline caption's keywords": computed.result.baseline_prob.values}
    return _curves_plot(computed, out, curves, "mean probability", "Caption-keyword lens over media tokens")


CAPTION_LENS = register_analysis(Analysis(
    name="caption-lens",
    help="Caption keywords' mean probability over media tokens vs the least similar caption's, per layer.",
    compute=caption_compute, tables=caption_tables, plot=caption_plot, needs_lens=True,
    printed="activation_store.cli.tables:show_caption_lens",
    params=(Param("--variant", "variant", "The media variant (image or audio).", default="image"),
            Param("--captions", "captions", "The variant holding each item's caption.", default="en"))))


# --- the old names -----------------------------------------------------------------------------------------
def colour_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                       storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``colour-lens`` analysis for a script holding a URL; ``params``: ``variant``, ``words``."""
    return run_at(COLOUR_LENS, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)


def caption_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                        storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``caption-lens`` analysis for a script holding a URL; ``params``: ``variant``, ``captions``, ``modality``."""
    return run_at(CAPTION_LENS, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
