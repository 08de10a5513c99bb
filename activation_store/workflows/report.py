"""The reproduction report of Wu et al. (2024)'s text experiments, end to end: extract the grid of runs into
one store, run every analysis from the store with the existing workflows, and collect each experiment's
numbers, figures and verdict as ``Finding`` objects. ``report_markdown`` renders them; nothing here writes
markdown, and no analysis is computed here that an ``analyze`` function already computes.

Models by role: ``main`` (multilingual text and COGS; Gemma 3 270M by default), ``code`` (code and
arithmetic; Qwen2.5-Coder 0.5B) and ``control`` (the multilingual experiments on an English-centred model,
SmolLM2 135M). Lens-based experiments are read through both lenses: ``normed`` (ours: final norm on every
layer) and ``raw`` (the paper's code: no final norm on inner layers)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import xarray as xr

from ..analyze.stats import mean_ci
from ..errors import ActstoreError
from ..plot.analyses import layer_curves_plot
from ..store import open_lens
from .languages import languages_report
from .logit_lens import logit_lens_report
from .roles import roles_report
from .similarity import baseline_similarity_report, similarity_report
from .target_margin import target_report
from .trajectories import trajectories_report

DEFAULT_MODELS = ("gemma3-270m", "qwen2.5-coder-0.5b", "smollm2-135m")
ROLES = ("main", "code", "control")
# items per dataset: sized so the whole report runs in about 20 minutes on 2 shared CPU cores
DEFAULT_LIMITS = {"django-ui": 30, "semantics": 50, "arithmetic": 200, "code": 80}
LENSES = ("normed", "raw")
MIDDLE = (0.25, 0.75)                              # relative depth counted as "middle layers"


@dataclass(frozen=True)
class GridRun:
    """One extraction of the grid: the model's role, the dataset, its variants (None: all)."""

    role: str
    dataset: str
    variants: tuple[str, ...] | None = None


GRID = (
    GridRun("main", "django-ui", ("en", "zh", "ja", "ru", "fr", "de", "es")),
    GridRun("main", "semantics"),
    GridRun("code", "arithmetic"),
    GridRun("code", "code"),
    # the code lens also on the main model: Qwen's tokenizer merges "(" with the next name ("(numbers"), so most
    # call-argument positions have no token ending at the "(" and only a few annotations survive on Qwen
    GridRun("main", "code", ("code",)),
    GridRun("control", "django-ui", ("en", "zh")),
)


@dataclass
class Finding:
    """One experiment of the paper, as measured here: what the report shows for it."""

    key: str
    title: str
    paper: str                                     # the paper's claim
    measure: str                                   # what our numbers are
    models: list[str] = field(default_factory=list)
    dataset: str = ""
    lens: str = "—"                                # normed, raw, "normed and raw", or — (no lens)
    figures: list[Path] = field(default_factory=list)
    table: pd.DataFrame | None = None              # columns: model, lens, series, layer, depth, value, ci_low, ci_high
    verdict: str = "not run"                       # reproduced / partly / not reproduced at this scale / not run
    why: str = ""
    notes: list[str] = field(default_factory=list)
    included: str = ""                             # markdown included verbatim (the interventions' own report)


@dataclass
class ReproductionRun:
    """Everything the report is made from: the findings, the runs extracted, and how long each step took."""

    findings: list[Finding]
    models: dict[str, str]                         # role -> model name in the store
    runs: list[dict[str, Any]]                     # model, dataset, variants, items, tokens, seconds
    limits: dict[str, int | None]
    store: str
    seconds: dict[str, float] = field(default_factory=dict)
    lens_step: int = 1


def resolve_models(models: list[str] | None) -> dict[str, str]:
    """``main[,code[,control]]``: the code role falls back to the main model; without a control, none is run."""
    models = list(models or DEFAULT_MODELS)
    if not 1 <= len(models) <= 3 or not all(m.strip() for m in models):
        raise ActstoreError(f"--models takes 1 to 3 models (main, code, control), got {len(models)}")
    out = {"main": models[0], "code": models[1] if len(models) > 1 else models[0]}
    if len(models) > 2:
        out["control"] = models[2]
    return out


