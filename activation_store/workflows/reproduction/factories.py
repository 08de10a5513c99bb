"""The two shapes most experiments share, as step factories: a paired similarity read from one model, and a
target margin read through both lenses on one or more models. An entry of the table names its numbers; the
factory knows how to get them."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import xarray as xr

from ...errors import ActstoreError
from ..similarity import baseline_similarity_report, similarity_report
from ..target_margin import target_report
from .grid import LENSES
from .records import Context, Finding, Step
from .verdicts import combine, layer_rows, middle_verdict, with_end


def similarity_rows(result: xr.Dataset, model: str, pair: str) -> pd.DataFrame:
    """One pair's similarity curve (a baseline similarity has no pair dimension: its one curve)."""
    row = result.sel(pair=pair) if "pair" in result.dims else result
    return layer_rows(model, "—", pair, result.layer.values, row.score.values, row.ci_low.values, row.ci_high.values)


def similarity(role: str, variants: tuple[str, str], series: str, what: str, baseline: str | None = None) -> Step:
    """Paired − unpaired cosine of the two ``variants`` on the ``role``'s model (against the ``baseline``
    variant instead of every mismatched pair, if given); reproduced when it beats the embeddings mid-depth."""
    def step(ctx: Context, f: Finding) -> None:
        model = ctx.models[role]
        if baseline is None:
            report = similarity_report(ctx.store, model, f.dataset, list(variants), ctx.work / role,
                                       n_boot=ctx.n_boot)
        else:
            report = baseline_similarity_report(ctx.store, model, f.dataset, list(variants), baseline,
                                                ctx.work / role, n_boot=ctx.n_boot)
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, f.key))
        f.table = similarity_rows(report.result, model, series)
        f.verdict, f.why = middle_verdict(f.table, +1, what, True)
    return step


@dataclass(frozen=True)
class Margin:
    """A target-margin reading: the variant, the expected sign in the middle layers (and at the last layer, if
    the claim names it), and which annotated positions count."""

    roles: tuple[str, ...]
    variant: str
    sign: int
    what: str
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    label: str | None = None
    end_sign: int | None = None


def margin(spec: Margin) -> Step:
    """The margin through both lenses on the model of each role (a model in several roles runs once). With
    several models the verdict is the first model's; every model's reasons are given, and one model that
    cannot run is a reason, not a stop."""
    def step(ctx: Context, f: Finding) -> None:
        models = dict.fromkeys(ctx.models[r] for r in spec.roles)
        tables, verdicts = [], []
        for model in models:
            role = next(r for r in spec.roles if ctx.models[r] == model)
            try:
                found = _margin_tables(ctx, f, spec, model, role, tag=f"-{role}" if len(models) > 1 else "")
            except ActstoreError as exc:
                if len(models) == 1:
                    raise
                verdicts.append((f"{model}", "not run", f"the analysis stopped: {exc}"))
                continue
            f.models.append(model)
            tables += found[0]
            verdicts += [(f"{model} {lens}" if len(models) > 1 else lens, verdict, why)
                         for lens, verdict, why in found[1]]
        if not tables:
            raise ActstoreError("; ".join(why for _, _, why in verdicts))
        f.table = pd.concat(tables, ignore_index=True)
        f.verdict, f.why = combine(verdicts)
    return step


def _margin_tables(ctx: Context, f: Finding, spec: Margin, model: str, role: str,
                   tag: str) -> tuple[list[pd.DataFrame], list[tuple[str, str, str]]]:
    """One model's rows and (lens, verdict, why) through both lenses; its figures join ``f``'s."""
    tables, verdicts = [], []
    for lens in LENSES:
        report = target_report(ctx.store, model, f.dataset, ctx.work / role / lens, variant=spec.variant,
                               lens_mode=lens, n_boot=ctx.n_boot, include=_listed(spec.include),
                               exclude=_listed(spec.exclude), label=spec.label, layers=ctx.lens_layers(model))
        r = report.result
        f.figures.append(ctx.figure(report.files, f"{f.key}{tag}-{lens}"))
        rows = layer_rows(model, lens, spec.what, r.layer.values, r.margin.values, r.ci_low.values, r.ci_high.values)
        wins = layer_rows(model, lens, "share where the target wins", r.layer.values, r.target_wins.values)
        tables += [rows, wins]
        verdict, why = with_end(middle_verdict(rows, spec.sign, spec.what), rows, spec.end_sign)
        verdicts.append((lens, verdict, why + f" ({int(r.attrs['n_positions'])} positions)"))
    return tables, verdicts


def _listed(words: tuple[str, ...] | None) -> list[str] | None:
    return None if words is None else list(words)
