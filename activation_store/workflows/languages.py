"""Probability mass per language as one registered analysis: the runner opens the run and its lens head,
this computes the mass per layer and language, and says which table and figure it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analyze.language_mass import DEFAULT_LANGUAGES, language_table
from ..analyze.language_mass import languages as mass_per_language
from ..store import Store
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .params import LENS, split_items
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at


def compute(inputs: Inputs, *, variant: str | None = None, languages: list[str] | None = None,
            table_path: str | None = None, lens_mode: str = "normed") -> Computed:
    """Mass per language and layer on ``variant``'s input (default: all), with the built-in or a given table;
    ``lens_mode`` raw (the paper's lens) saves under a ``-raw`` name."""
    table = language_table(inputs.lens, tuple(languages or DEFAULT_LANGUAGES), table_path)
    mass = mass_per_language(inputs.run, inputs.lens, variant, table=table, mode=lens_mode)
    result = mass.to_dataset()
    result.attrs.update(mass.attrs)
    return Computed(result, f"languages-{variant or 'all'}" + ("-raw" if lens_mode == "raw" else ""),
                    parts={"variant": variant})


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    return {computed.name: computed.result.mass.to_pandas().reset_index()}


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.analyses import language_plot

    title = f"Logit lens on {computed.parts['variant'] or 'all'} input: probability mass per language"
    return [language_plot(computed.result.mass, png_path(out, computed.name), title=title)]


LANGUAGES = register_analysis(Analysis(
    name="languages",
    help="Probability mass per language through the logit lens, per layer.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_languages", needs_lens=True,
    params=(Param("--variant", "variant", "Input variant to read (default: all examples)."),
            Param("--languages", "languages", "Comma-separated language codes (default: en,zh,ja,ko,ru,ar,hi,fr,de,es).",
                  convert=split_items),
            Param("--table", "table_path", "Your own p(language|token) CSV: token_id,<lang>,<lang>,…"),
            LENS)))


def languages_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                     storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``languages`` analysis for a script holding a URL (kept for callers of the old name); ``params``
    as in ``compute`` (``variant``, ``languages``, ``table_path``, ``lens_mode``)."""
    return run_at(LANGUAGES, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
