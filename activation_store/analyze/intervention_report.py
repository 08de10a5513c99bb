"""The intervention analysis end to end: open a recorded run, compute deltas and forecasts, write CSV, PNG and
the result under the store (``/<model>/interventions/<dataset>/<vector>/results/<name>``). No model is loaded."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from ..errors import ActstoreError  # noqa: E402
from ..store import Store, open_lens  # noqa: E402
from ..store.interventions import intervention_path, open_recorded  # noqa: E402
from ..store.handle import quiet_zarr  # noqa: E402
from ..target_sets import read_target_sets  # noqa: E402
from . import plots  # noqa: E402
from .intervention import (forecast_states, lens_forecast, outcome_rule, outcome_shares, outcomes,  # noqa: E402
                           per_example, set_ids, summarize, vocabulary)
from .results import _storable, file_name, save_csv  # noqa: E402


@dataclass
class InterventionReport:
    summary: xr.Dataset                      # measured, per condition
    forecast: xr.Dataset | None              # lens-level forecast, per condition
    shares: xr.Dataset | None                # outcome shares, per condition × category
    table: pd.DataFrame                      # long table of everything above
    files: list[Path] = field(default_factory=list)
    store_path: str = ""


def long_table(summary: xr.Dataset, source: str) -> pd.DataFrame:
    """Rows (source, metric, set, condition, coefficient, mean, ci_low, ci_high, n_items)."""
    rows = []
    for name in summary.data_vars:
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        var = summary[name]
        sets = summary.set.values if "set" in var.dims else [""]
        for s in sets:
            pick = var.sel(set=s) if "set" in var.dims else var
            low = summary[f"{name}_ci_low"].sel(set=s) if "set" in var.dims else summary[f"{name}_ci_low"]
            high = summary[f"{name}_ci_high"].sel(set=s) if "set" in var.dims else summary[f"{name}_ci_high"]
            for c in range(summary.sizes["condition"]):
                rows.append({"source": source, "metric": name, "set": str(s), "condition": c,
                             "coefficient": float(summary.coefficient.values[c]), "mean": float(pick.values[c]),
                             "ci_low": float(low.values[c]), "ci_high": float(high.values[c]),
                             "n_items": int(summary.attrs.get("n_items", 0))})
    return pd.DataFrame(rows)


def intervention_plot(table: pd.DataFrame, shares: xr.Dataset | None, path: Path, title: str) -> Path:
    """One panel per metric over the coefficient (measured solid, lens forecast dashed), plus outcome shares."""
    metrics = [m for m in dict.fromkeys(table.metric) if m in ("kl", "top1_changed", "delta_logprob", "delta_share")]
    panels = len(metrics) + (1 if shares is not None else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(4 * max(panels, 1), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (source, target), rows in table[table.metric == metric].groupby(["source", "set"], sort=False):
            style = "-" if source == "measured" else "--"
            label = f"{source}{' ' + target if target else ''}"
            ax.plot(rows.coefficient, rows["mean"], style, marker="o", ms=3, label=label)
            ax.fill_between(rows.coefficient, rows.ci_low, rows.ci_high, alpha=0.2)
        ax.set(xlabel="coefficient", title=metric)
        ax.legend(fontsize=7)
    if shares is not None:
        ax = axes[0][-1]
        for category in shares.category.values:
            row = shares.sel(category=category)
            ax.plot(shares.coefficient, row.share, marker="o", ms=3, label=str(category))
            ax.fill_between(shares.coefficient, row.ci_low, row.ci_high, alpha=0.2)
        ax.set(xlabel="coefficient", ylabel="share of continuations", title="outcomes", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return plots._save(fig, path)


def intervention_report(store: str, model: str, dataset: str, vector: str, out: Path, *, targets: str | None = None,
                        rule: str | None = None, n_boot: int = 1000, forecast: bool = True,
                        storage_options: dict[str, Any] | None = None) -> InterventionReport:
    """Deltas of a recorded intervention against its baseline, the lens forecast next to them, and outcome shares."""
    if n_boot < 1:
        raise ActstoreError(f"--bootstrap must be at least 1, got {n_boot}")
    store = Store.open(store, storage_options)
    ds = open_recorded(store, model, dataset, vector)
    lens = open_lens(store, model)
    check_rule = outcome_rule(rule) if rule else None
    ids = set_ids(ds, read_target_sets(targets), vocabulary(lens)) if targets else None
    per = per_example(ds, ids)
    summary = summarize(per, n_boot)
    table = long_table(summary, "measured")
    predicted = None
    states = forecast_states(ds, int(ds.attrs["layer"])) if forecast else None
    if states is not None:
        from ..store.steering import read_vector

        steer = read_vector(store, model, vector)
        per_forecast = lens_forecast(states, lens, steer.vector, ds.coefficient.values, ids, ds.support_id.values)
        predicted = summarize(per_forecast, n_boot)
        table = pd.concat([table, long_table(predicted, "lens-forecast")], ignore_index=True)
    shares = None
    if rule or ("generated_text" in ds and ds.sizes.get("step", 0)):
        check_rule = check_rule or outcome_rule("same-as-baseline")
        shares = outcome_shares(outcomes(ds, check_rule), check_rule.categories, n_boot)
    name = f"intervention-{vector}"
    files = [save_csv(table, out, name)]
    frame = per.to_dataframe().reset_index()
    files.append(save_csv(frame, out, f"{name}-per-example"))
    if shares is not None:
        files.append(save_csv(shares.to_dataframe().reset_index(), out, f"{name}-outcomes"))
    files.append(intervention_plot(table, shares, out / f"{file_name(name)}.png",
                                   f"{vector} at layer {ds.attrs['layer']} (positions: {ds.attrs.get('positions')}): "
                                   f"{model} / {dataset}"))
    result = summary.rename({v: f"measured_{v}" for v in summary.data_vars})
    if predicted is not None:
        result = result.merge(predicted.rename({v: f"forecast_{v}" for v in predicted.data_vars}), compat="override")
    if shares is not None:
        result = result.merge(shares.rename({v: f"outcome_{v}" for v in shares.data_vars}), compat="override")
    result.attrs = {"vector": vector, "layer": int(ds.attrs["layer"]), "positions": str(ds.attrs.get("positions")),
                    "rule": rule or "", "targets": targets or "", "n_items": int(summary.attrs.get("n_items", 0)),
                    "kl": per.attrs["kl"]}
    path = f"{intervention_path(model, dataset, vector)}/results/{file_name(name)}"
    writable = Store.open(store, mode="r+")
    with quiet_zarr():
        _storable(result).to_zarr(writable.zarr_store, group=path, mode="w", consolidated=False, zarr_format=3)
    writable.consolidate()
    return InterventionReport(summary, predicted, shares, table, files, path)
