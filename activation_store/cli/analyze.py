"""``actstore analyze``: the paper's analyses from a store, without the model."""
from __future__ import annotations

from pathlib import Path

import click

from ..workflows.cluster import scheduler
from .options import split_list, storage, store_options
from .tables import print_language_table, print_lens_table, print_similarity_table


def _run_options(func):
    func = click.option("--memory-limit", default=None, help="Per-worker memory limit for --workers (e.g. 2GB).")(func)
    func = click.option("--workers", type=int, default=None, help="Run on a local dask cluster of N worker processes.")(func)
    func = click.option("--scheduler", "scheduler_address", default=None, metavar="ADDRESS", help="Run on the dask cluster at ADDRESS.")(func)
    func = click.option("--layers", default=None, help="Comma-separated layers (default: all).")(func)
    func = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)(func)
    func = click.option("--dataset", required=True)(func)
    func = click.option("--model", required=True)(func)
    func = click.option("--store", required=True, help="Local directory or fsspec URL.")(func)
    return store_options(func)


def _layers(value):
    items = split_list(value)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--layers") from None


def _modality(value: str | None, per_variant: bool):
    """``image`` (every variant) or, where allowed, ``image=image,en=text`` (per variant)."""
    if value is None or "=" not in value:
        return value
    if not per_variant:
        raise click.BadParameter(f"expected one of text, image, audio, got {value!r}", param_hint="--modality")
    pairs = {}
    for part in split_list(value, "--modality"):
        variant, _, modality = part.partition("=")
        if not variant.strip() or not modality.strip():
            raise click.BadParameter(f"expected VARIANT=MODALITY, got {part!r}", param_hint="--modality")
        pairs[variant.strip()] = modality.strip()
    return pairs
def _lens_option(func):
    return click.option("--lens", "lens_mode", type=click.Choice(["normed", "raw"]), default="normed", show_default=True,
                        help="normed: final norm on every layer (tuned-lens convention); raw: none, as the paper's code.")(func)


def _done(report):
    for path in report.files:
        click.echo(f"wrote {path}")
    click.echo(f"saved under the store at {report.store_path}")


@click.group()
def analyze() -> None:
    """Analyses computed from a store with Dask; the model is never loaded."""


@analyze.command()
@_run_options
@click.option("--variants", default=None, help="Comma-separated variants to pair by item (default: all; every pair).")
@click.option("--pool", type=click.Choice(["last", "mean"]), default="last", show_default=True)
@click.option("--center/--no-center", default=True, show_default=True, help="Subtract the per-layer mean of the compared states first.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% interval.")
@click.option("--baseline", default=None, metavar="VARIANT",
              help="Compare with this variant of each item (e.g. form-swapped) instead of all unpaired items.")
@click.option("--modality", default=None, help="Pool only text, image or audio tokens; per variant as image=image,en=text.")
def similarity(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
               variants, pool, center, bootstrap, baseline, modality):
    """Paired-minus-unpaired cosine similarity between variants, per layer (Eq. 1); or matched minus baseline."""
    from ..workflows.similarity import baseline_similarity_report, similarity_report

    if baseline is not None:
        if modality is not None:
            raise click.UsageError("--modality applies to all-pairs similarity, not with --baseline")
        from .grid_tables import print_baseline_table

        with scheduler(scheduler_address, workers, memory_limit):
            report = baseline_similarity_report(store, model, dataset, split_list(variants), baseline, out, pool=pool,
                                                center=center, n_boot=bootstrap, layers=_layers(layers),
                                                storage_options=storage(store, endpoint_url, anon))
        print_baseline_table(report.result)
        _done(report)
        return
    with scheduler(scheduler_address, workers, memory_limit):
        report = similarity_report(store, model, dataset, split_list(variants), out, pool=pool, center=center,
                                   n_boot=bootstrap, layers=_layers(layers), modality=_modality(modality, True),
                                   storage_options=storage(store, endpoint_url, anon))
    print_similarity_table(report.result)
    _done(report)