def parse_limits(spec: str | int | None) -> dict[str, int | None]:
    """``N`` (every dataset), ``NAME=N,NAME=N`` (those datasets; the rest default) or None (the defaults)."""
    limits: dict[str, int | None] = dict(DEFAULT_LIMITS)
    if spec is None or spec == "":
        return limits
    parts = [spec] if isinstance(spec, int) else [p.strip() for p in str(spec).split(",") if p.strip()]
    for part in parts:
        name, _, value = str(part).rpartition("=")
        try:
            number = int(value)
        except ValueError:
            raise ActstoreError(f"--limit takes N or DATASET=N[,DATASET=N], got {spec!r}") from None
        if number < 2:
            raise ActstoreError(f"--limit must be at least 2 items (similarity pairs items), got {number}")
        if name and name not in limits:
            raise ActstoreError(f"--limit names an unknown dataset {name!r}; the grid's: {', '.join(limits)}")
        for key in ([name] if name else list(limits)):
            limits[key] = number
    return limits


def extract_grid(store: str, models: dict[str, str], limits: dict[str, int | None], *, overwrite: bool = False,
                 dtype: str = "bfloat16", batch_size: int = 8, progress: bool = False,
                 log: Callable[[str], None] = print) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Extract every run of the grid (one per model and dataset; variants merged) into ``store``; an existing
    identical run is resumed (a no-op when complete). Returns the stored model names by role, and the runs."""
    from ..extract import extract

    wanted: dict[tuple[str, str], set[str] | None] = {}
    for run in GRID:
        if run.role not in models:
            continue
        key = (models[run.role], run.dataset)
        if run.variants is None or (key in wanted and wanted[key] is None):
            wanted[key] = None
        else:
            wanted[key] = (wanted.get(key) or set()) | set(run.variants)
    names: dict[str, str] = {}
    runs = []
    for (model, dataset), variants in wanted.items():
        order = [v for run in GRID if run.dataset == dataset and run.variants for v in run.variants]
        chosen = sorted(variants, key=order.index) if variants else None
        started = time.perf_counter()
        result = extract(model=model, dataset=dataset, store=store, variants=chosen, limit=limits.get(dataset),
                         dtype=dtype, batch_size=batch_size, overwrite=overwrite, progress=progress)
        seconds = time.perf_counter() - started
        names[model] = result.model
        runs.append({"model": result.model, "dataset": dataset, "variants": ",".join(chosen or ["all"]),
                     "limit": limits.get(dataset), "seconds": round(seconds, 1)})
        log(f"extracted {result.model} / {dataset} in {seconds:.0f} s")
    return {role: names[model] for role, model in models.items()}, runs


# ---------------------------------------------------------------- per-layer numbers and verdicts

def layer_rows(model: str, lens: str, series: str, layers: np.ndarray, value: Any, low: Any = None,
               high: Any = None) -> pd.DataFrame:
    """A per-layer curve as table rows, with each layer's relative depth (layer / last layer)."""
    layers = np.asarray(layers)
    nan = np.full(len(layers), np.nan)
    return pd.DataFrame({"model": model, "lens": lens, "series": series, "layer": layers,
                         "depth": layers / max(int(layers.max()), 1), "value": np.asarray(value, dtype=float),
                         "ci_low": nan if low is None else np.asarray(low, dtype=float),
                         "ci_high": nan if high is None else np.asarray(high, dtype=float)})


def _middle(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows.depth >= MIDDLE[0]) & (rows.depth <= MIDDLE[1])]


def _fmt(row: pd.Series) -> str:
    ci = "" if np.isnan(row.ci_low) else f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
    return f"layer {int(row.layer)} ({row.depth:.0%}): {row.value:+.3f}{ci}"


