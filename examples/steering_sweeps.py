"""Steering sweeps on the packaged models, each vector beside a random control of the same norm, written as
``docs/interventions.md``. One command reruns everything (recordings already in the store are reused):

    python examples/steering_sweeps.py [--store ./sweeps.zarr] [--doc docs/interventions.md] [--items 30] [--full]

Experiments (PAPER.md: multilingual sentiment, arithmetic, code ``range(``):
- sentiment: W_U(" good") − W_U(" bad") (English) and the same-language pair (好/坏 on sentiment-zh,
  " bueno"/" malo" on sentiment-es) on Gemma 3 270M, at all prompt positions, layers around 53% depth;
  metric: positive share − negative share of the next token over the two target sets;
- arithmetic: the ActAdd state difference "<r> equals to <a+1> plus" − "<r> equals to <a> plus" on
  Qwen2.5-Coder 0.5B at the last position of "{a+b}={a}+", greedy continuation; metric: share of
  answers b − 1 (the predicted shift); the unsteered accuracy is reported first;
- code: W_U("start") − W_U("end") and W_U(" start") − W_U(" end") at the last position of HumanEval
  functions cut after a one-argument ``range(``; metric: log P(start) − log P(end) of the next token,
  and P("0") (the start argument the vector should bring).
Strengths are chosen relative to the residual stream: coefficient = r × median |h| / |v| at the layer."""
from __future__ import annotations

import argparse
import ast
import json
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from num2words import num2words

import actstore
from activation_store.extract.datasets.code import humaneval
from activation_store.extract.datasets.sentiment import sentiment_es, sentiment_zh
from activation_store.extract.interventions import InterventionSpec
from activation_store.extract.spec import RunSpec
from activation_store.store import open_lens
from activation_store.workflows.steering import define_vector
from activation_store.workflows.sweep import (ci_cell, define_control, markdown_table, record_pair, sweep_table,
                                             table_verdict)

ZH_POS = ["好", "棒", "喜欢", "满意", "不错", "推荐", "值得", "赞", "完美"]
ZH_NEG = ["差", "坏", "失望", "糟糕", "垃圾", "后悔", "退货", "烂", "不好"]
ES_POS = [" bueno", " buena", " excelente", " genial", " perfecto", " encanta", " recomiendo", " contento", " feliz"]
ES_NEG = [" malo", " mala", " terrible", " horrible", " pésimo", " decepcionado", " defectuoso", " triste", " peor"]


@dataclass
class Experiment:
    key: str
    title: str
    model: str
    rows: list[dict]                 # jsonl rows: id + variants
    prompt_variant: str
    vectors: dict[str, dict]         # vector kind → define_vector keywords (without the layer)
    layers: list[int]
    positions: str
    metrics: list[tuple[str, int]]   # (metric, predicted sign); the first decides the verdict
    relative: list[float] | None = None       # strengths relative to the residual norm …
    coefficients: list[float] | None = None   # … or absolute coefficients
    targets: dict[str, list[str]] = field(default_factory=dict)
    generate: int = 0
    extra_variants: list[str] = field(default_factory=list)
    note: str = ""


def vocabulary_filter(store: str, model: str, sets: dict[str, list[str]]) -> dict[str, list[str]]:
    vocab = set(open_lens(store, model).vocab_token.values.tolist())
    return {name: [t for t in members if t in vocab] for name, members in sets.items()}


def median_norm(store: str, model: str, dataset: str, variant: str, layer: int) -> float:
    run = actstore.open_run(store, model, dataset)
    keep = (run.position.values > 0) & np.isin(run.token_example.values,
                                               np.flatnonzero(run.variant.values == variant))
    h = run.hidden.sel(layer=layer).values[keep].astype(np.float64)
    return float(np.median(np.linalg.norm(h, axis=-1)))


