"""The reproduction report of Wu et al. (2024)'s text experiments, end to end: extract the grid of runs into
one store, run every analysis from the store with the existing workflows, and collect each experiment's
numbers, figures and verdict as ``Finding`` objects; ``markdown`` renders them. No analysis is computed here
that an ``analyze`` function already computes.

- ``claims``: the table of experiments — each paper claim, our measure, and the step that measures it;
- ``factories``: the shared step shapes (paired similarity, target margin through both lenses);
- ``steps``: the one-off steps; ``verdicts``: per-layer rows and the verdict rules;
- ``grid``: what is extracted; ``runner``: ``reproduce``; ``markdown``: ``write_report``.

Models by role: ``main`` (multilingual text and COGS; Gemma 3 270M by default), ``code`` (code and
arithmetic; Qwen2.5-Coder 0.5B) and ``control`` (the multilingual experiments on an English-centred model,
SmolLM2 135M). Lens-based experiments are read through both lenses: ``normed`` (ours: final norm on every
layer) and ``raw`` (the paper's code: no final norm on inner layers)."""
from __future__ import annotations

from .claims import EXPERIMENTS, experiment
from .grid import (DEFAULT_LIMITS, DEFAULT_MODELS, GRID, LENSES, ROLES, GridRun, extract_grid, parse_limits,
                   resolve_models)
from .markdown import numbers_table, render, render_finding, write_report
from .records import Claim, Context, Experiment, Finding, ReproductionRun
from .runner import ReportOptions, reproduce
from .verdicts import MIDDLE, combine, layer_rows, middle_verdict

__all__ = ["Claim", "Context", "DEFAULT_LIMITS", "DEFAULT_MODELS", "EXPERIMENTS", "Experiment", "Finding", "GRID",
           "GridRun", "LENSES", "MIDDLE", "ROLES", "ReportOptions", "ReproductionRun", "combine", "experiment",
           "extract_grid", "layer_rows", "middle_verdict", "numbers_table", "parse_limits", "render",
           "render_finding", "reproduce", "resolve_models", "write_report"]