def middle_verdict(rows: pd.DataFrame, sign: int = 1, what: str = "the effect",
                   beyond_embeddings: bool = False) -> tuple[str, str]:
    """Reproduced when the 95% interval excludes zero in the expected direction at some middle layer
    (25–75% depth); partly when it does only outside the middle; otherwise not reproduced at this scale.
    ``beyond_embeddings``: the middle-layer effect must also exceed the embeddings' (layer 0), else partly
    (a similarity already present in the input embeddings is not the hub's)."""
    def hits(frame):
        return frame[(sign * frame.ci_low > 0) if sign > 0 else (frame.ci_high < 0)]
    inner = rows[rows.layer > 0]
    mid, anywhere = hits(_middle(inner)), hits(inner)
    best = inner.loc[(sign * inner.value).idxmax()] if len(inner) else None
    direction = "> 0" if sign > 0 else "< 0"
    if len(mid):
        pick = mid.loc[(sign * mid.value).idxmax()]
        why = (f"{what} {direction} with the 95% interval excluding 0 in {len(mid)} of "
               f"{len(_middle(inner))} middle layers (strongest {_fmt(pick)})")
        embedded = rows[rows.layer == 0]
        if beyond_embeddings and len(embedded) and sign * embedded.value.iloc[0] >= sign * pick.value:
            return "partly", why + f", but no larger than at the embeddings ({_fmt(embedded.iloc[0])})"
        return "reproduced", why
    if len(anywhere):
        pick = anywhere.loc[(sign * anywhere.value).idxmax()]
        return "partly", f"{what} {direction} only outside the middle layers ({_fmt(pick)})"
    shown = f"; strongest {_fmt(best)}" if best is not None else ""
    return "not reproduced at this scale", f"no layer where {what} {direction} with an interval excluding 0{shown}"


def _run(finding: Finding, step: Callable[[], None]) -> Finding:
    """Run one experiment's step; an analysis that cannot run on these data leaves its reason, not a crash."""
    try:
        step()
    except ActstoreError as exc:
        finding.verdict, finding.why = "not run", f"the analysis stopped: {exc}"
    return finding


# ---------------------------------------------------------------- the experiments

def _similarity_rows(result: xr.Dataset, model: str, pair: str, series: str | None = None) -> pd.DataFrame:
    row = result.sel(pair=pair) if "pair" in result.dims else result
    return layer_rows(model, "—", series or pair, result.layer.values, row.score.values, row.ci_low.values,
                      row.ci_high.values)


def multilingual_similarity(ctx: "Context") -> Finding:
    f = Finding("multilingual-similarity", "Multilingual similarity (en–zh and other pairs)",
                "Parallel sentences (zh–en, GALE) are more similar than mismatched ones (mean-centred cosine of the "
                "last token, matched minus all mismatched pairs), most in the middle layers.",
                "paired − unpaired cosine of the last token, mean-centred, per layer; 95% bootstrap interval over items",
                dataset="django-ui")

    def step():
        tables = []
        for role in ("main", "control"):
            if role not in ctx.models:
                continue
            model = ctx.models[role]
            variants = None if role == "main" else ["en", "zh"]
            report = similarity_report(ctx.store, model, "django-ui", variants, ctx.work / role, n_boot=ctx.n_boot)
            f.models.append(model)
            f.figures.append(ctx.figure(report.files, f"multilingual-similarity-{role}"))
            pairs = [p for p in report.result.pair.values if str(p) in ("en-zh", "zh-en")] or list(report.result.pair.values[:1])
            for pair in pairs + ([p for p in report.result.pair.values if str(p).startswith("en-") and p not in pairs]
                                 if role == "main" else []):
                tables.append(_similarity_rows(report.result, model, str(pair)))
        f.table = pd.concat(tables, ignore_index=True)
        main = f.table[(f.table.model == ctx.models["main"]) & (f.table.series.isin(["en-zh", "zh-en"]))]
        f.verdict, f.why = middle_verdict(main if len(main) else f.table, +1, "en–zh similarity", True)
        f.notes.append("Data: Django's human-translated UI strings (short), not GALE's sentences; no suffix appended.")
    return _run(f, step)


