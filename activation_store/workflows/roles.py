"""The semantic-role confusion matrix as one registered analysis: the runner opens the run and its lens
head, this computes the matrix per layer at the run's annotated tokens and says which table and figure it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analyze.targets_compare import marked_logprobs, role_confusion
from ..store import Store
from .analysis import Analysis, Computed, Inputs, RunOptions, Target
from .params import ANNOTATED_VARIANT, LENS
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at


def compute(inputs: Inputs, *, variant: str | None = None, lens_mode: str = "normed") -> Computed:
    """The (gold, predicted) role matrix per layer at the annotated tokens of ``variant`` (default: all)."""
    result = role_confusion(marked_logprobs(inputs.run, inputs.lens, variant, mode=lens_mode))
    return Computed(result, f"roles-{variant or 'all'}-{lens_mode}")


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    return {computed.name: computed.result[["confusion", "mean_logprob"]].to_dataframe().reset_index()}


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.text_grid import roles_plot

    return [roles_plot(computed.result, png_path(out, computed.name))]


ROLES = register_analysis(Analysis(
    name="roles",
    help="The semantic-role confusion matrix: role log-prob at each gold role, minus that role's mean over gold roles.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_roles", needs_lens=True,
    params=(ANNOTATED_VARIANT, LENS)))


def roles_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                 storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``roles`` analysis for a script holding a URL (kept for callers of the old name); ``params``:
    ``variant``, ``lens_mode``."""
    return run_at(ROLES, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
