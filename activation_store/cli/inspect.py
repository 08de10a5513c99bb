"""``actstore ls`` and ``actstore info``: what a store holds, from metadata only."""
from __future__ import annotations

import json

import click

from ..store.inventory import list_runs, list_steering, run_info
from .options import storage, store_options


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@click.command()
@click.argument("store")
@store_options
def ls(store, endpoint_url, anon):
    """List the runs in STORE: model, dataset, examples, layers, tokens, sites, size, dtype, when, from what."""
    runs = list_runs(store, storage(store, endpoint_url, anon))
    if not runs:
        click.echo(f"{store}: no runs")
        return
    header = ("model", "dataset", "examples", "layers", "tokens", "d_model", "sites", "size", "dtype", "state",
              "created", "source")
    rows = [header] + [
        (r.model, r.dataset, str(r.examples), str(r.layers), f"{r.tokens:,}", str(r.d_model), ",".join(r.sites),
         _size(r.bytes), r.dtype, "complete" if r.complete else _partial(r), r.created, r.source)
        for r in runs
    ]
    _table(rows)
    _steering_sections(store, storage(store, endpoint_url, anon))


def _partial(run) -> str:
    """An unfinished run: its readable prefix, and what a campaign has committed beyond it."""
    ahead = run.tokens_committed - run.tokens_done
    return f"partial {run.tokens_done:,}" + (f" (+{ahead:,} out of order)" if ahead > 0 else "")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _steering_sections(store: str, options) -> None:
    """Steering vectors and recorded interventions, when the store has any."""
    vectors, recorded = list_steering(store, options)
    if vectors:
        click.echo("\nsteering vectors")
        _table([("model", "name", "layer", "method", "source", "minus", "norm", "coefficient")] + [
            (v.model, v.name, str(v.layer), v.method, repr(v.source), repr(v.minus) if v.minus else "", f"{v.norm:.4g}",
             f"{v.default_coefficient:g}") for v in vectors])
    if recorded:
        click.echo("\nrecorded interventions")
        _table([("model", "dataset", "vector", "coefficients", "examples", "positions", "generate")] + [
            (r.model, r.dataset, r.vector, ",".join(f"{c:g}" for c in r.coefficients), str(r.examples), r.positions,
             str(r.generate)) for r in recorded])


@click.command()
@click.argument("store")
@click.option("--model", required=True)
@click.option("--dataset", required=True)
@store_options
def info(store, model, dataset, endpoint_url, anon):
    """Provenance and configuration of one run, as JSON."""
    run = run_info(store, model, dataset, storage(store, endpoint_url, anon))
    click.echo(json.dumps({"model": run.model, "dataset": run.dataset, "bytes": run.bytes, "sites": run.sites,
                           **run.attrs},
                          indent=2, ensure_ascii=False, default=str))
