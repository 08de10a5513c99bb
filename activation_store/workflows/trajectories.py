"""Arithmetic trajectories as one registered analysis: the runner opens the run and its lens head, this
projects a variant's last-token states into the plane of the number anchors and says which tables and
figure it makes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analyze.selection import examples_of, last_tokens
from ..analyze.trajectories import DIGITS, WORDS, anchored_pca, number_anchors
from ..store import Store
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .registry import register_analysis
from .results import Report, png_path
from .runner import run_at


def anchor_strings(value: str | None) -> tuple[str, ...]:
    """``--anchors "1,2"`` → ("1", "2"); none: the digits and the number words."""
    return tuple(a for a in value.split(",") if a) if value else DIGITS + WORDS


def compute(inputs: Inputs, *, variant: str, anchors: tuple[str, ...] = DIGITS + WORDS) -> Computed:
    """Last-token paths of ``variant``'s examples through the layers, in the PCA plane of the ``anchors``."""
    ds = inputs.run
    result = anchored_pca(last_tokens(ds, examples_of(ds, variant=variant)), number_anchors(inputs.lens, anchors))
    result.attrs["variant"] = variant
    return Computed(result, f"trajectories-{variant}")


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    return {computed.name: computed.result.trajectory.to_dataframe().reset_index(),
            f"{computed.name}-anchors": computed.result.anchor_position.to_dataframe().reset_index()}


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.text_grid import trajectories_plot

    return [trajectories_plot(computed.result, png_path(out, computed.name))]


TRAJECTORIES = register_analysis(Analysis(
    name="trajectories",
    help="Per-layer last-token paths in the PCA plane of the digit and number-word unembeddings.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_trajectories",
    needs_lens=True,
    params=(Param("--variant", "variant", "The variant whose last-token states to trace (e.g. result-first).",
                  required=True),
            Param("--anchors", "anchors", 'Comma-separated anchor tokens (default: "0".."9" and " zero".." nine").',
                  convert=anchor_strings))))


def trajectories_report(store: str | Store, model: str, dataset: str, out: Path, *, layers: list[int] | None = None,
                        storage_options: dict[str, Any] | None = None, **params: Any) -> Report:
    """The ``trajectories`` analysis for a script holding a URL (kept for callers of the old name); ``params``:
    ``variant``, ``anchors``."""
    return run_at(TRAJECTORIES, store, Target(model, dataset), RunOptions(out, layers), storage_options, **params)
