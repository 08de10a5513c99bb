"""The logit lens end to end: open the run and its lens head, read out, save under the store, write CSV and PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from ..analyze.logit_lens import logit_lens, target_summary
from ..analyze.selection import select_layers
from ..analyze.targets import RULES, from_file, from_rule
from ..plot.analyses import logit_lens_plot, target_plot
from ..store import Store, open_lens, open_run
from .results import Report, file_name, save_csv, save_to_store

COLUMNS = ["layer", "token", "position", "rank", "top_id", "top_token", "top_prob"]


def _targets(spec: str | None, ds: xr.Dataset, lens: xr.Dataset) -> xr.DataArray | None:
    if spec is None:
        return None
    return from_rule(spec, ds, lens) if spec in RULES else from_file(spec, ds, lens)


def logit_lens_report(store: str | Store, model: str, dataset: str, out: Path, *, example: int | None = None,
                      variant: str | None = None, item: str | None = None, targets: str | None = None, k: int = 5,
                      layers: list[int] | None = None, storage_options: dict[str, Any] | None = None,
                      lens_mode: str = "normed", modality: str | None = None) -> Report:
    """Logit lens over one example (a Figure-1 table and heatmap) or over all examples of a variant/item;
    ``targets`` (a rule name or a targets file) adds each target's log-prob per layer with a 95% interval.
    ``lens_mode`` raw (the paper's lens, no final norm on inner layers) saves under a ``-raw`` name;
    ``modality`` keeps only the text, image or audio tokens of the selection."""
    store = Store.open(store, storage_options)                          # opened once for every read
    ds = select_layers(open_run(store, model, dataset), layers)
    lens = open_lens(store, model)
    target_ids = _targets(targets, ds, lens)
    result = logit_lens(ds, lens, example=example, variant=variant, item=item, targets=target_ids, k=k, mode=lens_mode,
                        modality=modality)
    name = f"logit-lens-{result.attrs['selection']}" + ("-raw" if lens_mode == "raw" else "")
    frame = result.drop_vars([v for v in ("target_id", "target_logprob", "target_rank") if v in result]).to_dataframe()
    files = [save_csv(frame.reset_index()[COLUMNS], out, name)]
    if result.attrs["n_examples"] == 1:
        files.append(logit_lens_plot(result, out / f"{file_name(name)}.png", title=f"Logit lens: {result.attrs['text']!r}"))
    if target_ids is not None:
        summary = target_summary(result)
        result["mean_logprob"], result["ci_low"], result["ci_high"] = summary.mean_logprob, summary.ci_low, summary.ci_high
        files.append(save_csv(summary.to_dataframe().reset_index(), out, f"{name}-targets"))
        files.append(target_plot(summary, out / f"{file_name(name)}-targets.png"))
    return Report(result, files, save_to_store(result.drop_vars(["top_token"]), store, model, dataset, name))