@analyze.command("logit-lens")
@_run_options
@click.option("--example", type=int, default=None, help="One example (default: example 0).")
@click.option("--variant", default=None, help="All examples of a variant (with --item: that one example).")
@click.option("--item", default=None, help="The examples of one item (with --variant: one example).")
@click.option("--targets", default=None, help="A targets file (.jsonl/.csv) or a rule: result-digits, result-words, en-next-word, next-token.")
@click.option("--top-k", type=int, default=5, show_default=True)
@_lens_option
@click.option("--modality", default=None, help="Only the text, image or audio tokens of the selected examples.")
def logit_lens(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
               example, variant, item, targets, top_k, lens_mode, modality):
    """Top tokens per layer and position through the stored logit lens; log-prob and rank of targets."""
    from ..workflows.logit_lens import logit_lens_report

    if example is not None and (variant is not None or item is not None):
        raise click.UsageError("give --example, or --variant/--item, not both")
    with scheduler(scheduler_address, workers, memory_limit):
        report = logit_lens_report(store, model, dataset, out, example=example, variant=variant, item=item, targets=targets,
                                   k=top_k, layers=_layers(layers), storage_options=storage(store, endpoint_url, anon),
                                   lens_mode=lens_mode, modality=_modality(modality, False))
    print_lens_table(report.result)
    _done(report)


@analyze.command()
@_run_options
@click.option("--variant", default=None, help="Input variant to read (default: all examples).")
@click.option("--languages", default=None, help="Comma-separated language codes (default: en,zh,ja,ko,ru,ar,hi,fr,de,es).")
@click.option("--table", "table_path", default=None, help="Your own p(language|token) CSV: token_id,<lang>,<lang>,…")
@_lens_option
def languages(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
              variant, languages, table_path, lens_mode):
    """Probability mass per language through the logit lens, per layer."""
    from ..workflows.languages import languages_report

    with scheduler(scheduler_address, workers, memory_limit):
        report = languages_report(store, model, dataset, out, variant=variant, languages=split_list(languages),
                                  table_path=table_path, layers=_layers(layers), storage_options=storage(store, endpoint_url, anon),
                                  lens_mode=lens_mode)
    print_language_table(report.result.mass)
    _done(report)


@analyze.command("colour-lens")
@_run_options
@click.option("--variant", default="image", show_default=True, help="The image variant.")
@click.option("--words", default="en", show_default=True, help="The variant holding each item's colour word.")
def colour_lens(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
                variant, words):
    """Share of image tokens whose top-1 logit-lens token is the colour word, per layer (e.g. on --dataset colors)."""
    from ..workflows.media_lens import colour_lens_report

    with scheduler(scheduler_address, workers, memory_limit):
        report = colour_lens_report(store, model, dataset, out, variant=variant, words=words, layers=_layers(layers),
                                    storage_options=storage(store, endpoint_url, anon))
    click.echo(report.result.share.to_pandas().rename("share").to_string())
    _done(report)


@analyze.command("caption-lens")
@_run_options
@click.option("--variant", default="image", show_default=True, help="The media variant (image or audio).")
@click.option("--captions", default="en", show_default=True, help="The variant holding each item's caption.")
def caption_lens(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
                 variant, captions):
    """Caption keywords' mean probability over media tokens vs the least similar caption's, per layer."""
    from ..workflows.media_lens import caption_lens_report

    with scheduler(scheduler_address, workers, memory_limit):
        report = caption_lens_report(store, model, dataset, out, variant=variant, captions=captions,
                                     layers=_layers(layers), storage_options=storage(store, endpoint_url, anon))
    click.echo(report.result[["keyword_prob", "baseline_prob", "difference"]].to_dataframe().to_string())
    _done(report)