def multilingual_lens(ctx: "Context") -> Finding:
    f = Finding("multilingual-lens", "Multilingual logit lens: English translation vs the next Chinese token",
                "On Chinese text, the logit lens at intermediate layers gives the English translation of the next "
                "word a higher log-probability than the actual next Chinese token; the Chinese token wins at the end.",
                "log p(English translation of the next word) − log p(actual next token) per layer over the "
                "positions that have a one-token translation (CC-CEDICT first gloss); 95% bootstrap interval over positions",
                dataset="django-ui", lens="normed and raw")

    def step():
        tables = []
        for role in ("main", "control"):
            if role not in ctx.models:
                continue
            model = ctx.models[role]
            f.models.append(model)
            for lens in LENSES:
                out = ctx.work / role / lens
                english = logit_lens_report(ctx.store, model, "django-ui", out / "en-next-word", variant="zh",
                                            targets="en-next-word", k=1, lens_mode=lens,
                                            layers=ctx.lens_layers(model)).result
                actual = logit_lens_report(ctx.store, model, "django-ui", out / "next-token", variant="zh",
                                           targets="next-token", k=1, lens_mode=lens, layers=ctx.lens_layers(model)).result
                have = np.flatnonzero((english.target_rank.isel(layer=0).values >= 0)
                                      & (actual.target_rank.isel(layer=0).values >= 0))
                if not len(have):
                    raise ActstoreError("no Chinese position has a one-token English translation of its next word")
                pick = lambda r: r.target_logprob.isel(token=have).transpose("layer", "token")  # noqa: E731
                diff = mean_ci(pick(english) - pick(actual), "token", ctx.n_boot)
                en, zh = mean_ci(pick(english), "token", ctx.n_boot), mean_ci(pick(actual), "token", ctx.n_boot)
                layers = english.layer.values
                tables += [layer_rows(model, lens, "translation − next token", layers, diff["mean"], diff.ci_low, diff.ci_high),
                           layer_rows(model, lens, "log p(translation)", layers, en["mean"], en.ci_low, en.ci_high),
                           layer_rows(model, lens, "log p(next token)", layers, zh["mean"], zh.ci_low, zh.ci_high)]
                f.figures.append(ctx.save_figure(layer_curves_plot(
                    {"log p(English translation)": en["mean"].values, "log p(next Chinese token)": zh["mean"].values},
                    layers, ctx.work / role / lens / "translation-vs-next.png", "mean log-probability",
                    f"{model}, {lens} lens: {len(have)} positions"), f"multilingual-lens-{role}-{lens}"))
        f.table = pd.concat(tables, ignore_index=True)
        verdicts = []
        for lens in LENSES:
            rows = f.table[(f.table.model == ctx.models["main"]) & (f.table.lens == lens)
                           & (f.table.series == "translation − next token")]
            verdicts.append((lens, *middle_verdict(rows, +1, "translation − next token")))
        f.verdict, f.why = _combine(verdicts)
        f.notes.append("The paper requires the next word to be one token; we take every position whose next jieba "
                       "word has a one-token English gloss.")
    return _run(f, step)


