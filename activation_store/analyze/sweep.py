"""A steering sweep's numbers: per coefficient, the vector's effect on a metric beside its random control's
and the logit-lens forecast, each a mean over items with a bootstrap 95% interval.

The effect is steered − unsteered on one metric per example, from ``per_example``
(measured) or ``lens_forecast`` (forecast) deltas of the target sets' log-probs:
- ``diff:A,B``: Δ[log P(A) − log P(B)] (log-odds of set A against set B);
- ``share:A,B``: Δ[share(A) − share(B)], shares of the sets' summed probability
  (with two sets, positive share minus negative share);
- ``prob:A``: ΔP(A); ``logprob:A``: Δlog P(A); ``kl``: KL(baseline ‖ steered);
- ``outcome:RULE=CATEGORY``: Δ share of continuations the outcome rule puts in CATEGORY
  (e.g. ``outcome:arithmetic=shifted``; ``outcome_effect``; no lens forecast).
Strengths are reported relative to the residual stream: coefficient × |v| / median |h|
at the vector's layer (``relative_strength``). Pure functions; ``workflows.sweep``
opens the recorded runs."""
from __future__ import annotations

import re

import numpy as np
import xarray as xr

from ..errors import ActstoreError
from .stats import grouped_mean_ci

METRIC_HELP = "diff:A,B | share:A,B | prob:A | logprob:A | kl | outcome:RULE=CATEGORY"


def parse_metric(text: str) -> tuple[str, list[str]]:
    """``"share:pos,neg"`` → ``("share", ["pos", "neg"])``, ``"outcome:arithmetic=shifted"`` →
    ``("outcome", ["arithmetic", "shifted"])``; unknown forms are refused in one line."""
    outcome = re.fullmatch(r"outcome:([^=]+)=(.+)", (text or "").strip())
    if outcome:
        return "outcome", [outcome[1], outcome[2]]
    match = re.fullmatch(r"(diff|share|prob|logprob|kl)(?::(.*))?", (text or "").strip())
    kind = match[1] if match else None
    sets = [s.strip() for s in (match[2] or "").split(",") if s.strip()] if match else []
    wanted = {"diff": 2, "share": 2, "prob": 1, "logprob": 1, "kl": 0}.get(kind, -1)
    if match is None or len(sets) != wanted:
        raise ActstoreError(f"--metric {text!r}: expected {METRIC_HELP}")
    return kind, sets


def metric_sets(text: str) -> list[str]:
    """The target sets a metric reads."""
    kind, sets = parse_metric(text)
    return [] if kind == "outcome" else sets


def outcome_effect(categories: xr.DataArray, category: str) -> xr.DataArray:
    """Δ share (over samples) of continuations in ``category`` per (condition, example), from ``outcomes``."""
    hits = (categories == category).astype(np.float64).mean("sample")
    base = int(np.flatnonzero(categories.coefficient.values == 0)[0])
    delta = hits - hits.isel(condition=base).drop_vars("coefficient", errors="ignore")
    return delta.assign_coords(coefficient=("condition", categories.coefficient.values))


def effect(per: xr.Dataset, metric: str) -> xr.DataArray:
    """The metric's steered − unsteered change per (condition, example) from a ``per_example``/``lens_forecast`` set."""
    kind, sets = parse_metric(metric)
    if kind == "outcome":
        raise ActstoreError(f"--metric {metric!r} reads continuations; use outcome_effect on outcome categories")
    if kind == "kl":
        return per["kl"]
    known = [str(s) for s in per.set.values] if "set" in per.dims else []
    missing = [s for s in sets if s not in known]
    if missing:
        raise ActstoreError(f"--metric {metric!r}: no target set {missing[0]!r}; the target sets are {', '.join(known) or 'none'}")
    base = int(np.flatnonzero(per.coefficient.values == 0)[0])
    lp = per["set_logprob"]
    if kind == "diff":
        value = lp.sel(set=sets[0]) - lp.sel(set=sets[1])
    elif kind == "share":
        prob = np.exp(lp)
        share = prob / prob.sum("set")
        value = share.sel(set=sets[0]) - share.sel(set=sets[1])
    elif kind == "prob":
        value = np.exp(lp.sel(set=sets[0]))
    else:
        value = lp.sel(set=sets[0])
    value = value.drop_vars("set", errors="ignore")
    delta = value - value.isel(condition=base).drop_vars("coefficient", errors="ignore")
    return delta.assign_coords(coefficient=("condition", per.coefficient.values))


def residual_norm(states: xr.DataArray) -> float:
    """Median L2 norm of residual-stream states (any dims besides ``d_model``): the scale a strength is relative to."""
    norms = np.linalg.norm(np.asarray(states.transpose(..., "d_model").values, dtype=np.float64), axis=-1)
    if not norms.size:
        raise ActstoreError("no states to measure the residual norm on")
    return float(np.median(norms))


def _summary(values: xr.DataArray, n_boot: int, seed: int) -> xr.Dataset:
    return grouped_mean_ci(values.reset_coords(drop=True).assign_coords(item=("example", values["item"].values)),
                           "example", "item", n_boot, seed)


def sweep_rows(measured: xr.DataArray, control: xr.DataArray | None, forecast: xr.DataArray | None, *,
               vector_norm: float, h_norm: float, n_boot: int = 1000, seed: int = 0) -> xr.Dataset:
    """Per condition: relative strength, the vector's effect [95% CI], the control's, and the lens forecast's.

    ``measured``/``control``/``forecast`` are ``effect`` outputs (condition, example) over the same coefficients and
    items; the control's coefficients must equal the vector's (same strengths, random direction, same norm)."""
    coefficients = measured.coefficient.values
    if control is not None and not np.array_equal(control.coefficient.values, coefficients):
        raise ActstoreError(f"the control was recorded at coefficients {control.coefficient.values.tolist()}, "
                            f"the vector at {coefficients.tolist()}; record both with the same --coefficients")
    out = xr.Dataset(coords={"condition": np.arange(len(coefficients)), "coefficient": ("condition", coefficients)})
    out["relative_strength"] = ("condition", np.abs(coefficients) * vector_norm / h_norm)
    n_items = 0
    for (name, prefix), values in ((("effect", "effect"), measured), (("control_effect", "control"), control),
                                   (("forecast", "forecast"), forecast)):
        if values is None:
            continue
        summary = _summary(values, n_boot, seed)
        out[name] = ("condition", summary["mean"].values)
        out[f"{prefix}_low"] = ("condition", summary.ci_low.values)
        out[f"{prefix}_high"] = ("condition", summary.ci_high.values)
        n_items = max(n_items, int(summary.attrs["n_samples"]))
    out.attrs.update(n_items=n_items, vector_norm=float(vector_norm), residual_norm=float(h_norm))
    return out


def verdict(rows: xr.Dataset, sign: int) -> dict[str, object]:
    """Whether some nonzero strength moved the metric in the predicted direction (``sign`` ±1) with a 95% CI that
    excludes zero while the control's CI at that strength does not show the same; the best such row."""
    best = None
    for c in range(rows.sizes["condition"]):
        if rows.coefficient.values[c] == 0:
            continue
        low, high = float(rows.effect_low[c]), float(rows.effect_high[c])
        shown = low > 0 if sign > 0 else high < 0
        control_shown = False
        if "control_effect" in rows:
            clow, chigh = float(rows.control_low[c]), float(rows.control_high[c])
            control_shown = clow > 0 if sign > 0 else chigh < 0
        if shown and not control_shown and (best is None or sign * float(rows.effect[c]) > sign * float(rows.effect[best])):
            best = c
    return {"shown": best is not None, "condition": best}