@analyze.command()
@click.option("--store", required=True, help="Local directory or fsspec URL.")
@click.option("--model", required=True)
@click.option("--dataset", required=True)
@click.option("--vector", required=True, help="The steering vector whose recorded run (extract --intervene) to analyse.")
@click.option("--target-tokens", "targets", default=None, help="Target sets (as extract --target-tokens): one vocabulary string a line, or a .json of named sets.")
@click.option("--rule", default=None, help="Outcome rule for continuations: arithmetic[:SHIFT] or same-as-baseline.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% interval.")
@click.option("--no-forecast", is_flag=True, help="Skip the logit-lens forecast at the vector's layer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
@store_options
def intervention(store, model, dataset, vector, targets, rule, bootstrap, no_forecast, out, endpoint_url, anon):
    """Deltas of a recorded intervention against its baseline, per coefficient, with a lens-level forecast."""
    from ..workflows.intervention import intervention_report
    from .intervention_table import print_intervention_table

    report = intervention_report(store, model, dataset, vector, out, targets=targets, rule=rule, n_boot=bootstrap,
                                 forecast=not no_forecast, storage_options=storage(store, endpoint_url, anon))
    print_intervention_table(report.table, report.shares)
    _done(report)


@analyze.command()
@click.option("--store", required=True, help="Local directory or fsspec URL.")
@click.option("--model", required=True)
@click.option("--dataset", required=True)
@click.option("--vector", "vectors", multiple=True, required=True,
              help="A recorded vector (extract --intervene); repeat for a sweep over layers.")
@click.option("--control", "controls", multiple=True,
              help="Its random control (steering define --random-like), one per --vector, in the same order.")
@click.option("--target-tokens", "targets", default=None, help="Target sets (a .json of named sets) the metric reads.")
@click.option("--metric", required=True, help="diff:A,B | share:A,B | prob:A | logprob:A | kl | outcome:RULE=CATEGORY (steered - unsteered).")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% interval.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
@store_options
def sweep(store, model, dataset, vectors, controls, targets, metric, bootstrap, out, endpoint_url, anon):
    """Effect per (layer, coefficient) with a 95% CI, beside the random control's and the lens forecast."""
    from ..workflows.results import save_csv
    from ..workflows.sweep import markdown_table, sweep_table

    if controls and len(controls) != len(vectors):
        raise click.UsageError(f"give one --control per --vector ({len(vectors)} vectors, {len(controls)} controls)")
    if bootstrap < 1:
        raise click.BadParameter("must be at least 1", param_hint="--bootstrap")
    pairs = list(zip(vectors, controls or [None] * len(vectors)))
    table = sweep_table(store, model, dataset, pairs, metric, targets, n_boot=bootstrap,
                        storage_options=storage(store, endpoint_url, anon))
    click.echo(markdown_table(table))
    click.echo(f"wrote {save_csv(table, out, f'sweep-{dataset}-{vectors[0]}')}")


@analyze.command()
@_run_options
@click.option("--variant", default=None, help="Only the annotated positions of this variant (default: all).")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% interval.")
@_lens_option
def target(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
           variant, bootstrap, lens_mode):
    """log p(target) − max log p(alternative) per layer at a run's annotated positions (" and" vs " or"/" not", …)."""
    from ..workflows.target_margin import target_report
    from .grid_tables import print_margin_table

    with scheduler(scheduler_address, workers, memory_limit):
        report = target_report(store, model, dataset, out, variant=variant, lens_mode=lens_mode, n_boot=bootstrap,
                               layers=_layers(layers), storage_options=storage(store, endpoint_url, anon))
    print_margin_table(report.result)
    _done(report)


@analyze.command()
@_run_options
@click.option("--variant", default=None, help="Only the annotated positions of this variant (default: all).")
@_lens_option
def roles(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
          variant, lens_mode):
    """The semantic-role confusion matrix: role log-prob at each gold role, minus that role's mean over gold roles."""
    from ..workflows.roles import roles_report
    from .grid_tables import print_roles_table

    with scheduler(scheduler_address, workers, memory_limit):
        report = roles_report(store, model, dataset, out, variant=variant, lens_mode=lens_mode, layers=_layers(layers),
                              storage_options=storage(store, endpoint_url, anon))
    print_roles_table(report.result)
    _done(report)


@analyze.command()
@_run_options
@click.option("--variant", required=True, help="The variant whose last-token states to trace (e.g. result-first).")
@click.option("--anchors", default=None, help='Comma-separated anchor tokens (default: "0".."9" and " zero".." nine").')
def trajectories(store, model, dataset, out, layers, scheduler_address, workers, memory_limit, endpoint_url, anon,
                 variant, anchors):
    """Per-layer last-token paths in the PCA plane of the digit and number-word unembeddings."""
    from ..workflows.trajectories import trajectories_report
    from ..analyze.trajectories import DIGITS, WORDS

    strings = tuple(a for a in anchors.split(",") if a) if anchors else DIGITS + WORDS
    with scheduler(scheduler_address, workers, memory_limit):
        report = trajectories_report(store, model, dataset, out, variant=variant, anchors=strings,
                                     layers=_layers(layers), storage_options=storage(store, endpoint_url, anon))
    explained = report.result.explained_variance.values
    click.echo(f"{report.result.sizes['example']} trajectories; anchor PCA explains {explained[0]:.1%} + {explained[1]:.1%}")
    _done(report)
