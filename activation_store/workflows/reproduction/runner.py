"""Putting the report together: check the options before anything is written, extract the grid once, then
run every entry of ``claims.EXPERIMENTS`` from the store."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ...errors import ActstoreError
from .claims import EXPERIMENTS
from .grid import extract_grid, parse_limits, resolve_models
from .records import Context, ReproductionRun


@dataclass(frozen=True)
class ReportOptions:
    """How the report is made (the ``actstore report`` options): models by role, items per dataset, where the
    work files go, the bootstrap size and the lens layer step, and how extraction runs."""

    models: list[str] | None = None                # main[,code[,control]]
    limit: str | int | None = None                 # N, or DATASET=N,…
    work: Path | None = None                       # default <docs>/../results/reproduction
    overwrite: bool = False
    n_boot: int = 1000
    lens_step: int = 1
    dtype: str = "bfloat16"
    batch_size: int = 8


def reproduce(store: str, docs: Path, options: ReportOptions | None = None, *, log: Callable[[str], None] = print,
              on_finding: Callable[[ReproductionRun], None] | None = None, **settings: Any) -> ReproductionRun:
    """Extract the grid into ``store`` and run every experiment from it; figures go to ``docs/figures``, the
    workflows' CSVs and full-size PNGs to ``options.work``. ``settings`` are ``ReportOptions`` fields given as
    keywords. ``on_finding`` sees the run so far after each experiment (e.g. to write the report as it grows)."""
    options = replace(options or ReportOptions(), **settings)
    roles = resolve_models(options.models)
    limits = parse_limits(options.limit)
    if options.n_boot < 1:
        raise ActstoreError(f"--bootstrap must be at least 1, got {options.n_boot}")
    if options.lens_step < 1:
        raise ActstoreError(f"--lens-layer-step must be at least 1, got {options.lens_step}")
    started = time.perf_counter()
    names, runs = extract_grid(store, roles, limits, overwrite=options.overwrite, dtype=options.dtype,
                               batch_size=options.batch_size, log=log)
    extracted = time.perf_counter()
    ctx = Context(str(store), names, Path(options.work or docs.parent / "results" / "reproduction"),
                  docs / "figures", docs, options.n_boot, options.lens_step)
    run = ReproductionRun([], names, runs, limits, str(store), {"extract": extracted - started}, options.lens_step)
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
