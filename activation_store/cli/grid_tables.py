"""Terminal tables of the text-grid analyses: target margins, role matrices, baseline similarity."""
from __future__ import annotations

import click
import xarray as xr


def print_margin_table(result: xr.Dataset) -> None:
    click.echo(f"log p(target) − max log p(alternative), {result.attrs['n_positions']} positions, "
               f"{result.attrs['lens']} lens [95% CI], share where the target wins")
    for layer in result.layer.values:
        r = result.sel(layer=layer)
        click.echo(f"  layer {int(layer):>3}  {float(r.margin):+8.3f} [{float(r.ci_low):+.3f}, {float(r.ci_high):+.3f}]"
                   f"  wins {float(r.target_wins):6.1%}")


def print_roles_table(result: xr.Dataset) -> None:
    golds = [str(g) for g in result.gold.values]
    click.echo(f"role confusion ({result.attrs['lens']} lens): rows gold, columns predicted; centred log-prob")
    width = max(len(repr(g)) for g in golds) + 2
    for layer in result.layer.values:
        click.echo(f"  layer {int(layer)}" + "".join(f"{g!r:>{width}}" for g in golds))
        for gold in golds:
            row = result.confusion.sel(layer=layer, gold=gold).values
            click.echo(f"    {gold!r:>{width - 2}}" + "".join(f"{v:>{width}.3f}" for v in row))


def print_baseline_table(result: xr.Dataset) -> None:
    click.echo(f"similarity {result.attrs['pair']} minus baseline {result.attrs['baseline']} "
               f"({result.attrs['pool']} token): matched − baseline cosine [95% CI]")
    for layer in result.layer.values:
        r = result.sel(layer=layer)
        click.echo(f"  layer {int(layer):>3}  {float(r.score):+.4f} [{float(r.ci_low):+.4f}, {float(r.ci_high):+.4f}]")
