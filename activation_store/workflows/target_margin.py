"""Target versus alternatives as one registered analysis: the runner opens the run and its lens head, this
computes the margin per layer at the run's annotated tokens and says which table and figure it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analyze.targets_compare import marked_logprobs, target_margin, with_targets
from ..store import Store
from .analysis import Analysis, Computed, Inputs, RunOptions, Target
from .params import ANNOTATED_VARIANT, BOOTSTRAP, LENS
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at


def compute(inputs: Inputs, *, variant: str | None = None, lens_mode: str = "normed", n_boot: int = 1000,
            include: list[str] | None = None, exclude: list[str] | None = None, label: str | None = None) -> Computed:
    """log p(target) − max log p(alternative) per layer at the annotated tokens of ``variant`` (default: all);
    ``include``/``exclude`` keep only positions with (without) those targets, saved as ``label`` (e.g. "and")."""
    table = marked_logprobs(inputs.run, inputs.lens, variant, mode=lens_mode)
    if include is not None or exclude is not None:
        table = with_targets(table, include, exclude)
    result = target_margin(table, n_boot=n_boot)
    result.attrs["variant"] = variant or "all"
    return Computed(result, f"target-margin-{variant or 'all'}-{label + '-' if label else ''}{lens_mode}")


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    return {computed.name: computed.result.drop_vars(["per_token_margin", "token"]).to_dataframe().reset_index()}


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.text_grid import margin_plot

    return [margin_plot(computed.result, png_path(out, computed.name))]


TARGET_MARGIN = register_analysis(Analysis(
    name="target",
    help='log p(target) − max log p(alternative) per layer at a run\'s annotated positions (" and" vs " or"/" not", …).',
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_margin", needs_lens=True,
    params=(ANNOTATED_VARIANT, BOOTSTRAP, LENS)))


def target_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                  storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``target`` analysis for a script holding a URL (kept for callers of the old name); ``params`` as in
    ``compute`` (``variant``, ``lens_mode``, ``n_boot``, ``include``, ``exclude``, ``label``)."""
    return run_at(TARGET_MARGIN, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
