"""``actstore push`` and ``actstore pull``: share stores through S3 (or any fsspec URL)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import click

from .options import OptionGroup, storage, store_options

if TYPE_CHECKING:
    from ..store.transfer import CopyOptions


@dataclass(frozen=True)
class _How:
    """How a push or pull runs (its options but the scope), and the store access both ends share."""

    overwrite: bool
    jobs: int
    quiet: bool
    endpoint_url: str | None
    anon: bool

    def options(self, source: str, destination: str, verb: str) -> CopyOptions:
        from ..store.transfer import CopyOptions

        return CopyOptions(overwrite=self.overwrite, jobs=self.jobs, progress=not self.quiet, verb=verb,
                           source_options=storage(source, self.endpoint_url, self.anon),
                           destination_options=storage(destination, self.endpoint_url, self.anon))


HOW = OptionGroup(
    _How,
    click.option("--overwrite", is_flag=True, help="Replace what differs at DESTINATION (another model or configuration)."),
    click.option("--jobs", type=int, default=8, show_default=True, help="Objects copied at once."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
    store_options,
)


def _transfer_command(name: str, verb: str, doc: str) -> Callable:
    @click.command(name=name, help=doc)
    @click.argument("source")
    @click.argument("destination")
    @click.option("--model", default=None, help="Copy only this model: its logit-lens head and its runs.")
    @click.option("--dataset", default=None, help="With --model: copy only this run (and the model's lens head).")
    @HOW
    def command(source: str, destination: str, model: str | None, dataset: str | None, **values: Any) -> None:
        from ..store.transfer import copy_store

        options = HOW.take(values).options(source, destination, verb)
        result = copy_store(source, destination, model, dataset, options=options)
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
