"""The one registry of analyses, by name, as zarr-python keeps codecs (``register_codec``): each analysis
module registers its ``Analysis`` record when imported, and the built-in modules are imported on the first
look-up, so ``actstore analyze`` lists whatever is registered — a new analysis is one ``register_analysis``."""
from __future__ import annotations

import importlib

from ..errors import ActstoreError
from .analysis import Analysis

# the modules whose import registers the built-in analyses
BUILTIN_MODULES = ("similarity", "logit_lens", "languages", "media_lens", "intervention", "target_margin", "roles",
                   "trajectories")
# keywords the runner takes itself, so no analysis option may use them
RESERVED = frozenset({"analysis", "store", "url", "target", "options", "storage_options"})

_analyses: dict[str, Analysis] = {}
_loaded = False


def register_analysis(analysis: Analysis) -> Analysis:
    """Add ``analysis`` under its name (replacing one of that name, as ``register_codec`` does); returns it."""
    clash = RESERVED & {p.dest for p in analysis.params}
    if clash:
        raise ActstoreError(f"analysis {analysis.name!r}: option names {sorted(clash)} are the runner's own")
    _analyses[analysis.name] = analysis
    return analysis


def unregister_analysis(name: str) -> None:
    """Remove the analysis called ``name`` (a notebook's or a test's own); unknown names are ignored."""
    _analyses.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{module}")
        _loaded = True


def get_analysis(name: str) -> Analysis:
    """The analysis called ``name``."""
    _load_builtins()
    try:
        return _analyses[name]
    except KeyError:
        raise ActstoreError(f"no analysis {name!r}; known: {', '.join(sorted(_analyses))}") from None


def analyses() -> dict[str, Analysis]:
    """Every registered analysis by name, built-ins first in their registration order."""
    _load_builtins()
    return dict(_analyses)
