"""``actstore report``: the reproduction report of Wu et al. (2024)'s text experiments, from one store."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from .options import split_list


@click.command()
@click.option("--store", default="./reproduction.zarr", show_default=True, help="Where the grid is extracted (local).")
@click.option("--models", default=None,
              help="main[,code[,control]] (default: gemma3-270m,qwen2.5-coder-0.5b,smollm2-135m).")
@click.option("--limit", default=None, help="Items per dataset: N, or DATASET=N,… (default: django-ui=30, "
                                            "semantics=50, arithmetic=200, code=80).")
@click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True,
              help="Writes DOCS/reproduction.md and DOCS/figures/*.png.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The analyses' CSVs and full-size figures (default: DOCS/../results/reproduction).")
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--lens-layer-step", "lens_step", type=int, default=1, show_default=True,
              help="Lens-based analyses read every Nth layer (and the last): their full-vocabulary projection is the cost.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--overwrite", is_flag=True, help="Re-extract runs that exist (default: resume / reuse them).")
def report(store: str, models: str | None, docs: Path, **options: Any) -> None:
    """Extract the paper's text grid, run every analysis from the store, write docs/reproduction.md."""
    from ..workflows.reproduction import ReportOptions, reproduce, write_report

    command = "actstore " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else ""
    path = docs / "reproduction.md"
    run = reproduce(store, docs, ReportOptions(models=split_list(models), **options), log=click.echo,
                    on_finding=lambda partial: write_report(partial, path, command))
    click.echo(f"wrote {path} ({len(run.findings)} experiments, {run.seconds['total']:.0f} s)")
