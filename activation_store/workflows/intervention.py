"""The intervention analysis as one registered analysis: open a recorded run, compute deltas and forecasts,
and say which tables and figure it makes; the runner saves it under the store's results tree
(``/results/<model>/<dataset>/intervention-<vector>``). No model is loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from ..analyze.intervention import (forecast_states, lens_forecast, outcome_rule, outcome_shares, outcomes,
                                    per_example, set_ids, summarize)
from ..errors import ActstoreError
from ..store import Store, layout
from ..store.interventions import open_recorded
from ..store.steering import read_vector
from ..target_sets import read_target_sets
from .analysis import Analysis, Computed, Inputs, Param, RunOptions, Target
from .params import BOOTSTRAP
from .registry import register_analysis
from .results import png_path
from .runner import run_at


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


def _forecast(inputs: Inputs, ds: xr.Dataset, vector: str, ids: Any, n_boot: int) -> xr.Dataset | None:
    """The lens-level forecast per condition, where the recording kept the states it needs."""
    states = forecast_states(ds, int(ds.attrs["layer"]))
    if states is None:
        return None
    steer = read_vector(inputs.store, inputs.target.model, vector)
    return summarize(lens_forecast(states, inputs.lens, steer.vector, ds.coefficient.values, ids, ds.support_id.values),
                     n_boot)


def _shares(ds: xr.Dataset, rule: Any, n_boot: int) -> xr.Dataset | None:
    """Outcome shares of the continuations under ``rule`` (default: same as the baseline's); None without either."""
    if rule is None and not ("generated_text" in ds and ds.sizes.get("step", 0)):
        return None
    rule = rule or outcome_rule("same-as-baseline")
    return outcome_shares(outcomes(ds, rule), rule.categories, n_boot)


def _merged(summary: xr.Dataset, predicted: xr.Dataset | None, shares: xr.Dataset | None) -> xr.Dataset:
    """Measured, forecast and outcome variables in one dataset, as saved under the store."""
    result = summary.rename({v: f"measured_{v}" for v in summary.data_vars})
    if predicted is not None:
        result = result.merge(predicted.rename({v: f"forecast_{v}" for v in predicted.data_vars}), compat="override")
    if shares is not None:
        result = result.merge(shares.rename({v: f"outcome_{v}" for v in shares.data_vars}), compat="override")
    return result


def compute(inputs: Inputs, *, vector: str, targets: str | None = None, rule: str | None = None, n_boot: int = 1000,
            forecast: bool = True) -> Computed:
    """Deltas of a recorded intervention against its baseline, the lens forecast next to them, and outcome shares."""
    if n_boot < 1:
        raise ActstoreError(f"--bootstrap must be at least 1, got {n_boot}")
    model, dataset = inputs.target.model, inputs.target.dataset
    ds = open_recorded(inputs.store, model, dataset, vector)
    check_rule = outcome_rule(rule) if rule else None       # a bad rule fails before any work
    ids = set_ids(ds, read_target_sets(targets), inputs.lens[layout.VOCAB_TOKEN].values) if targets else None
    per = per_example(ds, ids)
    summary = summarize(per, n_boot)
    predicted = _forecast(inputs, ds, vector, ids, n_boot) if forecast else None
    table = long_table(summary, "measured")
    if predicted is not None:
        table = pd.concat([table, long_table(predicted, "lens-forecast")], ignore_index=True)
    shares = _shares(ds, check_rule, n_boot)
    result = _merged(summary, predicted, shares)
    result.attrs = {"vector": vector, "layer": int(ds.attrs["layer"]), "positions": str(ds.attrs.get("positions")),
                    "rule": rule or "", "targets": targets or "", "n_items": int(summary.attrs.get("n_items", 0)),
                    "kl": per.attrs["kl"]}
    title = f"{vector} at layer {ds.attrs['layer']} (positions: {ds.attrs.get('positions')}): {model} / {dataset}"
    return Computed(result, f"intervention-{vector}", parts={"summary": summary, "forecast": predicted, "shares": shares,
                                                              "table": table, "per_example": per, "title": title})


def tables(computed: Computed) -> dict[str, pd.DataFrame]:
    """The long table, the per-example table and, where there are continuations, the outcome shares."""
    name, parts = computed.name, computed.parts
    found = {name: parts["table"], f"{name}-per-example": parts["per_example"].to_dataframe().reset_index()}
    if parts["shares"] is not None:
        found[f"{name}-outcomes"] = parts["shares"].to_dataframe().reset_index()
    return found


def plot(computed: Computed, out: Path) -> list[Path]:
    from ..plot.intervention import intervention_plot

    parts = computed.parts
    return [intervention_plot(parts["table"], parts["shares"], png_path(out, computed.name), parts["title"])]


INTERVENTION = register_analysis(Analysis(
    name="intervention",
    help="Deltas of a recorded intervention against its baseline, per coefficient, with a lens-level forecast.",
    compute=compute, tables=tables, plot=plot, printed="activation_store.cli.tables:show_intervention",
    needs_lens=True, reads_run=False,
    params=(Param("--vector", "vector", "The steering vector whose recorded run (extract --intervene) to analyse.",
                  required=True),
            Param("--target-tokens", "targets", "Target sets (as extract --target-tokens): one vocabulary string a line, "
                  "or a .json of named sets."),
            Param("--rule", "rule", "Outcome rule for continuations: arithmetic[:SHIFT] or same-as-baseline."),
            BOOTSTRAP,
            Param("--forecast/--no-forecast", "forecast", "The logit-lens forecast at the vector's layer (skip: "
                  "--no-forecast).", default=True, kind=bool))))


def intervention_report(store: str | Store, model: str, dataset: str, vector: str, out: Path, *,
                        storage_options: dict[str, Any] | None = None, **params: Any) -> InterventionReport:
    """The ``intervention`` analysis for a script holding a URL (kept for callers of the old name); ``params``:
    ``targets``, ``rule``, ``n_boot``, ``forecast``."""
    report = run_at(INTERVENTION, store, Target(model, dataset), RunOptions(out), storage_options, vector=vector,
                    **params)
    parts = report.parts
    return InterventionReport(parts["summary"], parts["forecast"], parts["shares"], parts["table"], report.files,
                              report.store_path)
