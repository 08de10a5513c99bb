"""The reproduction report as markdown: a pure rendering of ``ReproductionRun`` (no computation, no
store access), so the numbers can be re-rendered or rendered differently without re-running anything."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .claims import EXPERIMENTS
from .records import Finding, ReproductionRun
from .verdicts import MIDDLE

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _shown_layers(layers: np.ndarray, values: np.ndarray) -> list[int]:
    """Layers at 0/25/50/75/100% depth, plus the layer of the largest |value|."""
    last = max(int(layers.max()), 1)
    picked = {int(layers[np.argmin(np.abs(layers / last - q))]) for q in QUANTILES}
    if len(values) and np.isfinite(values).any():
        picked.add(int(layers[int(np.nanargmax(np.abs(values)))]))
    return sorted(picked)


def _cell(row: pd.Series) -> str:
    if np.isnan(row.value):
        return "—"
    if np.isnan(row.ci_low):
        return f"{row.value:+.3f}"
    return f"{row.value:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def numbers_table(table: pd.DataFrame) -> str:
    """One markdown table per model: a row per (lens, series), a column per shown layer (value [95% CI])."""
    blocks = []
    table = table.drop_duplicates(["model", "lens", "series", "layer"])      # one model in two roles: shown once
    for model, frame in table.groupby("model", sort=False):
        # the shown layers: those of the first series (every series of one model shares its layers)
        first = frame[frame.series == frame.series.iloc[0]]
        first = first[first.lens == first.lens.iloc[0]]
        layers = _shown_layers(first.layer.values, first.value.values)
        last = max(int(frame.layer.max()), 1)
        header = "| lens | measure | " + " | ".join(f"layer {l} ({l / last:.0%})" for l in layers) + " |"
        lines = [f"*{model}*", "", header, "|" + "---|" * (len(layers) + 2)]
        for (lens, series), rows in frame.groupby(["lens", "series"], sort=False):
            by_layer = rows.set_index("layer")
            cells = [_cell(by_layer.loc[l]) if l in by_layer.index else "—" for l in layers]
            lines.append(f"| {lens} | {series} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def render_finding(finding: Finding, docs: Path) -> str:
    """One experiment's section: claim, verdict, measure, lens, figures, numbers, notes."""
    lines = [f"## {finding.title}", "",
             f"**Verdict: {finding.verdict}.** {finding.why}", "",
             f"- Paper: {finding.paper}",
             f"- Ours: {finding.measure}.",
             f"- Model(s): {', '.join(f'`{m}`' for m in finding.models) or '—'}; dataset: "
             f"{'`' + finding.dataset + '`' if finding.dataset else '—'}; lens: {finding.lens}."]
    lines += [f"- Note: {note}" for note in finding.notes]
    lines.append("")
    for figure in finding.figures:
        lines += [f"![{finding.key}]({_relative(figure, docs)})", ""]
    if finding.table is not None and len(finding.table):
        lines += [numbers_table(finding.table), ""]
    if finding.included:
        body = finding.included.strip().splitlines()
        lines += [("##" + line) if line.startswith("#") else line for line in body] + [""]   # h1 -> h3
    return "\n".join(lines)


def render(run: ReproductionRun, docs: Path, command: str = "") -> str:
    """The whole report: how it was made, a verdict summary, then one section per experiment."""
    lines = ["# Reproducing Wu et al. (2024), \"The Semantic Hub Hypothesis\": the text experiments", "",
             "Every number below was computed from one activation store by `actstore.analyze` functions (through "
             "`activation_store.workflows`), after a single extraction per model and dataset. Layer l is the output "
             "of block l (0 = embeddings); relative depth is l / L. \"Middle layers\" are "
             f"{MIDDLE[0]:.0%}–{MIDDLE[1]:.0%} of the depth. Intervals are 95% bootstrap intervals. Lens: *normed* "
             "applies the model's final norm on every layer (tuned-lens convention); *raw* is the paper's lens (no "
             "final norm on inner layers); both are shown where a lens is used.", ""]
    if command:
        lines += ["Made by:", "", "```bash", command, "```", ""]
    roles = ", ".join(f"{role}: `{name}`" for role, name in run.models.items())
    limits = ", ".join(f"{name} {n if n is not None else 'all'}" for name, n in run.limits.items())
    seconds = run.seconds
    step = (f" The lens-based analyses read one layer in {run.lens_step} (and the last) to fit the run time."
            if run.lens_step > 1 else "")
    done = "" if len(run.findings) == len(EXPERIMENTS) else \
        f" **In progress: {len(run.findings)} of {len(EXPERIMENTS)} experiments so far.**"
    lines += [f"Models — {roles}. Items per dataset — {limits}.{step}{done}",
              f"Wall time — extraction {seconds.get('extract', 0):.0f} s, analyses {seconds.get('analyses', 0):.0f} s, "
              f"total {seconds.get('total', 0):.0f} s (2 shared CPU cores).", "",
              "| experiment | verdict | lens |", "|---|---|---|"]
    lines += [f"| [{f.title}](#{_anchor(f.title)}) | {f.verdict} | {f.lens} |" for f in run.findings]
    lines += ["", "Runs extracted:", "", "| model | dataset | variants | items | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['dataset']} | {r['variants']} | {r['limit'] or 'all'} | {r['seconds']} |"
              for r in run.runs]
    lines.append("")
    for finding in run.findings:
        lines.append(render_finding(finding, docs))
    return "\n".join(lines).rstrip() + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def write_report(run: ReproductionRun, path: Path, command: str = "") -> Path:
    """Render ``run`` to ``path`` (figures are linked relative to its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run, path.parent, command), encoding="utf-8")
    return path
