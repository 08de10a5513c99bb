"""Options shared by several commands, and their parsing."""
from __future__ import annotations

from typing import Any, Callable

import click

from ..store.location import storage_options_for


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
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("expected a comma-separated list", param_hint=option)
    return items


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
