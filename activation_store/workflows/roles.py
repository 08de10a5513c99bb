"""The semantic-role confusion matrix end to end: open the run and its lens head, compute the matrix per
layer at the run's annotated tokens, save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analyze.selection import select_layers
from ..analyze.targets_compare import marked_logprobs, role_confusion
from ..plot.text_grid import roles_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store


def roles_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str | None = None,
                 lens_mode: str = "normed", layers: list[int] | None = None,
                 storage_options: dict[str, Any] | None = None) -> Report:
    """The (gold, predicted) role matrix per layer at the annotated tokens of ``variant`` (default: all)."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    result = role_confusion(marked_logprobs(ds, open_lens(store, model), variant, mode=lens_mode))
    name = f"roles-{variant or 'all'}-{lens_mode}"
    frame = result[["confusion", "mean_logprob"]].to_dataframe().reset_index()
    files = [save_csv(frame, out, name), roles_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
