"""A steering sweep end to end: for each (vector, random control) pair recorded on one dataset, the effect per
coefficient beside the control's and the lens forecast, as one table (``sweep_table``), and a markdown rendering
(``markdown_table``) a report can include. Recording is ``record_interventions`` (``record_pair`` records a vector
and its control with the same settings); nothing here loads a model except through it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..analyze.intervention import (forecast_states, lens_forecast, outcome_rule, outcomes, per_example, set_ids)
from ..analyze.sweep import effect, metric_sets, outcome_effect, parse_metric, residual_norm, sweep_rows, verdict
from ..errors import ActstoreError
from ..extract.interventions import InterventionResult, InterventionSpec, record_interventions
from ..extract.spec import RunSpec
from ..store import Store, layout, open_lens
from ..store.interventions import open_recorded
from ..store.steering import read_vector
from ..target_sets import read_target_sets
from .steering import define_vector

COLUMNS = ["vector", "control", "layer", "positions", "coefficient", "relative_strength", "effect", "effect_low",
           "effect_high", "control_effect", "control_low", "control_high", "forecast", "forecast_low", "forecast_high",
           "n_items"]


def define_control(store: str, model: str, vector: str, seed: int = 0, *, overwrite: bool = True,
                   storage_options: dict[str, Any] | None = None) -> str:
    """Store ``<vector>-random<seed>``: a random direction with ``vector``'s norm and layer. Returns its name."""
    name = f"{vector}-random{seed}"
    define_vector(store, model, name, None, random_like=vector, seed=seed, overwrite=overwrite,
                  storage_options=storage_options)
    return name


def record_pair(spec: RunSpec, steering: InterventionSpec, control: str) -> list[InterventionResult]:
    """Record ``steering``'s vector and its control ``control`` with the same coefficients, positions and targets."""
    return [record_interventions(spec, steering), record_interventions(spec, replace(steering, vector=control))]


def _h_norm(ds: xr.Dataset, layer: int) -> float:
    """Median |h| over the baseline's prompt tokens (BOS excluded) at ``layer`` from a recorded run."""
    if "states" not in ds or layer not in set(ds.layer.values.tolist()):
        raise ActstoreError(f"the recorded run holds no states at layer {layer}; record with --record-layers {layer}")
    base = int(np.flatnonzero(ds.coefficient.values == 0)[0])
    keep = np.flatnonzero(ds.position.values > 0)
    return residual_norm(ds.states.isel(condition=base).sel(layer=layer).isel(token=keep))


@dataclass(frozen=True)
class Measure:
    """What a sweep measures: the ``metric`` over the target sets ``targets`` (a file, or the sets themselves),
    ``n_boot`` bootstrap resamples for the intervals, and whether the lens forecast is computed beside it."""

    metric: str
    targets: str | dict[str, list[str]] | None
    n_boot: int = 1000
    forecast: bool = True


