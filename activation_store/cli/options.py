"""Options shared by several commands, declared once, and their parsing.

An ``OptionGroup`` is a few options and the record their values make (as tuned-lens's
``scripts/ingredients.py`` groups its options in dataclasses): the group decorates a
command, and ``take`` pops its values from the command's keywords into the record."""
from __future__ import annotations

import inspect
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from ..store.location import storage_options_for
from ..workflows.analysis import Param, RunOptions, Target
from ..workflows.params import split_items


def store_options(func: Callable) -> Callable:
    """``--endpoint-url`` and ``--anon`` for stores behind fsspec URLs."""
    func = click.option("--anon", is_flag=True, help="Read a public bucket without credentials.")(func)
    func = click.option("--endpoint-url", default=None, metavar="URL", help="S3-compatible endpoint (e.g. http://127.0.0.1:9000); AWS_ENDPOINT_URL_S3 works too.")(func)
    return func


def cluster_options(func: Callable) -> Callable:
    """Where an extraction campaign's tasks run: here (default), local worker processes, or a running cluster."""
    func = click.option("--task-batches", type=click.IntRange(min=1), default=None,
                        help="Batches (on average) per task (default 40); a batch at a task's edge is computed twice.")(func)
    func = click.option("--scheduler", default=None, metavar="ADDRESS", help="A running dask scheduler (tcp://head:8786): Slurm via dask-jobqueue, Kubernetes, …")(func)
    func = click.option("--threads-per-worker", type=int, default=None, help="torch threads per worker process (default: the worker's own).")(func)
    func = click.option("--workers", type=int, default=None, help="Start a local dask cluster of N worker processes.")(func)
    return func


def storage(url: str, endpoint_url: str | None, anon: bool) -> dict[str, Any]:
    return storage_options_for(url, endpoint_url=endpoint_url, anon=anon)


def split_list(value: str | None, option: str | None = None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; ``option`` names the flag in the error for an empty list."""
    try:
        return split_items(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def parse_columns(value: str | None) -> dict[str, str] | None:
    """``--columns en=sentence_en,zh=sentence_zh`` → {variant: column}."""
    if value is None:
        return None
    pairs = parse_pairs(tuple(split_list(value, "--columns")), "--columns")
    if not pairs or any(not k or not v.strip() for k, v in pairs.items()):
        raise click.BadParameter(f"expected VARIANT=COLUMN,…, got {value!r}", param_hint="--columns")
    return {k: v.strip() for k, v in pairs.items()}


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"expected VARIANT=TEXT, got {value!r}", param_hint=option)
        key, text = value.split("=", 1)
        pairs[key.strip()] = text
    return pairs


# --- option groups --------------------------------------------------------------------------------------------
class OptionGroup:
    """Options declared once and the record they make: ``build``'s parameters name the values it takes."""

    def __init__(self, build: Callable[..., Any], *options: Callable[[Callable], Callable]):
        self.build, self.options = build, options
        self.names = tuple(inspect.signature(build).parameters)

    def __call__(self, func: Callable) -> Callable:
        for option in reversed(self.options):
            func = option(func)
        return func

    def take(self, values: dict[str, Any]) -> Any:
        """This group's record, its values removed from ``values`` (a command's keywords)."""
        return self.build(**{name: values.pop(name) for name in self.names})


@dataclass(frozen=True)
class Located:
    """Where a command reads: the store's URL and storage options, and the run (model, dataset) in it."""

    url: str
    storage_options: dict[str, Any]
    target: Target


@dataclass(frozen=True)
class Placement:
    """Which layers (at which site) an analysis reads and where dask computes it."""

    layers: list[int] | None
    site: str | None
    scheduler_address: str | None
    workers: int | None
    memory_limit: str | None

    def scheduler(self) -> AbstractContextManager:
        from ..workflows.scheduler import scheduler

        return scheduler(self.scheduler_address, self.workers, self.memory_limit)


def parse_layers(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """``--layers 0,2`` → [0, 2]."""
    items = split_list(value)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--layers") from None


def _located(store: str, model: str, dataset: str, endpoint_url: str | None, anon: bool) -> Located:
    return Located(store, storage(store, endpoint_url, anon), Target(model, dataset))


def _output(out: Path, no_save: bool, no_plot: bool) -> RunOptions:
    return RunOptions(out, save=not no_save, plot=not no_plot)


OUT = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)

# --store, --model, --dataset and the store's access options: every analysis, and the sweep
RUN_TARGET = OptionGroup(_located, click.option("--store", required=True, help="Local directory or fsspec URL."),
                         click.option("--model", required=True), click.option("--dataset", required=True), store_options)
# where the files go and whether the result is saved under the store and drawn: every analysis
OUTPUT = OptionGroup(_output, OUT,
                     click.option("--no-save", is_flag=True, help="Write only the files; leave the store as it is."),
                     click.option("--no-plot", is_flag=True, help="Write only the CSVs, no figures."))
# layers and dask: every analysis that reads a run's states
PLACEMENT = OptionGroup(
    Placement,
    click.option("--layers", default=None, callback=parse_layers, help="Comma-separated layers (default: all)."),
    click.option("--site", default=None, metavar="resid_post|attn_out|mlp_out|…",
                 help="The site whose states are read (default: the residual stream); results go under <out>/site-<site> "
                      "and are saved as <name>-<site>."),
    click.option("--scheduler", "scheduler_address", default=None, metavar="ADDRESS", help="Run on the dask cluster at ADDRESS."),
    click.option("--workers", type=int, default=None, help="Run on a local dask cluster of N worker processes."),
    click.option("--memory-limit", default=None, help="Per-worker memory limit for --workers (e.g. 2GB)."))


def param_option(param: Param) -> Callable[[Callable], Callable]:
    """The click option for one of an analysis's own ``Param``s; its ``convert`` runs as the option's callback."""
    attrs: dict[str, Any] = {"help": param.help or None, "default": param.default, "required": param.required,
                             "metavar": param.metavar, "show_default": param.default not in (None, False)}
    if isinstance(param.kind, tuple):
        attrs["type"] = click.Choice(list(param.kind))
    elif param.kind is bool:
        if "/" not in param.flag:          # "--a/--b" is a switch click recognises by itself
            attrs["is_flag"] = True
    else:
        attrs["type"] = param.kind
    if param.convert is not None:
        attrs["callback"] = _callback(param.convert)
    return click.option(param.flag, param.dest, **attrs)


def _callback(convert: Callable[[Any], Any]) -> Callable:
    def callback(ctx: click.Context, option: click.Parameter, value: Any) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=option) from None
    return callback
