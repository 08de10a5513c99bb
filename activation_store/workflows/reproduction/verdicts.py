"""Per-layer numbers as table rows, and the verdict rules: one place that says what "reproduced" means."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MIDDLE = (0.25, 0.75)                              # relative depth counted as "middle layers"
Verdict = tuple[str, str]                          # (verdict, why)


def layer_rows(model: str, lens: str, series: str, layers: np.ndarray, value: Any, low: Any = None,
               high: Any = None) -> pd.DataFrame:
    """A per-layer curve as table rows, with each layer's relative depth (layer / last layer)."""
    layers = np.asarray(layers)
    nan = np.full(len(layers), np.nan)
    return pd.DataFrame({"model": model, "lens": lens, "series": series, "layer": layers,
                         "depth": layers / max(int(layers.max()), 1), "value": np.asarray(value, dtype=float),
                         "ci_low": nan if low is None else np.asarray(low, dtype=float),
                         "ci_high": nan if high is None else np.asarray(high, dtype=float)})


def in_middle(depth: np.ndarray) -> np.ndarray:
    """Which relative depths count as middle layers."""
    return (depth >= MIDDLE[0]) & (depth <= MIDDLE[1])


def middle(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows at middle layers."""
    return rows[in_middle(rows.depth)]


def fmt(row: pd.Series) -> str:
    """One layer's value (and interval) as the reasons quote it."""
    ci = "" if np.isnan(row.ci_low) else f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
    return f"layer {int(row.layer)} ({row.depth:.0%}): {row.value:+.3f}{ci}"


def middle_verdict(rows: pd.DataFrame, sign: int = 1, what: str = "the effect",
                   beyond_embeddings: bool = False) -> Verdict:
    """Reproduced when the 95% interval excludes zero in the expected direction at some middle layer
    (25–75% depth); partly when it does only outside the middle; otherwise not reproduced at this scale.
    ``beyond_embeddings``: the middle-layer effect must also exceed the embeddings' (layer 0), else partly
    (a similarity already present in the input embeddings is not the hub's)."""
    def hits(frame):
        return frame[(sign * frame.ci_low > 0) if sign > 0 else (frame.ci_high < 0)]
    inner = rows[rows.layer > 0]
    mid, anywhere = hits(middle(inner)), hits(inner)
    best = inner.loc[(sign * inner.value).idxmax()] if len(inner) else None
    direction = "> 0" if sign > 0 else "< 0"
    if len(mid):
        pick = mid.loc[(sign * mid.value).idxmax()]
        why = (f"{what} {direction} with the 95% interval excluding 0 in {len(mid)} of "
               f"{len(middle(inner))} middle layers (strongest {fmt(pick)})")
        embedded = rows[rows.layer == 0]
        if beyond_embeddings and len(embedded) and sign * embedded.value.iloc[0] >= sign * pick.value:
            return "partly", why + f", but no larger than at the embeddings ({fmt(embedded.iloc[0])})"
        return "reproduced", why
    if len(anywhere):
        pick = anywhere.loc[(sign * anywhere.value).idxmax()]
        return "partly", f"{what} {direction} only outside the middle layers ({fmt(pick)})"
    shown = f"; strongest {fmt(best)}" if best is not None else ""
    return "not reproduced at this scale", f"no layer where {what} {direction} with an interval excluding 0{shown}"


def with_end(verdict: Verdict, rows: pd.DataFrame, end_sign: int | None) -> Verdict:
    """A claim that also names the last layer's direction: reproduced only if the last layer agrees."""
    if end_sign is None:
        return verdict
    last = rows.iloc[-1]
    at_end = end_sign * last.value > 0
    why = verdict[1] + f"; at the last layer {last.value:+.3f} ({'as' if at_end else 'not as'} expected)"
    return ("partly" if verdict[0] == "reproduced" and not at_end else verdict[0]), why


def combine(verdicts: list[tuple[str, str, str]]) -> Verdict:
    """One verdict over the lenses: the normed lens's (on models whose residual norm grows to 1e4 and more,
    such as Gemma 3, the raw lens's log-probabilities are degenerate), with every lens's reason beside it."""
    by_lens = {lens: verdict for lens, verdict, _ in verdicts}
    verdict = by_lens.get("normed", verdicts[0][1])
    reasons = "; ".join(f"{lens} lens: {verdict_} — {why}" for lens, verdict_, why in verdicts)
    return verdict, reasons
