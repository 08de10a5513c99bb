"""``actstore extract``."""
from __future__ import annotations

import click

from ..extract.datasets import DEFAULT_DATASET
from ..extract.models import DEFAULT_MODEL
from .interventions import INTERVENTION_KEYS, intervention_options, run_intervention
from .options import cluster_options, parse_columns, parse_pairs, split_list, storage, store_options


class BatchSize(click.ParamType):
    """A positive integer, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"expected a number or 'auto', got {value!r}", param, ctx)


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Registry name, alias (llama3, …), model directory or .gguf file; several, comma-separated, make a campaign.")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True, help="Built-in name (django-ui, arithmetic, colors, colors-split, spoken-words…), a .jsonl/.csv/.tsv file, or hf:NAME[:CONFIG][:SPLIT] "
              "(a save_to_disk directory, local data files or the local datasets cache; never downloaded); several, comma-separated: "
              "every model runs over every dataset (text datasets).")
@click.option("--columns", default=None, metavar="VARIANT=COLUMN,…",
              help="hf: datasets: the text column of each variant (default: every string column).")
@click.option("--id-column", default=None, help="hf: datasets: the column naming each item (default: 'id', else the row number).")
@click.option("--store", default="./acts.zarr", show_default=True, help="Local directory or fsspec URL (s3://bucket/acts.zarr).")
@click.option("--variants", default=None, help="Comma-separated variants to extract (default: all).")
@click.option("--limit", type=int, default=None, help="Only the first N items.")
@click.option("--bos/--no-bos", default=True, show_default=True, help="Prepend the tokenizer's BOS token.")
@click.option("--suffix", "suffixes", multiple=True, metavar="VARIANT=TEXT", help='Text appended per variant, e.g. zh=这代表了 (repeatable).')
@click.option("--template", "templates", multiple=True, metavar="VARIANT=TEXT",
              help='Prompt of a media variant, holding <image> or <audio> once, e.g. image="USER: <image>\\nWhat is it? ASSISTANT:" (\\n is a newline; repeatable).')
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True)
@click.option("--batch-size", type=BatchSize(), default="16", show_default=True, help="Examples per forward pass, or 'auto': the largest that fits the device.")
@click.option("--chunk-tokens", type=int, default=None, help="Tokens per chunk (default: ~16 MB per layer chunk).")
@click.option("--overwrite", is_flag=True, help="Replace a run made with another configuration, or redo a finished one.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a checkpoint's own Python code (off by default).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--device", default="auto", show_default=True, metavar="cpu|cuda|cuda:N|mps|auto", help="Where the model runs (auto: cuda, then mps, then cpu).")
@click.option("--compute-dtype", default=None, metavar="float32|bfloat16|float16", help="What the model runs in [default: float32 on CPU, bfloat16 on GPUs that have it]; --dtype is what is stored.")
@click.option("--device-map", default=None, type=click.Choice(["auto"]), help="Place a model larger than one device with accelerate (GPUs, then CPU, then disk).")
@click.option("--layers", default=None, metavar="0,6,12|0:18|all", help="Hidden states to store: a list, a range START:STOP[:STEP] (stop excluded) or all (default; 0 is the embeddings).")
@click.option("--positions", default="all", show_default=True, metavar="all|last|mean", help="Store every token's states, or one per example: the last token's, or the mean over its tokens (BOS left out).")
@click.option("--sites", default=None, metavar="resid_post,attn_out,mlp_out,mlp_in,resid_mid,z|PATH.*.MODULE[:input]",
              help="Sites to capture besides the residual stream (always stored, as hidden), all in one pass: names "
                   "(docs/guide/sites.md), module paths with * over the blocks and :input or :output, or "
                   "TransformerLens hook names (blocks.5.hook_mlp_out). --layers and --positions apply to each.")
@click.option("--compression", default="none", show_default=True, metavar="none|zstd|blosc-zstd|blosc-lz4",
              help="Lossless compression of hidden, standard Zarr codecs: zstd (level 1, ~20-40% smaller), blosc-zstd "
                   "(smallest, slow to write), blosc-lz4 (fastest). docs/scaling.md measures them. A resumed run "
                   "keeps the compression it began with.")
@click.option("--dry-run", is_flag=True, help="Print examples, tokens, weights, activations, bytes on disk and free space; load no weights, write nothing.")
@cluster_options
@store_options
@intervention_options
def extract(model, dataset, store, quiet, dry_run, **options):
    """Run MODEL over DATASET once and store every layer's hidden states (or, with --intervene, record a steering run).

    Several models or datasets (comma-separated) make a campaign of their cross product; --workers or
    --scheduler run it on dask workers."""
    from ..errors import ActstoreError
    from ..extract.campaign import run_campaign
    from ..extract.run import extract_run
    from ..extract.spec import RunSpec

    intervention = {k: options.pop(k) for k in INTERVENTION_KEYS}
    workers, scheduler = options.pop("workers"), options.pop("scheduler")
    threads_per_worker, task_batches = options.pop("threads_per_worker"), options.pop("task_batches")
    storage_options = storage(store, options.pop("endpoint_url"), options.pop("anon"))
    layers, positions, compression = options["layers"], options["positions"], options["compression"]
    run_options = _run_options(options)
    specs = [RunSpec(m, d, store, storage_options=storage_options, progress=not quiet,
                     **run_options)
             for m in split_list(model, "--model") for d in split_list(dataset, "--dataset")]
    if intervention.get("intervene") and (layers is not None or positions != "all"):
        raise click.UsageError("--layers/--positions choose what extraction stores; with --intervene use "
                               "--record-layers and --steer-positions")
    if intervention.get("intervene") and compression != "none":
        raise click.UsageError("--compression applies to extraction's hidden; --intervene records uncompressed")
    campaign = len(specs) > 1 or workers is not None or scheduler is not None
    if dry_run:
        from ..extract.dry_run import dry_run as estimate_run

        if intervention.get("intervene"):
            raise click.UsageError("--dry-run is for plain extraction, not --intervene")
        for spec in specs:
            estimate = estimate_run(spec)
            click.echo(estimate.summary())
            if not estimate.fits_disk:
                raise ActstoreError(f"{store} lacks the space: the run needs {estimate.total_bytes:,} bytes, "
                                    f"{estimate.disk_free:,} are free there")
        return
    if intervention.get("intervene") and campaign:
        raise click.UsageError("--intervene records one model over one dataset in this process")
    recorded = run_intervention(intervention, specs[0])
    if recorded:
        click.echo(recorded)
    elif not campaign:
        click.echo(extract_run(specs[0]).summary())
    else:
        result = run_campaign(specs, scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker,
                              progress=not quiet, **({"batches_per_task": task_batches} if task_batches else {}))
        click.echo(result.summary())


def _run_options(options: dict) -> dict:
    """The command's run options (every ``RunSpec`` option the command has) by their ``RunSpec`` names, parsed."""
    return {**options, "variants": split_list(options["variants"], "--variants"),
            "suffixes": parse_pairs(options["suffixes"], "--suffix"),
            "templates": {k: v.replace("\\n", "\n") for k, v in parse_pairs(options["templates"], "--template").items()},
            "columns": parse_columns(options["columns"])}
