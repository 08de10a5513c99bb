"""The experiments of one shape each: steps that read several analyses (or several models) for one claim.
Each fills its finding's models, figures, table and verdict; the claims themselves are in ``claims``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ...analyze.stats import mean_ci
from ...analyze.trajectories import WORDS
from ...errors import ActstoreError
from ...plot.analyses import layer_curves_plot
from ..languages import languages_report
from ..logit_lens import logit_lens_report
from ..roles import roles_report
from ..similarity import similarity_report
from ..target_margin import target_report
from ..trajectories import trajectories_report
from .factories import similarity_rows
from .grid import LENSES
from .records import Context, Finding
from .verdicts import combine, fmt, in_middle, layer_rows, middle, middle_verdict

MULTILINGUAL = ("main", "control")                 # the multilingual experiments' models: ours and the control


def _shown_pairs(result: xr.Dataset, role: str) -> list[str]:
    """en–zh (else the first pair); on the main model also every other pair with English."""
    every = result.pair.values
    pairs = [p for p in every if str(p) in ("en-zh", "zh-en")] or list(every[:1])
    return [str(p) for p in pairs + ([p for p in every if str(p).startswith("en-") and p not in pairs]
                                     if role == "main" else [])]


def multilingual_similarity(ctx: Context, f: Finding) -> None:
    """Paired similarity across the django-ui languages; the verdict is the main model's en–zh curve."""
    tables = []
    for role, model in ctx.present(MULTILINGUAL):
        variants = None if role == "main" else ["en", "zh"]
        report = similarity_report(ctx.store, model, "django-ui", variants, ctx.work / role, n_boot=ctx.n_boot)
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, f"multilingual-similarity-{role}"))
        tables += [similarity_rows(report.result, model, pair) for pair in _shown_pairs(report.result, role)]
    f.table = pd.concat(tables, ignore_index=True)
    main = f.table[(f.table.model == ctx.models["main"]) & (f.table.series.isin(["en-zh", "zh-en"]))]
    f.verdict, f.why = middle_verdict(main if len(main) else f.table, +1, "en–zh similarity", True)


def _translation_rows(ctx: Context, f: Finding, role: str, model: str, lens: str) -> list[pd.DataFrame]:
    """One model and lens: log p(English translation) vs log p(actual next token) where both are known."""
    out, layers_read = ctx.work / role / lens, ctx.lens_layers(model)
    english = logit_lens_report(ctx.store, model, "django-ui", out / "en-next-word", variant="zh",
                                targets="en-next-word", k=1, lens_mode=lens, layers=layers_read).result
    actual = logit_lens_report(ctx.store, model, "django-ui", out / "next-token", variant="zh",
                               targets="next-token", k=1, lens_mode=lens, layers=layers_read).result
    have = np.flatnonzero((english.target_rank.isel(layer=0).values >= 0)
                          & (actual.target_rank.isel(layer=0).values >= 0))
    if not len(have):
        raise ActstoreError("no Chinese position has a one-token English translation of its next word")
    pick = lambda r: r.target_logprob.isel(token=have).transpose("layer", "token")  # noqa: E731
    diff = mean_ci(pick(english) - pick(actual), "token", ctx.n_boot)
    en, zh = mean_ci(pick(english), "token", ctx.n_boot), mean_ci(pick(actual), "token", ctx.n_boot)
    layers = english.layer.values
    f.figures.append(ctx.save_figure(layer_curves_plot(
        {"log p(English translation)": en["mean"].values, "log p(next Chinese token)": zh["mean"].values},
        layers, out / "translation-vs-next.png", "mean log-probability",
        f"{model}, {lens} lens: {len(have)} positions"), f"multilingual-lens-{role}-{lens}"))
    return [layer_rows(model, lens, "translation − next token", layers, diff["mean"], diff.ci_low, diff.ci_high),
            layer_rows(model, lens, "log p(translation)", layers, en["mean"], en.ci_low, en.ci_high),
            layer_rows(model, lens, "log p(next token)", layers, zh["mean"], zh.ci_low, zh.ci_high)]


