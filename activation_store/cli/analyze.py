"""``actstore analyze``: the paper's analyses from a store, without the model."""
from __future__ import annotations

import click


@click.group()
def analyze() -> None:
    """Analyses computed from a store with Dask; the model is never loaded."""
