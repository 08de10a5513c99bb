"""Probability mass per language end to end: open the run and lens head, compute, save, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analyze.languages import DEFAULT_LANGUAGES, language_table
from ..analyze.languages import languages as mass_per_language
from ..analyze.selection import select_layers
from ..plot.analyses import language_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store


def languages_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str | None = None,
                     languages: list[str] | None = None, table_path: str | None = None,
                     layers: list[int] | None = None, storage_options: dict[str, Any] | None = None,
                     lens_mode: str = "normed") -> Report:
    """Mass per language and layer on ``variant``'s input (default: all), with the built-in or a given table;
    ``lens_mode`` raw (the paper's lens) saves under a ``-raw`` name."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    lens = open_lens(store, model)
    table = language_table(lens, tuple(languages or DEFAULT_LANGUAGES), table_path)
    mass = mass_per_language(ds, lens, variant, table=table, mode=lens_mode)
    name = f"languages-{variant or 'all'}" + ("-raw" if lens_mode == "raw" else "")
    result = mass.to_dataset()
    result.attrs.update(mass.attrs)
    files = [save_csv(mass.to_pandas().reset_index(), out, name),
             language_plot(mass, out / f"{file_name(name)}.png",
                           title=f"Logit lens on {variant or 'all'} input: probability mass per language")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