def multilingual_lens(ctx: Context, f: Finding) -> None:
    """Translation vs next token through both lenses; the verdict is the main model's, per lens."""
    tables = []
    for role, model in ctx.present(MULTILINGUAL):
        f.models.append(model)
        for lens in LENSES:
            tables += _translation_rows(ctx, f, role, model, lens)
    f.table = pd.concat(tables, ignore_index=True)
    verdicts = []
    for lens in LENSES:
        rows = f.table[(f.table.model == ctx.models["main"]) & (f.table.lens == lens)
                       & (f.table.series == "translation − next token")]
        verdicts.append((lens, *middle_verdict(rows, +1, "translation − next token")))
    f.verdict, f.why = combine(verdicts)


def _trend_verdict(mass: xr.DataArray) -> tuple[str, str]:
    """English above Chinese somewhere mid-depth, and Chinese above English at the last layer: both, one, none."""
    en, zh = mass.sel(language="en").values, mass.sel(language="zh").values
    mid = in_middle(mass.layer.values / max(int(mass.layer.max()), 1))
    en_mid, zh_end = bool((en[mid] > zh[mid]).any()), bool(zh[-1] > en[-1])
    peak = int(np.argmax(en[1:])) + 1
    verdict = "reproduced" if en_mid and zh_end else "partly" if en_mid or zh_end else "not reproduced at this scale"
    return verdict, (f"English mass above Chinese in a middle layer: {en_mid} (English peaks at layer "
                     f"{int(mass.layer.values[peak])}: {en[peak]:.3f}); Chinese above English at the last layer: "
                     f"{zh_end} ({zh[-1]:.3f} vs {en[-1]:.3f})")


def language_trends(ctx: Context, f: Finding) -> None:
    """Probability mass per language on Chinese input, both lenses; the verdict is the main model's."""
    tables, verdicts = [], []
    for role, model in ctx.present(MULTILINGUAL):
        f.models.append(model)
        for lens in LENSES:
            report = languages_report(ctx.store, model, "django-ui", ctx.work / role / lens, variant="zh",
                                      lens_mode=lens, layers=ctx.lens_layers(model))
            mass = report.result.mass
            f.figures.append(ctx.figure(report.files, f"language-trends-{role}-{lens}"))
            for language in ("en", "zh"):
                one = mass.sel(language=language)
                tables.append(layer_rows(model, lens, f"mass {language}", mass.layer.values, one.values,
                                         one.ci_low.values, one.ci_high.values))
            if role == "main":
                verdicts.append((lens, *_trend_verdict(mass)))
    f.table = pd.concat(tables, ignore_index=True)
    f.verdict, f.why = combine(verdicts)


