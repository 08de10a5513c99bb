"""What a store holds: one row per run, with sizes and provenance, read from metadata only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zarr

from ..errors import ActstoreError
from . import commits, layout
from .commits import live_attrs
from .handle import Store
from .sites import names as site_names


@dataclass
class RunInfo:
    model: str
    dataset: str
    examples: int
    layers: int
    tokens: int
    d_model: int
    dtype: str
    bytes: int
    complete: bool
    tokens_done: int
    created: str
    source: str
    attrs: dict[str, Any]
    tokens_committed: int = 0  # with a campaign's out-of-order blocks, more than the readable prefix

    @property
    def sites(self) -> list[str]:
        """What the run captured: the residual stream (``hidden``), then every other site."""
        return site_names(self.attrs)


def list_runs(store: str | Store, storage_options: dict[str, Any] | None = None) -> list[RunInfo]:
    """Every run in the store, in name order."""
    store = Store.open(store, storage_options)
    try:
        return _runs(store)
    except ValueError as exc:  # a damaged group or array zarr.json below the root
        raise ActstoreError(f"{layout.unreadable(store.url, exc)}; `actstore verify {store.url}` names the damaged object") from None


def _model_groups(root: zarr.Group) -> list[tuple[str, zarr.Group]]:
    """The groups of models at the root (not the saved-results tree), in name order."""
    return [(key, group) for key, group in sorted(root.groups()) if key not in layout.RESERVED_ROOT_GROUPS]


def _runs(store: Store) -> list[RunInfo]:
    runs = []
    for model_key, model_group in _model_groups(store.root):
        for dataset_key, group in sorted(model_group.groups()):
            if layout.HIDDEN not in group:
                continue
            hidden = group[layout.HIDDEN]
            attrs = live_attrs(store, dict(group.attrs), f"{model_key}/{dataset_key}")  # a campaign's live progress
            provenance = attrs.get("provenance", {})
            progress = attrs.get("progress", {})
            chunk = int(hidden.chunks[1])
            runs.append(RunInfo(
                model=layout.decode_name(model_key), dataset=layout.decode_name(dataset_key),
                examples=int(group["item"].shape[0]), layers=int(hidden.shape[0]), tokens=int(hidden.shape[1]),
                d_model=int(hidden.shape[2]), dtype=str(hidden.attrs.get("dtype", hidden.dtype)),
                bytes=store.nbytes(f"{model_key}/{dataset_key}"),
                complete=bool(progress.get("complete")), tokens_done=int(progress.get("tokens_done", 0)),
                created=provenance.get("created", ""), source=provenance.get("model_source", ""), attrs=attrs,
                tokens_committed=commits.tokens_in(commits.committed(progress, int(hidden.shape[1]), chunk),
                                                   int(hidden.shape[1]), chunk),
            ))
    return runs


def run_info(store: str | Store, model: str, dataset: str, storage_options: dict[str, Any] | None = None) -> RunInfo:
    store = Store.open(store, storage_options)
    for run in list_runs(store):
        if run.model == model and run.dataset == dataset:
            return run
    raise ActstoreError(f"model {model!r} / dataset {dataset!r} is not in {store.url}; `actstore ls {store.url}` lists what is")


@dataclass
class SteeringInfo:
    model: str
    name: str
    layer: int
    method: str
    source: str
    minus: str
    norm: float
    default_coefficient: float


@dataclass
class RecordedInfo:
    model: str
    dataset: str
    vector: str
    coefficients: list
    examples: int
    positions: str
    generate: int


def list_steering(store: str | Store, storage_options: dict[str, Any] | None = None) -> tuple[list[SteeringInfo], list[RecordedInfo]]:
    """Steering vectors and recorded intervention runs in the store, from metadata only."""
    from .interventions import intervention_path, list_recorded
    from .steering import list_vectors, vector_path

    store = Store.open(store, storage_options)
    root = store.root
    vectors, recorded = [], []
    for model_key, _ in _model_groups(root):
        model = layout.decode_name(model_key)
        for name in list_vectors(store, model):
            attrs = dict(root[vector_path(model, name)].attrs)
            vectors.append(SteeringInfo(model, name, int(attrs["layer"]), str(attrs.get("method", "")),
                                        str(attrs.get("source", "")), str(attrs.get("minus") or ""),
                                        float(attrs.get("norm", 0.0)), float(attrs.get("default_coefficient", 1.0))))
    for model, dataset, vector, attrs in list_recorded(store):
        config = attrs.get("config", {})
        group = root[intervention_path(model, dataset, vector)]
        recorded.append(RecordedInfo(model, dataset, vector, list(config.get("coefficients", [])),
                                     int(group["example"].shape[0]), str(config.get("positions", "")),
                                     int(config.get("generate", 0))))
    return vectors, recorded
