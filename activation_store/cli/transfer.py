"""``actstore push`` and ``actstore pull``: share stores through S3 (or any fsspec URL)."""
from __future__ import annotations

from typing import Callable

import click

from .options import storage, store_options


def _transfer_command(name: str, verb: str, doc: str) -> Callable:
    @click.command(name=name, help=doc)
    @click.argument("source")
    @click.argument("destination")
    @click.option("--model", default=None, help="Copy only this model: its logit-lens head and its runs.")
    @click.option("--dataset", default=None, help="With --model: copy only this run (and the model's lens head).")
    @click.option("--overwrite", is_flag=True, help="Replace what differs at DESTINATION (another model or configuration).")
    @click.option("--jobs", type=int, default=8, show_default=True, help="Objects copied at once.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @store_options
    def command(source, destination, model, dataset, overwrite, jobs, quiet, endpoint_url, anon):
        from ..store.transfer import copy_store

        result = copy_store(
            source, destination, model, dataset, overwrite=overwrite, jobs=jobs, progress=not quiet, verb=verb,
            source_options=storage(source, endpoint_url, anon),
            destination_options=storage(destination, endpoint_url, anon),
        )
        click.echo(result.summary(f"{verb}ed"))

    return command


push = _transfer_command(
    "push", "push",
    "Copy the store SOURCE (or one --model / --dataset) to DESTINATION, e.g. s3://bucket/acts.zarr.\n\n"
    "Resumable: objects already there and identical (size and MD5) are skipped. Everything is verified before "
    "the root metadata is written, so an interrupted push is never opened as a whole store. Credentials come "
    "from the standard AWS chain (environment, ~/.aws, AWS_PROFILE).",
)
pull = _transfer_command(
    "pull", "pull",
    "Copy the store SOURCE, e.g. s3://bucket/acts.zarr (or one --model / --dataset), to the local DESTINATION.\n\n"
    "Resumable and verified like push; a pulled run opens on its own with its model's logit-lens head. "
    "Use --anon for a public bucket and --endpoint-url for S3-compatible services.",
)
