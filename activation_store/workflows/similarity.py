"""Cross-variant similarity (all pairs, or against a baseline variant) as one registered analysis:
the runner opens the run, this computes and names it, and says which tables and figure it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..analyze.baseline_similarity import variant_baseline_similarity
from ..analyze.pair_similarity import variant_similarity
from ..errors import ActstoreError
from ..store import Store
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .params import BOOTSTRAP, modality_per_variant, split_items
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at

COLUMNS = ("pair", "layer", "score", "ci_low", "ci_high", "paired", "unpaired", "n_items")


def _name(pool: str, center: bool) -> str:
    return f"similarity-{pool}-{'centered' if center else 'raw'}"


def _against_baseline(inputs: Inputs, variants: list[str] | None, baseline: str, pool: str, center: bool,
                      n_boot: int) -> Computed:
    """Matched minus baseline cosine between two ``variants`` (default: the two besides ``baseline``)."""
    if variants is not None and len(variants) != 2:
        raise ActstoreError(f"--baseline compares exactly two variants (e.g. --variants sentence,form), got {len(variants)}")
    result = variant_baseline_similarity(inputs.run, *(variants or (None, None)), baseline, pool=pool, center=center,
                                         n_boot=n_boot)
    return Computed(result, f"{_name(pool, center)}-baseline-{baseline}", parts={"baseline": baseline})


def compute(inputs: Inputs, *, variants: list[str] | None = None, pool: str = "last", center: bool = True,
            n_boot: int = 1000, baseline: str | None = None,
            modality: str | dict[str, str] | None = None) -> Computed:
    """Paired-minus-unpaired cosine for every pair of ``variants`` (default: all); with ``baseline``, matched
    minus baseline instead. ``modality`` pools only that modality's tokens (one for all variants, or per variant)."""
    if baseline is not None:
        return _against_baseline(inputs, variants, baseline, pool, center, n_boot)
    result = variant_similarity(inputs.run, variants, pool=pool, center=center, n_boot=n_boot, modality=modality)
    name = _name(pool, center)
    if modality:
        name += "-" + (modality if isinstance(modality, str) else "-".join(f"{k}.{v}" for k, v in modality.items()))
    return Computed(result, name)


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    """The score table and the per-item table."""
    result, name = computed.result, computed.name
    table = result.drop_vars(["per_item", "item"]).to_dataframe().reset_index()
    if "baseline" in computed.parts:
        return {name: table, f"{name}-per-item": result.per_item.to_dataframe().reset_index()}
    per_item = result.per_item.to_dataframe().dropna().reset_index()[["pair", "layer", "item", "per_item"]]
    return {name: table[[c for c in COLUMNS if c in table]], f"{name}-per-item": per_item}


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.analyses import similarity_plot
    from ..plot.text_grid import baseline_similarity_plot

    draw = baseline_similarity_plot if "baseline" in computed.parts else similarity_plot
    return [draw(computed.result, png_path(out, computed.name))]


def _check(values: Mapping[str, Any]) -> None:
    if values.get("baseline") is not None and values.get("modality") is not None:
        raise ValueError("--modality applies to all-pairs similarity, not with --baseline")


SIMILARITY = register_analysis(Analysis(
    name="similarity",
    help="Paired-minus-unpaired cosine similarity between variants, per layer (Eq. 1); or matched minus baseline.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_similarity", check=_check,
    params=(Param("--variants", "variants", "Comma-separated variants to pair by item (default: all; every pair).",
                  convert=split_items),
            Param("--pool", "pool", default="last", kind=("last", "mean")),
            Param("--center/--no-center", "center", "Subtract the per-layer mean of the compared states first.",
                  default=True, kind=bool),
            BOOTSTRAP,
            Param("--baseline", "baseline", "Compare with this variant of each item (e.g. form-swapped) instead of all "
                  "unpaired items.", metavar="VARIANT"),
            Param("--modality", "modality", "Pool only text, image or audio tokens; per variant as image=image,en=text.",
                  convert=modality_per_variant))))


def similarity_report(store: str | Store, model: str, dataset: str, variants: list[str] | None, out: Path, *,
                      layers: list[int] | None = None, storage_options: dict[str, Any] | None = None,
                      **params: Any) -> Report:
    """The ``similarity`` analysis for a script holding a URL (kept for callers of the old name); ``params``:
    ``pool``, ``center``, ``n_boot``, ``modality`` as in ``compute``."""
    return run_at(SIMILARITY, store, Target(model, dataset), RunOptions(out, layers), storage_options,
                  variants=variants, **params)


def baseline_similarity_report(store: str | Store, model: str, dataset: str, variants: list[str] | None, baseline: str,
                               out: Path, *, layers: list[int] | None = None,
                               storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """Matched minus ``baseline`` cosine per layer (kept for callers of the old name); ``params``: ``pool``,
    ``center``, ``n_boot``."""
    return run_at(SIMILARITY, store, Target(model, dataset), RunOptions(out, layers), storage_options,
                  variants=variants, baseline=baseline, **params)
