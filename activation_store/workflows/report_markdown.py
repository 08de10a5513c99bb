"""Alias kept for existing imports: the report's markdown now lives in ``workflows.reproduction.markdown``."""
from __future__ import annotations

from .reproduction.markdown import numbers_table, render, render_finding, write_report  # noqa: F401
