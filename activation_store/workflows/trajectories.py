"""Arithmetic trajectories end to end: open the run and its lens head, project a variant's last-token states
into the plane of the number anchors, save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analyze.selection import examples_of, last_tokens, select_layers
from ..analyze.trajectories import DIGITS, WORDS, anchored_pca, number_anchors
from ..plot.text_grid import trajectories_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store


def trajectories_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str,
                        anchors: tuple[str, ...] = DIGITS + WORDS, layers: list[int] | None = None,
                        storage_options: dict[str, Any] | None = None) -> Report:
    """Last-token paths of ``variant``'s examples through the layers, in the PCA plane of the ``anchors``."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = anchored_pca(last_tokens(ds, examples_of(ds, variant=variant)), number_anchors(open_lens(store, model), anchors))
    result.attrs["variant"] = variant
    name = f"trajectories-{variant}"
    files = [save_csv(result.trajectory.to_dataframe().reset_index(), out, name),
             save_csv(result.anchor_position.to_dataframe().reset_index(), out, f"{name}-anchors"),
             trajectories_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
