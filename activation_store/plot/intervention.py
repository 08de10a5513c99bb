"""The intervention figure: metrics over the coefficient, measured beside the lens forecast, and outcome shares."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr

from .figure import new_figure, save
from .fonts import cjk_fonts


@cjk_fonts()
def intervention_plot(table: pd.DataFrame, shares: xr.Dataset | None, path: Path, title: str) -> Path:
    """One panel per metric over the coefficient (measured solid, lens forecast dashed), plus outcome shares."""
    metrics = [m for m in dict.fromkeys(table.metric) if m in ("kl", "top1_changed", "delta_logprob", "delta_share")]
    panels = len(metrics) + (1 if shares is not None else 0)
    fig, axes = new_figure(figsize=(4 * max(panels, 1), 3.4), nrows=1, ncols=max(panels, 1), squeeze=False)
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
    return save(fig, path)

