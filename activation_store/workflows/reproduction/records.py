"""The report's records: a paper claim, the experiment that measures it, what it found, and the context every
experiment reads. Findings are plain data so the markdown can be rendered (or re-rendered) without a store."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from ...errors import ActstoreError
from ...store import open_lens


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

    def present(self, roles: tuple[str, ...]) -> Iterator[tuple[str, str]]:
        """(role, model) for those of ``roles`` this run has (the control model is optional)."""
        return ((role, self.models[role]) for role in roles if role in self.models)

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


@dataclass(frozen=True)
class Claim:
    """What the paper says and how we measure it: the text of a report section, before any number."""

    key: str
    title: str
    paper: str
    measure: str
    dataset: str = ""
    lens: str = "—"

    def finding(self) -> Finding:
        """An empty finding for this claim ("not run" until its step fills it)."""
        return Finding(self.key, self.title, self.paper, self.measure, dataset=self.dataset, lens=self.lens)


Step = Callable[[Context, Finding], None]


@dataclass(frozen=True)
class Experiment:
    """One entry of the report's table: a claim, the step that measures it into its finding, and notes on the
    data. An analysis that cannot run on these data leaves its reason in the finding, not a crash."""

    claim: Claim
    step: Step
    notes: tuple[str, ...] = ()                    # added once the step has run
    notes_always: bool = False                     # ... or even when it stopped

    def __call__(self, ctx: Context) -> Finding:
        finding = self.claim.finding()
        try:
            self.step(ctx, finding)
        except ActstoreError as exc:
            finding.verdict, finding.why = "not run", f"the analysis stopped: {exc}"
            if not self.notes_always:
                return finding
        finding.notes += self.notes
        return finding
