"""Target versus alternatives end to end: open the run and its lens head, compute the margin per layer at the
run's annotated tokens, save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analyze.selection import select_layers
from ..analyze.targets_compare import marked_logprobs, target_margin, with_targets
from ..plot.text_grid import margin_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store


def target_report(store: str | Store, model: str, dataset: str, out: Path, *, variant: str | None = None,
                  lens_mode: str = "normed", n_boot: int = 1000, layers: list[int] | None = None,
                  include: list[str] | None = None, exclude: list[str] | None = None, label: str | None = None,
                  storage_options: dict[str, Any] | None = None) -> Report:
    """log p(target) − max log p(alternative) per layer at the annotated tokens of ``variant`` (default: all);
    ``include``/``exclude`` keep only positions with (without) those targets, saved as ``label`` (e.g. "and")."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    table = marked_logprobs(ds, open_lens(store, model), variant, mode=lens_mode)
    if include is not None or exclude is not None:
        table = with_targets(table, include, exclude)
    result = target_margin(table, n_boot=n_boot)
    result.attrs["variant"] = variant or "all"
    name = f"target-margin-{variant or 'all'}-{label + '-' if label else ''}{lens_mode}"
    frame = result.drop_vars(["per_token_margin", "token"]).to_dataframe().reset_index()
    files = [save_csv(frame, out, name), margin_plot(result, out / f"{file_name(name)}.png")]
    return Report(result, files, save_to_store(result, store, model, dataset, name))
