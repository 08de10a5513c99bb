"""``actstore analyze``: the paper's analyses from a store, without the model.

Each registered analysis (``workflows.registry``) is a command, made from its record on first use: the shared
option groups (``options.py``), then its own options; the body opens the store once and hands it to the one
runner. The sweep, which saves nothing under the store, is written out by hand below."""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
from typing import Any, Callable

import click

from ..workflows.analysis import Analysis
from ..workflows.registry import analyses
from ..workflows.results import Report
from ..workflows.runner import open_store, run_analysis
from .options import OUT, OUTPUT, PLACEMENT, RUN_TARGET, param_option


def printer(analysis: Analysis) -> Callable[[Report], None] | None:
    """The analysis's terminal table: its callable, or the ``"module:function"`` it names."""
    if isinstance(analysis.printed, str):
        module, _, name = analysis.printed.partition(":")
        return getattr(importlib.import_module(module), name)
    return analysis.printed


def _done(report: Report) -> None:
    for path in report.files:
        click.echo(f"wrote {path}")
    if report.store_path:
        click.echo(f"saved under the store at {report.store_path}")


def _run(analysis: Analysis, values: dict[str, Any]) -> None:
    """One command's body: records from the option groups, the analysis's check, one open store, the runner."""
    located, options = RUN_TARGET.take(values), OUTPUT.take(values)
    placement = PLACEMENT.take(values) if analysis.reads_run else None
    if analysis.check is not None:
        try:
            analysis.check(values)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if placement is not None:
        options = dataclasses.replace(options, layers=placement.layers, site=placement.site)
    with placement.scheduler() if placement is not None else contextlib.nullcontext():
        store = open_store(located.url, located.storage_options, options)
        report = run_analysis(analysis, store, located.target, options, **values)
    show = printer(analysis)
    if show is not None:
        show(report)
    _done(report)


def command_for(analysis: Analysis) -> click.Command:
    """The ``actstore analyze <name>`` command of one registered analysis."""
    def body(**values: Any) -> None:
        _run(analysis, values)

    for param in reversed(analysis.params):
        body = param_option(param)(body)
    if analysis.reads_run:
        body = PLACEMENT(body)
    body = RUN_TARGET(OUTPUT(body))
    return click.command(analysis.name, help=analysis.help)(body)


class AnalyzeGroup(click.Group):
    """The hand-written commands and one command per registered analysis, read from the registry when asked
    (so an analysis registered after import is a command too)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(analyses()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in analyses():
            command = command_for(analyses()[cmd_name])
        return command


@click.group(cls=AnalyzeGroup)
def analyze() -> None:
    """Analyses computed from a store with Dask; the model is never loaded."""


@analyze.command()
@RUN_TARGET
@click.option("--vector", "vectors", multiple=True, required=True,
              help="A recorded vector (extract --intervene); repeat for a sweep over layers.")
@click.option("--control", "controls", multiple=True,
              help="Its random control (steering define --random-like), one per --vector, in the same order.")
@click.option("--target-tokens", "targets", default=None, help="Target sets (a .json of named sets) the metric reads.")
@click.option("--metric", required=True, help="diff:A,B | share:A,B | prob:A | logprob:A | kl | outcome:RULE=CATEGORY (steered - unsteered).")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% interval.")
@OUT
def sweep(vectors, controls, targets, metric, bootstrap, out, **location):
    """Effect per (layer, coefficient) with a 95% CI, beside the random control's and the lens forecast."""
    from ..workflows.results import save_csv
    from ..workflows.sweep import markdown_table, sweep_table

    located = RUN_TARGET.take(location)
    if controls and len(controls) != len(vectors):
        raise click.UsageError(f"give one --control per --vector ({len(vectors)} vectors, {len(controls)} controls)")
    if bootstrap < 1:
        raise click.BadParameter("must be at least 1", param_hint="--bootstrap")
    pairs = list(zip(vectors, controls or [None] * len(vectors)))
    table = sweep_table(located.url, located.target.model, located.target.dataset, pairs, metric, targets,
                        n_boot=bootstrap, storage_options=located.storage_options)
    click.echo(markdown_table(table))
    click.echo(f"wrote {save_csv(table, out, f'sweep-{located.target.dataset}-{vectors[0]}')}")
