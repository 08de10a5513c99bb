"""Terminal tables of analysis results: the printers, and each registered analysis's table on its ``Report``."""
from __future__ import annotations

import unicodedata

import click
import xarray as xr

from ..workflows.results import Report
from .grid_tables import print_baseline_table, print_margin_table, print_roles_table
from .intervention_table import print_intervention_table


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(token: object, width: int) -> str:
    """A token shown in ``width`` terminal columns (wide CJK characters count two)."""
    text = repr(str(token))[1:-1]
    while _display_width(text) > width:
        text = text[:-2] + "…"
    return text + " " * (width - _display_width(text))


def print_similarity_table(result: xr.Dataset) -> None:
    centred = "mean-centred" if int(result.attrs.get("centered", 0)) else "raw"
    click.echo(f"similarity ({result.attrs.get('pool')} token, {centred}): paired − unpaired cosine [95% CI]")
    for pair in result.pair.values:
        click.echo(f"  {pair}")
        row = result.sel(pair=pair)
        for layer in row.layer.values:
            r = row.sel(layer=layer)
            bar = "#" * max(0, int(round(float(r.score) * 40)))
            click.echo(f"    layer {int(layer):3d}  {float(r.score):+.3f}  [{float(r.ci_low):+.3f}, {float(r.ci_high):+.3f}]  {bar}")


def print_lens_table(result: xr.Dataset, width: int = 10) -> None:
    """Figure-1 style: a row per layer, a column per input position, the top-1 token in each cell."""
    top = result.top_token.isel(rank=0).transpose("layer", "token").values
    inputs = result.attrs.get("input_tokens") or []
    if not inputs:
        click.echo(f"logit lens over {top.shape[1]} positions ({result.attrs.get('selection')}); see the CSV for all of them")
        top = top[:, :8]
    else:
        click.echo(f"logit lens on {result.attrs.get('text')!r}: top-1 token per layer (rows) and input position (columns)")
        click.echo("input".rjust(7) + " " + " ".join(_cell(t, width) for t in inputs))
    for i, layer in enumerate(result.layer.values):
        click.echo(f"{int(layer):7d} " + " ".join(_cell(t, width) for t in top[i]))
    if "mean_logprob" in result:
        click.echo("target log-prob per layer: " + " ".join(f"{int(l)}:{float(v):.2f}" for l, v in
                                                         zip(result.layer.values, result.mean_logprob.values)))


def print_language_table(mass: xr.DataArray) -> None:
    languages = [str(lang) for lang in mass.language.values]
    click.echo("probability mass per language (logit lens)")
    click.echo("  layer " + " ".join(lang.rjust(6) for lang in languages))
    for layer in mass.layer.values:
        values = mass.sel(layer=layer).values
        click.echo(f"  {int(layer):5d} " + " ".join(f"{v:6.3f}" for v in values))


# --- each analysis's terminal table, on its ``Report`` (named by the ``Analysis.printed`` of the registry) ------
def show_similarity(report: Report) -> None:
    (print_baseline_table if "baseline" in report.parts else print_similarity_table)(report.result)


def show_lens(report: Report) -> None:
    print_lens_table(report.result)


def show_languages(report: Report) -> None:
    print_language_table(report.result.mass)


def show_colour_lens(report: Report) -> None:
    click.echo(report.result.share.to_pandas().rename("share").to_string())


def show_caption_lens(report: Report) -> None:
    click.echo(report.result[["keyword_prob", "baseline_prob", "difference"]].to_dataframe().to_string())


def show_margin(report: Report) -> None:
    print_margin_table(report.result)


def show_roles(report: Report) -> None:
    print_roles_table(report.result)


def show_trajectories(report: Report) -> None:
    explained = report.result.explained_variance.values
    click.echo(f"{report.result.sizes['example']} trajectories; anchor PCA explains {explained[0]:.1%} + {explained[1]:.1%}")


def show_intervention(report: Report) -> None:
    print_intervention_table(report.parts["table"], report.parts["shares"])