def _combine(verdicts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """One verdict over the lenses: the normed lens's (on models whose residual norm grows to 1e4 and more,
    such as Gemma 3, the raw lens's log-probabilities are degenerate), with every lens's reason beside it."""
    by_lens = {lens: verdict for lens, verdict, _ in verdicts}
    verdict = by_lens.get("normed", verdicts[0][1])
    reasons = "; ".join(f"{lens} lens: {verdict_} — {why}" for lens, verdict_, why in verdicts)
    return verdict, reasons


def language_trends(ctx: "Context") -> Finding:
    f = Finding("language-trends", "Language trends through the layers (Chinese input)",
                "On non-English input, the lens's probability mass on English tokens rises in the early-middle "
                "layers (the dominant language is salient) and the input language takes over at the end.",
                "probability mass per language (p(language | token) from wordfreq), mean over all Chinese-input "
                "tokens per layer; 95% interval resampling whole sentences",
                dataset="django-ui", lens="normed and raw")

    def step():
        tables, verdicts = [], []
        for role in ("main", "control"):
            if role not in ctx.models:
                continue
            model = ctx.models[role]
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
                    en, zh = mass.sel(language="en").values, mass.sel(language="zh").values
                    depth = mass.layer.values / max(int(mass.layer.max()), 1)
                    middle = (depth >= MIDDLE[0]) & (depth <= MIDDLE[1])
                    en_mid, zh_end = bool((en[middle] > zh[middle]).any()), bool(zh[-1] > en[-1])
                    peak = int(mass.layer.values[int(np.argmax(en[1:])) + 1])
                    verdict = ("reproduced" if en_mid and zh_end else "partly" if en_mid or zh_end
                               else "not reproduced at this scale")
                    verdicts.append((lens, verdict, f"English mass above Chinese in a middle layer: {en_mid} "
                                                    f"(English peaks at layer {peak}: {en[int(np.argmax(en[1:])) + 1]:.3f}); "
                                                    f"Chinese above English at the last layer: {zh_end} "
                                                    f"({zh[-1]:.3f} vs {en[-1]:.3f})"))
        f.table = pd.concat(tables, ignore_index=True)
        f.verdict, f.why = _combine(verdicts)
    return _run(f, step)


def _margin_finding(ctx: "Context", f: Finding, role: str | tuple[str, ...], dataset: str, variant: str, sign: int,
                    what: str, include: list[str] | None = None, exclude: list[str] | None = None,
                    label: str | None = None, end_sign: int | None = None) -> None:
    """A target-margin experiment through both lenses, on the model of each ``role``, with its verdict: ``sign`` is
    the expected direction in the middle layers; ``end_sign`` (if given) the expected direction at the last layer.
    With several models the verdict is the first model's; every model's reasons are given."""
    roles = (role,) if isinstance(role, str) else role
    models = dict.fromkeys(ctx.models[r] for r in roles)               # one model in several roles runs once
    tables, verdicts = [], []
    for model in models:
        role = next(r for r in roles if ctx.models[r] == model)
        try:
            found = _margin_tables(ctx, f, model, role, dataset, variant, sign, what, include, exclude, label,
                                   end_sign, tag=f"-{role}" if len(models) > 1 else "")
        except ActstoreError as exc:
            if len(models) == 1:
                raise
            verdicts.append((f"{model}", "not run", f"the analysis stopped: {exc}"))
            continue
        f.models.append(model)
        tables += found[0]
        verdicts += [(f"{model} {lens}" if len(models) > 1 else lens, verdict, why) for lens, verdict, why in found[1]]
    if not tables:
        raise ActstoreError("; ".join(why for _, _, why in verdicts))
    f.table = pd.concat(tables, ignore_index=True)
    f.verdict, f.why = _combine(verdicts)


def _margin_tables(ctx: "Context", f: Finding, model: str, role: str, dataset: str, variant: str, sign: int, what: str,
                   include: list[str] | None, exclude: list[str] | None, label: str | None, end_sign: int | None,
                   tag: str) -> tuple[list[pd.DataFrame], list[tuple[str, str, str]]]:
    """One model's rows and (lens, verdict, why) through both lenses; its figures join ``f``'s."""
    tables, verdicts = [], []
    for lens in LENSES:
        report = target_report(ctx.store, model, dataset, ctx.work / role / lens, variant=variant, lens_mode=lens,
                               n_boot=ctx.n_boot, include=include, exclude=exclude, label=label,
                               layers=ctx.lens_layers(model))
        r = report.result
        f.figures.append(ctx.figure(report.files, f"{f.key}{tag}-{lens}"))
        rows = layer_rows(model, lens, what, r.layer.values, r.margin.values, r.ci_low.values, r.ci_high.values)
        wins = layer_rows(model, lens, "share where the target wins", r.layer.values, r.target_wins.values)
        tables += [rows, wins]
        verdict, why = middle_verdict(rows, sign, what)
        if end_sign is not None:
            last = rows.iloc[-1]
            at_end = end_sign * last.value > 0
            why += f"; at the last layer {last.value:+.3f} ({'as' if at_end else 'not as'} expected)"
            if verdict == "reproduced" and not at_end:
                verdict = "partly"
        verdicts.append((lens, verdict, why + f" ({int(r.attrs['n_positions'])} positions)"))
    return tables, verdicts


def arithmetic_lens(ctx: "Context") -> Finding:
    f = Finding("arithmetic-lens", "Arithmetic logit lens: digit vs number word",
                "At the last token of \"5=3+\", intermediate layers prefer the English number word (\" two\") to "
                "the digit (\"2\"); the digit wins at the output.",
                "log p(digit b) − log p(word b) at the last token of the result-first prompt \"{a+b}={a}+\"; 95% "
                "bootstrap interval over prompts (negative = the word wins)", dataset="arithmetic", lens="normed and raw")
    _run(f, lambda: _margin_finding(ctx, f, "code", "arithmetic", "result-first", -1, "digit − word", end_sign=+1))
    f.notes.append("The built-in set lists items by b (a+1, a+2, …): the first N items are the b = 1, 2, … sums; "
                   "the multiplication items are not reached at the default limit.")
    return f


def arithmetic_similarity(ctx: "Context") -> Finding:
    f = Finding("arithmetic-similarity", "Arithmetic similarity: \"3+2\" vs \"three plus two\"",
                "An expression in digits and the same expression in words are more similar than mismatched "
                "expressions (last token), most in the middle layers.",
                "paired − unpaired cosine of the last token (digits vs words), mean-centred; 95% interval over items",
                dataset="arithmetic")

    def step():
        model = ctx.models["code"]
        report = similarity_report(ctx.store, model, "arithmetic", ["digits", "words"], ctx.work / "code", n_boot=ctx.n_boot)
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, "arithmetic-similarity"))
        f.table = _similarity_rows(report.result, model, "digits-words")
        f.verdict, f.why = middle_verdict(f.table, +1, "digits–words similarity", True)
        f.notes.append("The paper also splits mismatched pairs into same-result and different-result; we report "
                       "the all-mismatched baseline only.")
    return _run(f, step)


