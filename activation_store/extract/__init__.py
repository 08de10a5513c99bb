"""Running models over datasets and writing what they compute into a store.

torch and transformers are imported on the first call, so ``import actstore``
stays light for notebooks that only read stores."""
from __future__ import annotations

from typing import Any


def extract(*args: Any, **kwargs: Any):
    """Run a model over a dataset once into a store; see ``activation_store.extract.run.extract``."""
    from .run import extract as run_extract

    return run_extract(*args, **kwargs)


__all__ = ["extract"]
