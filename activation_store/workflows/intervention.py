"""The intervention analysis end to end: open a recorded run, compute deltas and forecasts, write CSV and PNG,
and save the result under the store's results tree (``/results/<model>/<dataset>/intervention-<vector>``).
No model is loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ..analyze.intervention import (forecast_states, lens_forecast, outcome_rule, outcome_shares, outcomes,
                                    per_example, set_ids, summarize)
from ..errors import ActstoreError
from ..plot.intervention import intervention_plot
from ..store import Store, layout, open_lens
from ..store.interventions import open_recorded
from ..store.steering import read_vector
from ..target_sets import read_target_sets
from .results import file_name, save_csv, save_to_store


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
    ids = set_ids(ds, read_target_sets(targets), lens[layout.VOCAB_TOKEN].values) if targets else None
    per = per_example(ds, ids)
    summary = summarize(per, n_boot)
    table = long_table(summary, "measured")
    predicted = None
    states = forecast_states(ds, int(ds.attrs["layer"])) if forecast else None
    if states is not None:
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
    path = save_to_store(result, store, model, dataset, name)
    return InterventionReport(summary, predicted, shares, table, files, path)
