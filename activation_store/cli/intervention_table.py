"""Terminal tables of an intervention analysis: one row per coefficient."""
from __future__ import annotations

import click
import pandas as pd
import xarray as xr


def print_intervention_table(table: pd.DataFrame, shares: xr.Dataset | None) -> None:
    """Measured deltas (and the lens forecast beside them) per coefficient; then outcome shares."""
    columns = []
    for (metric, target), _ in table.groupby(["metric", "set"], sort=False):
        if metric in ("kl", "top1_changed", "delta_logprob", "delta_share"):
            columns.append((metric, target))
    click.echo("intervention deltas vs the baseline: measured mean [95% CI]  (lens forecast)")
    for coefficient, rows in table.groupby("coefficient", sort=True):
        cells = []
        for metric, target in columns:
            measured = rows[(rows.source == "measured") & (rows.metric == metric) & (rows.set == target)]
            forecast = rows[(rows.source == "lens-forecast") & (rows.metric == metric) & (rows.set == target)]
            if measured.empty:
                continue
            m = measured.iloc[0]
            cell = f"{metric}{'[' + target + ']' if target else ''}={m['mean']:+.3f} [{m.ci_low:+.3f},{m.ci_high:+.3f}]"
            if not forecast.empty:
                cell += f" ({forecast.iloc[0]['mean']:+.3f})"
            cells.append(cell)
        click.echo(f"  coef {coefficient:6.2f}  " + "  ".join(cells))
    if shares is not None:
        categories = [str(c) for c in shares.category.values]
        click.echo(f"outcomes (share of continuations over {shares.attrs.get('n_items')} items)")
        click.echo("  coefficient " + " ".join(c.rjust(10) for c in categories))
        for c in range(shares.sizes["condition"]):
            values = shares.share.isel(condition=c).values
            click.echo(f"  {float(shares.coefficient.values[c]):11.2f} " + " ".join(f"{v:10.3f}" for v in values))