def sweep_pair(store: str | Store, model: str, dataset: str, vector: str, control: str | None, measure: Measure, *,
               storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """One vector's sweep rows (``analyze.sweep.sweep_rows``) from its recorded run and its control's."""
    metric, targets, n_boot, forecast = measure.metric, measure.targets, measure.n_boot, measure.forecast
    store = Store.open(store, storage_options)
    sets = read_target_sets(targets) if isinstance(targets, str) else dict(targets or {})
    wanted = metric_sets(metric)
    missing = [s for s in wanted if s not in sets]
    if missing:
        raise ActstoreError(f"--metric {metric!r} reads set {missing[0]!r}, not among the target sets "
                            f"({', '.join(sets) or 'none given'})")
    lens = open_lens(store, model)
    vocab = lens[layout.VOCAB_TOKEN].values

    kind, args = parse_metric(metric)

    def measured(name: str) -> tuple[xr.Dataset, xr.DataArray]:
        ds = open_recorded(store, model, dataset, name)
        if kind == "outcome":
            rule = outcome_rule(args[0])
            if args[1] not in rule.categories:
                raise ActstoreError(f"--metric {metric!r}: rule {args[0]!r} has categories {', '.join(rule.categories)}")
            return ds, outcome_effect(outcomes(ds, rule), args[1])
        ids = set_ids(ds, sets, vocab) if sets else None
        return ds, effect(per_example(ds, ids), metric)

    ds, measured_effect = measured(vector)
    control_effect = measured(control)[1] if control else None
    layer = int(ds.attrs["layer"])
    steer = read_vector(store, model, vector)
    predicted = None
    states = forecast_states(ds, layer) if forecast and kind != "outcome" else None
    if states is not None:
        ids = set_ids(ds, sets, vocab) if sets else None
        predicted = effect(lens_forecast(states, lens, steer.vector, ds.coefficient.values, ids, ds.support_id.values),
                           metric)
    rows = sweep_rows(measured_effect, control_effect, predicted, vector_norm=float(np.linalg.norm(steer.vector)),
                      h_norm=_h_norm(ds, layer), n_boot=n_boot)
    rows.attrs.update(vector=vector, control=control or "", layer=layer, positions=str(ds.attrs.get("positions", "")),
                      metric=metric, dataset=dataset, model=model)
    return rows


def sweep_table(store: str | Store, model: str, dataset: str, pairs: Sequence[tuple[str, str | None]], metric: str,
                targets: str | dict[str, list[str]] | None, *, n_boot: int = 1000,
                storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every (vector, control) pair's rows as one table, columns ``COLUMNS`` (baseline rows left out)."""
    if not pairs:
        raise ActstoreError("a sweep needs at least one vector")
    frames = []
    for vector, control in pairs:
        rows = sweep_pair(store, model, dataset, vector, control, Measure(metric, targets, n_boot=n_boot),
                          storage_options=storage_options)
        frame = rows.to_dataframe().reset_index(drop=True)
        frame = frame[frame.coefficient != 0]
        for key in ("vector", "control", "layer", "positions"):
            frame[key] = rows.attrs[key]
        frame["n_items"] = rows.attrs["n_items"]
        frames.append(frame.reindex(columns=COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    table.attrs.update(metric=metric, dataset=dataset, model=model)
    return table


def table_verdict(table: pd.DataFrame, sign: int) -> dict[str, Any]:
    """``analyze.sweep.verdict`` over a whole table: the strongest row in the predicted direction (``sign`` ±1) whose
    CI excludes zero while its control's does not show the same, or None."""
    if table.empty:
        return {"shown": False, "row": None}
    fields = [c for c in ("effect", "effect_low", "effect_high", "control_effect", "control_low", "control_high")
              if c in table and not table[c].isna().all()]
    rows = xr.Dataset({c: ("condition", table[c].to_numpy(dtype=float)) for c in fields},
                      coords={"condition": np.arange(len(table)), "coefficient": ("condition", table.coefficient.to_numpy())})
    found = verdict(rows, sign)
    return {"shown": found["shown"], "row": table.iloc[found["condition"]] if found["shown"] else None}


def ci_cell(mean: float, low: float, high: float, digits: int = 3) -> str:
    """A mean and its 95% interval as "+0.123 [+0.045, +0.201]" (tables and reports alike), or "—" if not measured."""
    if pd.isna(mean):
        return "—"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """The sweep as a markdown table: layer, coefficient, relative strength, effect [CI], control [CI], forecast [CI]."""
    lines = ["| vector | layer | coefficient | relative strength | effect [95% CI] | random control [95% CI] | "
             "lens forecast [95% CI] |", "|---|---:|---:|---:|---|---|---|"]
    for _, row in table.iterrows():
        lines.append(f"| {row.vector} | {row.layer} | {row.coefficient:g} | {row.relative_strength:.2f} | "
                     f"{ci_cell(row.effect, row.effect_low, row.effect_high, digits)} | "
                     f"{ci_cell(row.control_effect, row.control_low, row.control_high, digits)} | "
                     f"{ci_cell(row.forecast, row.forecast_low, row.forecast_high, digits)} |")
    return "\n".join(lines)