def arithmetic_pca(ctx: "Context") -> Finding:
    f = Finding("arithmetic-pca", "Arithmetic PCA trajectories",
                "Projected into the PCA plane of the 20 number anchors (digit and number-word unembeddings), the "
                "last-token states of \"5=3+\" move through the layers toward the answer's anchors; the paper reads "
                "the middle layers as nearer the English number words.",
                "share of prompts whose state is nearer the word anchor of the answer b than its digit anchor, per "
                "layer (in the anchor plane); 95% bootstrap interval over prompts", dataset="arithmetic")

    def step():
        model = ctx.models["code"]
        report = trajectories_report(ctx.store, model, "arithmetic", ctx.work / "code", variant="result-first")
        r = report.result
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, "arithmetic-pca"))
        answers = [str(item).split("+")[-1].split("*")[-1] for item in r["item"].values] if "item" in r.coords else []
        if not answers:
            raise ActstoreError("the trajectories carry no item labels")
        from ..analyze.trajectories import WORDS
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
        last = f.table.iloc[-1]  # the model answers with a digit: the last layer must come back to the digits
        f.why += f"; at the last layer the share is {last.value:.2f}"
        if last.value >= 0.5 and f.verdict == "reproduced":
            f.verdict = "partly"
            f.why += (", so the states stay nearer the word anchors to the end: the plane does not separate the "
                      "answer's two forms here, and the middle-layer share is no evidence by itself")
        explained = r.explained_variance.values
        f.notes.append(f"The anchor plane explains {explained[0]:.1%} + {explained[1]:.1%} of the anchors' variance; "
                       "the verdict is a reading of a qualitative figure.")
    return _run(f, step)


def code_and_lens(ctx: "Context") -> Finding:
    f = Finding("code-and-lens", "Code logit lens: \" and\" at list commas",
                "At the comma between elements of a Python list literal, intermediate layers give \" and\" a higher "
                "probability than \" or\" / \" not\".",
                "log p(\" and\") − max(log p(\" or\"), log p(\" not\")) at list-literal commas (HumanEval); 95% "
                "interval over commas", dataset="code", lens="normed and raw")
    return _run(f, lambda: _margin_finding(ctx, f, ("main", "code"), "code", "code", +1, "and − max(or, not)",
                                           include=[" and"], label="and"))


def code_roles_lens(ctx: "Context") -> Finding:
    f = Finding("code-roles-lens", "Code semantic-role lens: parameter name vs argument",
                "At \"(\" or \",\" before a call's argument, intermediate layers predict the parameter's name "
                "(its semantic role) over the argument's own first token.",
                "log p(parameter name) − log p(argument's first token) at call arguments with a known signature; "
                "95% interval over arguments; the share where the name wins is the paper's sign plot",
                dataset="code", lens="normed and raw")
    return _run(f, lambda: _margin_finding(ctx, f, ("main", "code"), "code", "code", +1, "parameter − argument",
                                           exclude=[" and"], label="roles"))


