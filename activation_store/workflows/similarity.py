"""Cross-variant similarity end to end (all pairs, or against a baseline variant): open the run, compute,
save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analyze.baseline_similarity import variant_baseline_similarity
from ..analyze.selection import select_layers
from ..analyze.similarity import variant_similarity
from ..errors import ActstoreError
from ..plot.analyses import similarity_plot
from ..plot.text_grid import baseline_similarity_plot
from ..store import Store, open_run
from .results import Report, file_name, save_csv, save_to_store

COLUMNS = ("pair", "layer", "score", "ci_low", "ci_high", "paired", "unpaired", "n_items")


def similarity_report(store: str | Store, model: str, dataset: str, variants: list[str] | None, out: Path, *,
                      pool: str = "last", center: bool = True, n_boot: int = 1000, layers: list[int] | None = None,
                      modality: str | dict[str, str] | None = None,
                      storage_options: dict[str, Any] | None = None) -> Report:
    """Paired-minus-unpaired cosine for every pair of ``variants`` (default: all): table, per-item table, figure.
    ``modality`` pools only that modality's tokens (one for all variants, or per variant)."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = variant_similarity(ds, variants, pool=pool, center=center, n_boot=n_boot, modality=modality)
    name = f"similarity-{pool}-{'centered' if center else 'raw'}"
    if modality:
        name += "-" + (modality if isinstance(modality, str) else "-".join(f"{k}.{v}" for k, v in modality.items()))
    table = result.drop_vars(["per_item", "item"]).to_dataframe().reset_index()
    per_item = result.per_item.to_dataframe().dropna().reset_index()[["pair", "layer", "item", "per_item"]]
    files = [save_csv(table[[c for c in COLUMNS if c in table]], out, name), save_csv(per_item, out, f"{name}-per-item"),
             similarity_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))


def baseline_similarity_report(store: str | Store, model: str, dataset: str, variants: list[str] | None, baseline: str,
                               out: Path, *, pool: str = "last", center: bool = True, n_boot: int = 1000,
                               layers: list[int] | None = None, storage_options: dict[str, Any] | None = None) -> Report:
    """Matched minus baseline cosine per layer between two ``variants`` (default: the two besides ``baseline``),
    e.g. sentence and form against form-swapped: table, per-item table, figure."""
    if variants is not None and len(variants) != 2:
        raise ActstoreError(f"--baseline compares exactly two variants (e.g. --variants sentence,form), got {len(variants)}")
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = variant_baseline_similarity(ds, *(variants or (None, None)), baseline, pool=pool, center=center, n_boot=n_boot)
    name = f"similarity-{pool}-{'centered' if center else 'raw'}-baseline-{baseline}"
    table = result.drop_vars(["per_item", "item"]).to_dataframe().reset_index()
    per_item = result.per_item.to_dataframe().reset_index()
    files = [save_csv(table, out, name), save_csv(per_item, out, f"{name}-per-item"),
             baseline_similarity_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