def analyze_only(exp: Experiment, store: str, n_boot: int) -> dict | None:
    """The tables from whatever (vector, control) pairs of ``exp`` the store already holds; nothing is run."""
    from activation_store.store import Store
    from activation_store.store.interventions import list_recorded

    recorded = {(d, v) for _, d, v, _ in list_recorded(Store.open(store))}
    pairs = [(f"{exp.key}-{kind}-L{layer}", f"{exp.key}-{kind}-L{layer}-random0") for layer in exp.layers
             for kind in exp.vectors]
    missing = [p[0] for p in pairs if (exp.key, p[0]) not in recorded or (exp.key, p[1]) not in recorded]
    pairs = [p for p in pairs if p[0] not in missing]
    if not pairs:
        return None
    targets = json.loads((Path(store).with_suffix(".inputs") / f"{exp.key}-targets.json").read_text(encoding="utf-8"))
    model = {"gemma3-270m": "gemma3-270m", "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b"}[exp.model]
    tables = {metric: sweep_table(store, model, exp.key, pairs, metric, targets or None, n_boot=n_boot)
              for metric, _ in exp.metrics}
    return {"exp": exp, "tables": tables, "targets": targets, "strengths": [(p[0],) for p in pairs], "model": model,
            "seconds": measured_seconds(store).get(exp.key, float("nan")), "store": store, "pairs": pairs,
            "missing": missing}


def recorded_elsewise(store: str, model: str, dataset: str, vector: str, coefficients: list[float]) -> bool:
    """True when ``vector`` was recorded at other coefficients (a changed sweep): then it is recorded afresh."""
    from activation_store.store import Store
    from activation_store.store.interventions import list_recorded

    for _, d, v, attrs in list_recorded(Store.open(store)):
        if (d, v) == (dataset, vector):
            return list(attrs["config"]["coefficients"]) != list(coefficients)
    return False


def times_file(store: str) -> Path:
    return Path(store).with_suffix(".inputs") / "seconds.json"


def measured_seconds(store: str) -> dict[str, float]:
    """Each experiment's last measured recording time (written by a recording pass, read by ``--analyze-only``)."""
    path = times_file(store)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_experiment(exp: Experiment, store: str, work: Path, n_boot: int) -> dict:
    started = time.perf_counter()
    data = work / f"{exp.key}.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in exp.rows) + "\n", encoding="utf-8")
    run = actstore.extract(model=exp.model, dataset=str(data), store=store, dtype="float32", progress=False,
                           variants=[exp.prompt_variant, *exp.extra_variants])
    model = run.model
    targets = vocabulary_filter(store, model, exp.targets)
    target_file = work / f"{exp.key}-targets.json"
    target_file.write_text(json.dumps(targets, ensure_ascii=False), encoding="utf-8")
    spec = RunSpec(exp.model, str(data), store, variants=[exp.prompt_variant], progress=False, batch_size=16)
    pairs, strengths, recorded = [], [], False
    for layer in exp.layers:
        for kind, how in exp.vectors.items():
            name = f"{exp.key}-{kind}-L{layer}"
            _, vector, _ = define_vector(store, model, name, layer, overwrite=True, **how)
            control = define_control(store, model, name, seed=0)
            h = median_norm(store, model, exp.key, exp.prompt_variant, layer)
            coefficients = exp.coefficients or [round(r * h / float(np.linalg.norm(vector)), 3) for r in exp.relative]
            steering = InterventionSpec(name, coefficients, positions=exp.positions, generate=exp.generate,
                                        target_tokens=str(target_file) if targets else None)
            results = record_pair(replace(spec, overwrite=recorded_elsewise(store, model, exp.key, name, coefficients)),
                                  steering, control)
            recorded |= any(r.status != "already complete" for r in results)
            pairs.append((name, control))
            strengths.append((name, layer, float(np.linalg.norm(vector)), h, coefficients))
    tables = {metric: sweep_table(store, model, exp.key, pairs, metric, targets or None, n_boot=n_boot)
              for metric, _ in exp.metrics}
    seconds = time.perf_counter() - started
    if recorded:  # a pass that only reused recordings keeps the time the recording took
        times_file(store).write_text(json.dumps({**measured_seconds(store), exp.key: round(seconds)}), encoding="utf-8")
    else:
        seconds = measured_seconds(store).get(exp.key, float("nan"))
    return {"exp": exp, "tables": tables, "targets": targets, "strengths": strengths, "model": model,
            "seconds": seconds, "store": store, "pairs": pairs}


# --- the experiments -------------------------------------------------------------------------------------------

