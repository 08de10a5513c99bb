"""Alias kept for existing imports: the reproduction report now lives in ``workflows.reproduction``."""
from __future__ import annotations

from .reproduction import (DEFAULT_LIMITS, DEFAULT_MODELS, EXPERIMENTS, GRID, LENSES, MIDDLE, ROLES, Claim,  # noqa: F401
                           Context, Experiment, Finding, GridRun, ReportOptions, ReproductionRun, experiment,
                           extract_grid, layer_rows, middle_verdict, parse_limits, reproduce, resolve_models)