def code_similarity(ctx: "Context") -> Finding:
    f = Finding("code-similarity", "Code ↔ description similarity",
                "A program and its natural-language description are more similar than mismatched pairs in the "
                "middle layers.",
                "paired − unpaired cosine of the last token (code without docstring vs the docstring), mean-centred; "
                "95% interval over programs", dataset="code")

    def step():
        model = ctx.models["code"]
        report = similarity_report(ctx.store, model, "code", ["code", "doc"], ctx.work / "code", n_boot=ctx.n_boot)
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, "code-similarity"))
        f.table = _similarity_rows(report.result, model, "code-doc")
        f.verdict, f.why = middle_verdict(f.table, +1, "code–doc similarity", True)
    return _run(f, step)


def cogs_similarity(ctx: "Context") -> Finding:
    f = Finding("cogs-similarity", "COGS similarity: sentence vs logical form, against the name-swapped form",
                "A sentence is more similar to its own logical form than to the same form with its two names "
                "swapped (score = cos(original) − cos(swapped) > 0).",
                "cos(sentence, form) − cos(sentence, form with the two names swapped), last token, mean-centred; "
                "95% interval over items", dataset="semantics")

    def step():
        model = ctx.models["main"]
        report = baseline_similarity_report(ctx.store, model, "semantics", ["sentence", "form"], "form-swapped",
                                            ctx.work / "main", n_boot=ctx.n_boot)
        r = report.result
        f.models.append(model)
        f.figures.append(ctx.figure(report.files, "cogs-similarity"))
        f.table = layer_rows(model, "—", "original − swapped", r.layer.values, r.score.values, r.ci_low.values,
                             r.ci_high.values)
        f.verdict, f.why = middle_verdict(f.table, +1, "original − swapped", True)
        f.notes.append("COGS is not installable: sentences and forms come from the built-in seeded COGS-style grammar.")
    return _run(f, step)


def cogs_roles(ctx: "Context") -> Finding:
    f = Finding("cogs-roles", "COGS semantic-role lens",
                "Reading the text before a name, the lens gives the name's role word (agent/theme/recipient) more "
                "probability than that role gets at other roles' positions: the centred confusion matrix has a "
                "positive diagonal.",
                "mean of the centred confusion matrix's diagonal per layer (no interval: a difference of group "
                "means) and, with a 95% interval over positions, log p(gold role) − max log p(other role)",
                dataset="semantics", lens="normed and raw")

    def step():
        model = ctx.models["main"]
        f.models.append(model)
        tables, verdicts = [], []
        for lens in LENSES:
            report = roles_report(ctx.store, model, "semantics", ctx.work / "main" / lens, variant="sentence",
                                  lens_mode=lens, layers=ctx.lens_layers(model))
            r = report.result
            f.figures.append(ctx.figure(report.files, f"cogs-roles-{lens}"))
            diagonal = np.stack([r.confusion.sel(gold=g, predicted=g).values for g in r.gold.values], axis=-1)
            rows = layer_rows(model, lens, "mean diagonal (centred)", r.layer.values, diagonal.mean(axis=-1))
            tables.append(rows)
            margin = target_report(ctx.store, model, "semantics", ctx.work / "main" / lens, variant="sentence",
                                   lens_mode=lens, n_boot=ctx.n_boot, layers=ctx.lens_layers(model)).result
            tables.append(layer_rows(model, lens, "gold − max other role", margin.layer.values, margin.margin.values,
                                     margin.ci_low.values, margin.ci_high.values))
            mid = _middle(rows[rows.layer > 0])
            all_positive = (diagonal[(rows.depth >= MIDDLE[0]).values & (rows.depth <= MIDDLE[1]).values] > 0).all(axis=-1)
            verdict = ("reproduced" if all_positive.any() else "partly" if (mid.value > 0).any()
                       else "not reproduced at this scale")
            best = rows.loc[rows.value.idxmax()]
            verdicts.append((lens, verdict, f"every role's diagonal entry positive in {int(all_positive.sum())} of "
                                            f"{len(mid)} middle layers; largest mean diagonal {_fmt(best)}"))
        f.table = pd.concat(tables, ignore_index=True)
        f.verdict, f.why = _combine(verdicts)
    return _run(f, step)