def arithmetic_pca(ctx: Context, f: Finding) -> None:
    """The share of prompts nearer the answer's word anchor than its digit anchor, per layer; the last layer
    must come back to the digit (the model answers with one)."""
    model = ctx.models["code"]
    report = trajectories_report(ctx.store, model, "arithmetic", ctx.work / "code", variant="result-first")
    r = report.result
    f.models.append(model)
    f.figures.append(ctx.figure(report.files, "arithmetic-pca"))
    answers = [str(item).split("+")[-1].split("*")[-1] for item in r["item"].values] if "item" in r.coords else []
    if not answers:
        raise ActstoreError("the trajectories carry no item labels")
    digit = r.anchor_position.sel(anchor=answers).values                        # (example, component)
    word = r.anchor_position.sel(anchor=[WORDS[int(a)] for a in answers]).values
    path = r.trajectory.transpose("layer", "example", "component").values
    nearer = (np.linalg.norm(path - word, axis=-1) < np.linalg.norm(path - digit, axis=-1)).astype(float)
    share = mean_ci(xr.DataArray(nearer, dims=("layer", "example"), coords={"layer": r.layer.values}), "example",
                    ctx.n_boot)
    f.table = layer_rows(model, "—", "share nearer the word anchor", r.layer.values, share["mean"], share.ci_low,
                         share.ci_high)
    shifted = f.table.assign(value=f.table.value - 0.5, ci_low=f.table.ci_low - 0.5, ci_high=f.table.ci_high - 0.5)
    f.verdict, f.why = middle_verdict(shifted, +1, "share nearer the word − 0.5", True)
    last = f.table.iloc[-1]
    f.why += f"; at the last layer the share is {last.value:.2f}"
    if last.value >= 0.5 and f.verdict == "reproduced":
        f.verdict = "partly"
        f.why += (", so the states stay nearer the word anchors to the end: the plane does not separate the "
                  "answer's two forms here, and the middle-layer share is no evidence by itself")
    explained = r.explained_variance.values
    f.notes.append(f"The anchor plane explains {explained[0]:.1%} + {explained[1]:.1%} of the anchors' variance; "
                   "the verdict is a reading of a qualitative figure.")


def _roles_through(ctx: Context, f: Finding, model: str, lens: str) -> tuple[list[pd.DataFrame], tuple[str, str, str]]:
    """One lens: the centred confusion's mean diagonal and the gold-role margin, with that lens's verdict
    (reproduced when every role's diagonal entry is positive at some middle layer)."""
    out = ctx.work / "main" / lens
    report = roles_report(ctx.store, model, "semantics", out, variant="sentence", lens_mode=lens,
                          layers=ctx.lens_layers(model))
    r = report.result
    f.figures.append(ctx.figure(report.files, f"cogs-roles-{lens}"))
    diagonal = np.stack([r.confusion.sel(gold=g, predicted=g).values for g in r.gold.values], axis=-1)
    rows = layer_rows(model, lens, "mean diagonal (centred)", r.layer.values, diagonal.mean(axis=-1))
    margin = target_report(ctx.store, model, "semantics", out, variant="sentence", lens_mode=lens,
                           n_boot=ctx.n_boot, layers=ctx.lens_layers(model)).result
    tables = [rows, layer_rows(model, lens, "gold − max other role", margin.layer.values, margin.margin.values,
                               margin.ci_low.values, margin.ci_high.values)]
    mid = middle(rows[rows.layer > 0])
    all_positive = (diagonal[in_middle(rows.depth.values)] > 0).all(axis=-1)
    verdict = ("reproduced" if all_positive.any() else "partly" if (mid.value > 0).any()
               else "not reproduced at this scale")
    best = rows.loc[rows.value.idxmax()]
    return tables, (lens, verdict, f"every role's diagonal entry positive in {int(all_positive.sum())} of "
                                   f"{len(mid)} middle layers; largest mean diagonal {fmt(best)}")


def cogs_roles(ctx: Context, f: Finding) -> None:
    """The semantic-role lens on COGS-style sentences, through both lenses."""
    model = ctx.models["main"]
    f.models.append(model)
    tables, verdicts = [], []
    for lens in LENSES:
        rows, verdict = _roles_through(ctx, f, model, lens)
        tables += rows
        verdicts.append(verdict)
    f.table = pd.concat(tables, ignore_index=True)
    f.verdict, f.why = combine(verdicts)


def interventions(ctx: Context, f: Finding) -> None:
    """The steering sweeps report themselves (docs/interventions.md); this report includes that page."""
    page = ctx.docs / "interventions.md"
    if page.is_file():
        f.included = page.read_text(encoding="utf-8")
        f.verdict, f.why = "see below", "the sweeps' own report, included as written by `examples/steering_sweeps.py`"
    else:
        f.verdict, f.why = "not run", ("docs/interventions.md (the sweeps with random-vector controls) is not in this "
                                       "checkout yet; this report does not run its own sweeps")