def sentiment_rows(dataset, variant: str, n: int) -> list[dict]:
    items = dataset.items
    if variant == "zh":  # balance the labelled reviews (pos-…, neg-…)
        pos = [i for i in items if i[0].startswith("pos")][: n // 2]
        neg = [i for i in items if i[0].startswith("neg")][: n - n // 2]
        items = pos + neg
    else:
        items = random.Random(0).sample(list(items), min(n, len(items)))
    return [{"id": item, variant: texts[variant]} for item, texts in items]


def arithmetic_rows(n: int) -> list[dict]:
    pairs = [(a, b) for a in range(1, 40) for b in range(2, 10)]
    random.Random(0).shuffle(pairs)
    return [{"id": f"{a}+{b}", "prompt": f"{a + b}={a}+", "plus1": f"{num2words(a + b)} equals to {num2words(a + 1)} plus",
             "base": f"{num2words(a + b)} equals to {num2words(a)} plus"} for a, b in pairs[:n]]


STDLIB = ("heapq.py", "random.py", "statistics.py", "difflib.py", "textwrap.py", "bisect.py", "base64.py",
          "colorsys.py", "fractions.py", "calendar.py", "shlex.py", "string.py", "quopri.py", "pprint.py")


def range_rows(n: int) -> list[dict]:
    """Functions (code without docstring) cut just after the "(" of each one-argument ``range(`` call: HumanEval's,
    then the standard library's (a few pure-Python modules, via ``code:PATH``), up to ``n`` prompts."""
    import sysconfig

    from activation_store.extract.datasets.code import from_path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = list(humaneval().items) + [item for name in STDLIB if (stdlib / name).is_file()
                                         for item in from_path(stdlib / name).items]
    rows = []
    for item, texts in sources:
        code = texts["code"]
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        lines = code.splitlines(keepends=True)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
                    and len(node.args) == 1 and not node.keywords):
                offset = sum(len(line) for line in lines[: node.lineno - 1]) + node.func.end_col_offset
                if code[offset] == "(" and len(code[: offset + 1]) <= 700:
                    rows.append({"id": f"{item}@{offset}", "code": code[: offset + 1]})
        if len(rows) >= n:
            break
    return rows[:n]


SATURATION = ("`share:pos,neg` is bounded by +1: where the English pair's rows at relative 0.5 and 1.0 are identical, "
              "every steered prompt's positive share is already 1.000 (checked per prompt on sentiment-zh; the lens "
              "forecast saturates alike), so the effect is 1 − the unsteered mean. Saturation, not a reading error; "
              "the sweep asks for relative 0.1 and 0.25 too for the dose response, and `diff:pos,neg` (unbounded) "
              "keeps growing with the strength.")


def experiments(n: int, full: bool = False) -> list[Experiment]:
    """The sweeps, cheapest first. ``full``: more layers and strengths (hours on a shared 2-core machine)."""
    good_bad = {"from_unembedding": " good", "minus": " bad"}
    sentiment = dict(layers=[6, 10, 14] if full else [10], positions="all",
                     relative=[0.1, 0.25, 0.5, 1.0],  # share:pos,neg saturates (every prompt at 1) from 0.5
                     metrics=[("share:pos,neg", +1), ("diff:pos,neg", +1)])
    return [
        Experiment("arith", "Arithmetic: \"{a+b}={a}+\" with the a→a+1 state difference", "qwen2.5-coder-0.5b",
                   arithmetic_rows(n), "prompt",
                   {"actadd-a-plus-one": {"from_states": "arith:variant=plus1", "minus": "arith:variant=base"}},
                   layers=[10, 13, 16] if full else [13], positions="last", coefficients=[1.0, 2.0, 3.0], generate=2,
                   metrics=[("outcome:arithmetic=shifted", +1), ("outcome:arithmetic=unchanged", -1)],
                   extra_variants=["plus1", "base"],
                   note="PAPER.md: when the model does not give the unsteered answer, the steering outcome cannot be "
                        "read; Qwen2.5-Coder 0.5B (Q4 GGUF, dequantized) mostly repeats a or a+b after \"{a+b}={a}+\". "
                        "Worked examples before the prompt do not help: `examples/arithmetic_prompt_probe.py` "
                        "(greedy next token = b over 40 of these items) measured 7/40 with 2 worked examples "
                        "(\"7=4+3\", one a line), 6/40 with 4, 5/40 with 8, so no few-shot sweep was recorded: on "
                        "this model the arithmetic intervention cannot be read, and the strengths tried (absolute 1–3, "
                        "relative 0.04–0.12 at layer 13) stay the only recording."),
        Experiment("sentiment-zh", "Multilingual sentiment: Chinese reviews (sentiment-zh)", "gemma3-270m",
                   sentiment_rows(sentiment_zh(), "zh", n), "zh",
                   {"en-good-bad": good_bad, "zh-hao-huai": {"from_unembedding": "好", "minus": "坏"}},
                   targets={"pos": ZH_POS, "neg": ZH_NEG}, note=SATURATION, **sentiment),
        Experiment("range", "Code: `range(` start/end steering (HumanEval + stdlib functions)", "qwen2.5-coder-0.5b",
                   range_rows(n), "code",
                   {"start-end": {"from_unembedding": "start", "minus": "end"},  # the " start"/" end" pair: --full
                    **({"sp-start-end": {"from_unembedding": " start", "minus": " end"}} if full else {})},
                   layers=[12, 18], positions="last", relative=[0.5, 1.0, 2.0],  # 50% and 75% of 24 layers
                   targets={"start": ["start", " start"], "end": ["end", " end"], "zero": ["0"]},
                   metrics=[("diff:start,end", +1), ("prob:zero", +1)]),
        Experiment("sentiment-es", "Multilingual sentiment: Spanish review openings (sentiment-es)", "gemma3-270m",
                   sentiment_rows(sentiment_es(), "es", n), "es",
                   {"en-good-bad": good_bad, "es-bueno-malo": {"from_unembedding": " bueno", "minus": " malo"}},
                   targets={"pos": ES_POS, "neg": ES_NEG}, note=SATURATION, **sentiment),
    ]


# --- the markdown --------------------------------------------------------------------------------------------

def render(results: list[dict], command: str, skipped: list[Experiment] = ()) -> str:
    out = ["## Interventions with a measured effect", "",
           "Produced by `examples/steering_sweeps.py` (CPU, float32; this machine is shared by several engineers, so "
           "times are loaded-machine times). Each effect is steered − unsteered on the metric, averaged over prompts, "
           "with a 95% percentile-bootstrap interval over items (`analyze.stats`); the *random control* is a vector of "
           "the same norm at the same layer in a random direction (seed 0, `actstore steering define --random-like`), "
           "recorded with the same coefficients; the *lens forecast* is the logit lens at the vector's layer (final "
           "norm applied) on the unsteered last-token states with and without coefficient × v. Relative strength = "
           "coefficient × |v| / median |h| over the prompts' tokens (BOS excluded) at that layer.", "",
           f"Rerun: `{command}` (records what the store lacks, reuses the rest, then writes this page; add "
           "`--analyze-only` to rewrite the page from the store's recordings without running a model). Each section "
           "gives the time its recordings took here.", ""]
    out += ["Summary (each line: the strongest row in the predicted direction whose CI excludes zero while the "
            "control's does not; details and every row below):", ""]
    for result in results:
        for (metric, sign), table in zip(result["exp"].metrics, result["tables"].values()):
            found = table_verdict(table, sign)
            row = found["row"]
            out.append(f"- {result['exp'].title}, `{metric}`: " + (
                f"**shown** by `{row.vector}` (layer {row.layer}, relative {row.relative_strength:.2f}): "
                f"{ci_cell(row.effect, row.effect_low, row.effect_high)} vs control "
                f"{ci_cell(row.control_effect, row.control_low, row.control_high)}, lens forecast "
                f"{ci_cell(row.forecast, row.forecast_low, row.forecast_high)}." if found["shown"] else "not shown."))
    out.append("")
    for result in results:
        exp = result["exp"]
        out += [f"### {exp.title}", "",
                f"Model `{exp.model}`, {len(exp.rows)} prompts, positions `{exp.positions}`, layers "
                f"{', '.join(map(str, exp.layers))}; "
                + f"pairs recorded: {', '.join(v for v, _ in result['pairs'])}; "
                + (f"recording took {result['seconds']:.0f} s." if result['seconds'] == result['seconds'] else
                   "recording time not measured.")]
        if result["targets"]:
            out.append("Target sets (vocabulary strings present in the model): " + "; ".join(
                f"{k}: {' '.join(repr(t) for t in v)}" for k, v in result["targets"].items()) + ".")
        if result.get("missing"):
            out.append(f"Not recorded yet (in the sweep, absent from the store): {', '.join(result['missing'])}.")
        table = next(iter(result["tables"].values()))
        recorded = {round(float(r), 2) for r in table.relative_strength}
        unrecorded = sorted({round(r, 2) for r in exp.relative or []} - recorded)
        if unrecorded:
            out.append(f"Strengths in the sweep not recorded yet: relative {', '.join(f'{r:g}' for r in unrecorded)} "
                       f"(`--only {exp.key}` re-records the pairs at every strength).")
        if exp.note:
            out.append(exp.note)
        if "baseline" in result:
            out.append(result["baseline"])
        out.append("")
        for (metric, sign), table in zip(exp.metrics, result["tables"].values()):
            found = table_verdict(table, sign)
            direction = "up" if sign > 0 else "down"
            out += [f"Metric `{metric}` (predicted: {direction}).", "", markdown_table(table), ""]
            if found["shown"]:
                row = found["row"]
                out.append(f"**Verdict: shown** — `{row.vector}` at layer {row.layer}, coefficient {row.coefficient:g} "
                           f"(relative {row.relative_strength:.2f}): {row.effect:+.4f} [{row.effect_low:+.4f}, "
                           f"{row.effect_high:+.4f}], control {row.control_effect:+.4f} [{row.control_low:+.4f}, "
                           f"{row.control_high:+.4f}].")
            else:
                out.append("**Verdict: not shown** — no (layer, strength) above moved the metric in the predicted "
                           "direction with a CI excluding zero while its random control did not.")
            out.append("")
    if skipped:
        out += ["### Not recorded in this pass", ""]
        for exp in skipped:
            out.append(f"- {exp.title}: `{exp.model}`, layers {', '.join(map(str, exp.layers))}, vectors "
                       f"{', '.join(exp.vectors)}, metrics {', '.join(m for m, _ in exp.metrics)} — the sweep is in "
                       f"the script (`--only {exp.key}`) but did not fit this pass's time on the shared CPU.")
        out.append("")
    return "\n".join(out) + "\n"


def arithmetic_baseline(result: dict) -> str:
    from activation_store.analyze.intervention import outcome_rule, outcome_shares, outcomes
    from activation_store.store.interventions import open_recorded

    name = result["strengths"][0][0]
    ds = open_recorded(result["store"], result["model"], "arith", name)
    rule = outcome_rule("arithmetic")
    shares = outcome_shares(outcomes(ds, rule), rule.categories, 1000)
    base = shares.isel(condition=0)
    cells = ", ".join(f"{c} {float(s):.3f} [{float(lo):.3f}, {float(hi):.3f}]" for c, s, lo, hi in
                      zip(base.category.values, base.share.values, base.ci_low.values, base.ci_high.values))
    return (f"Unsteered greedy answers to \"{{a+b}}={{a}}+\" (b, the correct answer = *unchanged*): {cells}. "
            f"Steering predicts *shifted* (b − 1).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./sweeps.zarr")
    parser.add_argument("--doc", default="docs/interventions.md")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--full", action="store_true", help="More layers and strengths (hours on a shared 2-core CPU).")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--analyze-only", action="store_true",
                        help="Only the tables, from the recordings already in the store (nothing is run).")
    parser.add_argument("--only", default=None, help="Comma-separated experiment keys (sentiment-zh, sentiment-es, arith, range).")
    args = parser.parse_args()
    work = Path(args.store).with_suffix(".inputs")
    work.mkdir(parents=True, exist_ok=True)
    chosen = [e for e in experiments(args.items, args.full) if not args.only or e.key in args.only.split(",")]
    command = "python examples/steering_sweeps.py" + (f" --items {args.items}" if args.items != 30 else "") + \
        (" --full" if args.full else "") + (f" --only {args.only}" if args.only else "")
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    results = []
    for exp in chosen:
        result = (analyze_only(exp, args.store, args.bootstrap) if args.analyze_only
                  else run_experiment(exp, args.store, work, args.bootstrap))
        if result is None:
            continue
        if exp.key == "arith":
            result["baseline"] = arithmetic_baseline(result)
        results.append(result)
        print(f"{exp.key}: {result['seconds']:.0f}s", flush=True)
        for metric, table in result["tables"].items():
            print(metric)
            print(markdown_table(table), flush=True)
        done = {r["exp"].key for r in results}
        Path(args.doc).write_text(render(results, command, [e for e in chosen if e.key not in done]),
                                  encoding="utf-8")  # after each experiment
        print(f"wrote {args.doc}", flush=True)
    done = {r["exp"].key for r in results}
    Path(args.doc).write_text(render(results, command, [e for e in chosen if e.key not in done]), encoding="utf-8")


if __name__ == "__main__":
    main()