def interventions(ctx: "Context") -> Finding:
    f = Finding("interventions", "Interventions (steering)",
                "Steering in the shared representation space changes the output in other languages/data types: "
                "English Good−Bad steering moves Chinese/Spanish sentiment about as much as same-language steering; "
                "arithmetic and range(start, end) steering change the answer as predicted.",
                "from the sweeps with random-vector controls (`examples/steering_sweeps.py`, docs/interventions.md)")
    page = ctx.docs / "interventions.md"
    if page.is_file():
        f.included = page.read_text(encoding="utf-8")
        f.verdict, f.why = "see below", "the sweeps' own report, included as written by `examples/steering_sweeps.py`"
    else:
        f.verdict, f.why = "not run", ("docs/interventions.md (the sweeps with random-vector controls) is not in this "
                                       "checkout yet; this report does not run its own sweeps")
    return f


EXPERIMENTS: tuple[Callable[["Context"], Finding], ...] = (
    multilingual_similarity, multilingual_lens, language_trends, arithmetic_lens, arithmetic_similarity,
    arithmetic_pca, code_and_lens, code_roles_lens, code_similarity, cogs_similarity, cogs_roles, interventions)


# ---------------------------------------------------------------- putting it together

@dataclass
class Context:
    """What every experiment reads: the store, models by role, where work files and figures go."""

    store: str
    models: dict[str, str]
    work: Path                                     # CSVs and full-size figures from the workflows
    figures: Path                                  # the report's compact figures
    docs: Path
    n_boot: int = 1000
    lens_step: int = 1                             # lens analyses read every lens_step-th layer (and the last)

    def lens_layers(self, model: str) -> list[int] | None:
        """The layers the lens-based analyses read: every ``lens_step``-th, always with the first and last
        (a full-vocabulary projection per token and layer is the report's main cost)."""
        if self.lens_step <= 1:
            return None
        last = int(open_lens(self.store, model).attrs["n_layers"]) - 1     # n_layers counts the embeddings too
        return sorted(set(range(0, last + 1, self.lens_step)) | {last})

    def save_figure(self, source: Path, name: str) -> Path:
        """A compact copy of a workflow's PNG for the report (palette PNG: a third of the bytes)."""
        from PIL import Image

        target = self.figures / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.convert("RGB").quantize(colors=64).save(target, optimize=True)
        return target

    def figure(self, files: list[Path], name: str) -> Path:
        """The report's copy of the one PNG a workflow wrote."""
        pngs = [p for p in files if Path(p).suffix == ".png"]
        return self.save_figure(pngs[-1], name)


def reproduce(store: str, docs: Path, *, models: list[str] | None = None, limit: str | int | None = None,
              work: Path | None = None, overwrite: bool = False, n_boot: int = 1000, lens_step: int = 1,
              dtype: str = "bfloat16", batch_size: int = 8, log: Callable[[str], None] = print,
              on_finding: Callable[[ReproductionRun], None] | None = None) -> ReproductionRun:
    """Extract the grid into ``store`` and run every experiment from it; figures go to ``docs/figures``, the
    workflows' CSVs and full-size PNGs to ``work`` (default ``<docs>/../results/reproduction``).
    ``on_finding`` sees the run so far after each experiment (e.g. to write the report as it grows)."""
    roles = resolve_models(models)
    limits = parse_limits(limit)
    if n_boot < 1:
        raise ActstoreError(f"--bootstrap must be at least 1, got {n_boot}")
    if lens_step < 1:
        raise ActstoreError(f"--lens-layer-step must be at least 1, got {lens_step}")
    started = time.perf_counter()
    names, runs = extract_grid(store, roles, limits, overwrite=overwrite, dtype=dtype, batch_size=batch_size, log=log)
    extracted = time.perf_counter()
    ctx = Context(str(store), names, Path(work or docs.parent / "results" / "reproduction"),
                  docs / "figures", docs, n_boot, lens_step)
    run = ReproductionRun([], names, runs, limits, str(store), {"extract": extracted - started}, lens_step)
    for experiment in EXPERIMENTS:
        began = time.perf_counter()
        finding = experiment(ctx)
        finding.models = list(dict.fromkeys(finding.models))
        log(f"{finding.key}: {finding.verdict} ({time.perf_counter() - began:.0f} s)")
        run.findings.append(finding)
        run.seconds.update(analyses=time.perf_counter() - extracted, total=time.perf_counter() - started)
        if on_finding is not None:
            on_finding(run)
    return run
