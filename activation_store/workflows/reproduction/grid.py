"""The grid of runs the report reads: which model (by role) is extracted on which dataset, and how many items.
Extracted once into one store, so every experiment reads the same activations."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import ActstoreError

DEFAULT_MODELS = ("gemma3-270m", "qwen2.5-coder-0.5b", "smollm2-135m")
ROLES = ("main", "code", "control")
# items per dataset: sized so the whole report runs in about 20 minutes on 2 shared CPU cores
DEFAULT_LIMITS = {"django-ui": 30, "semantics": 50, "arithmetic": 200, "code": 80}
LENSES = ("normed", "raw")


@dataclass(frozen=True)
class GridRun:
    """One extraction of the grid: the model's role, the dataset, its variants (None: all)."""

    role: str
    dataset: str
    variants: tuple[str, ...] | None = None


GRID = (
    GridRun("main", "django-ui", ("en", "zh", "ja", "ru", "fr", "de", "es")),
    GridRun("main", "semantics"),
    GridRun("code", "arithmetic"),
    GridRun("code", "code"),
    # the code lens also on the main model: Qwen's tokenizer merges "(" with the next name ("(numbers"), so most
    # call-argument positions have no token ending at the "(" and only a few annotations survive on Qwen
    GridRun("main", "code", ("code",)),
    GridRun("control", "django-ui", ("en", "zh")),
)


def resolve_models(models: list[str] | None) -> dict[str, str]:
    """``main[,code[,control]]``: the code role falls back to the main model; without a control, none is run."""
    models = list(models or DEFAULT_MODELS)
    if not 1 <= len(models) <= 3 or not all(m.strip() for m in models):
        raise ActstoreError(f"--models takes 1 to 3 models (main, code, control), got {len(models)}")
    out = {"main": models[0], "code": models[1] if len(models) > 1 else models[0]}
    if len(models) > 2:
        out["control"] = models[2]
    return out


def parse_limits(spec: str | int | None) -> dict[str, int | None]:
    """``N`` (every dataset), ``NAME=N,NAME=N`` (those datasets; the rest default) or None (the defaults)."""
    limits: dict[str, int | None] = dict(DEFAULT_LIMITS)
    if spec is None or spec == "":
        return limits
    parts = [spec] if isinstance(spec, int) else [p.strip() for p in str(spec).split(",") if p.strip()]
    for part in parts:
        name, _, value = str(part).rpartition("=")
        try:
            number = int(value)
        except ValueError:
            raise ActstoreError(f"--limit takes N or DATASET=N[,DATASET=N], got {spec!r}") from None
        if number < 2:
            raise ActstoreError(f"--limit must be at least 2 items (similarity pairs items), got {number}")
        if name and name not in limits:
            raise ActstoreError(f"--limit names an unknown dataset {name!r}; the grid's: {', '.join(limits)}")
        for key in ([name] if name else list(limits)):
            limits[key] = number
    return limits


def _wanted(models: dict[str, str]) -> dict[tuple[str, str], list[str] | None]:
    """One extraction per (model, dataset), the grid's variants merged in the grid's order (None: all), so a
    model in two roles is extracted once."""
    wanted: dict[tuple[str, str], set[str] | None] = {}
    for run in GRID:
        if run.role not in models:
            continue
        key = (models[run.role], run.dataset)
        if run.variants is None or (key in wanted and wanted[key] is None):
            wanted[key] = None
        else:
            wanted[key] = (wanted.get(key) or set()) | set(run.variants)
    chosen: dict[tuple[str, str], list[str] | None] = {}
    for (model, dataset), variants in wanted.items():
        order = [v for run in GRID if run.dataset == dataset and run.variants for v in run.variants]
        chosen[(model, dataset)] = sorted(variants, key=order.index) if variants else None
    return chosen


def extract_grid(store: str, models: dict[str, str], limits: dict[str, int | None], *, overwrite: bool = False,
                 dtype: str = "bfloat16", batch_size: int = 8, progress: bool = False,
                 log: Callable[[str], None] = print) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Extract every run of the grid (one per model and dataset; variants merged) into ``store``; an existing
    identical run is resumed (a no-op when complete). Returns the stored model names by role, and the runs."""
    from ...extract import extract

    names: dict[str, str] = {}
    runs = []
    for (model, dataset), chosen in _wanted(models).items():
        started = time.perf_counter()
        result = extract(model=model, dataset=dataset, store=store, variants=chosen, limit=limits.get(dataset),
                         dtype=dtype, batch_size=batch_size, overwrite=overwrite, progress=progress)
        seconds = time.perf_counter() - started
        names[model] = result.model
        runs.append({"model": result.model, "dataset": dataset, "variants": ",".join(chosen or ["all"]),
                     "limit": limits.get(dataset), "seconds": round(seconds, 1)})
        log(f"extracted {result.model} / {dataset} in {seconds:.0f} s")
    return {role: names[model] for role, model in models.items()}, runs
