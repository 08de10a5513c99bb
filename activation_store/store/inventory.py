"""What a store holds: one row per run, with sizes and provenance, read from metadata only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zarr

from ..errors import ActstoreError
from . import layout
from .location import filesystem, missing_store, raise_remote, zarr_store


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


def _root(url: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    try:
        root = zarr.open_group(zarr_store(url, storage_options, read_only=True), mode="r", zarr_format=3)
    except FileNotFoundError:
        raise missing_store(url, storage_options) from None
    except ValueError as exc:  # a damaged root zarr.json
        raise layout.unreadable(url, exc) from None
    layout.check_format(dict(root.attrs), url)
    return root


def _bytes(url: str, path: str, storage_options: dict[str, Any] | None) -> int:
    fs, root = filesystem(url, storage_options)
    try:
        return int(fs.du(f"{root}/{path}", total=True))
    except Exception as exc:  # noqa: BLE001
        raise_remote(exc, url)


def list_runs(url: str, storage_options: dict[str, Any] | None = None) -> list[RunInfo]:
    """Every run in the store, in name order."""
    root = _root(url, storage_options)
    try:
        return _runs(url, root, storage_options)
    except ValueError as exc:  # a damaged group or array zarr.json below the root
        raise ActstoreError(f"{layout.unreadable(url, exc)}; `actstore verify {url}` names the damaged object") from None


def _runs(url: str, root: zarr.Group, storage_options: dict[str, Any] | None) -> list[RunInfo]:
    runs = []
    for model_key, model_group in sorted(root.groups()):
        for dataset_key, group in sorted(model_group.groups()):
            if layout.HIDDEN not in group:
                continue
            hidden = group[layout.HIDDEN]
            attrs = dict(group.attrs)
            provenance = attrs.get("provenance", {})
            progress = attrs.get("progress", {})
            runs.append(RunInfo(
                model=layout.decode_name(model_key), dataset=layout.decode_name(dataset_key),
                examples=int(group["item"].shape[0]), layers=int(hidden.shape[0]), tokens=int(hidden.shape[1]),
                d_model=int(hidden.shape[2]), dtype=str(hidden.attrs.get("dtype", hidden.dtype)),
                bytes=_bytes(url, f"{model_key}/{dataset_key}", storage_options),
                complete=bool(progress.get("complete")), tokens_done=int(progress.get("tokens_done", 0)),
                created=provenance.get("created", ""), source=provenance.get("model_source", ""), attrs=attrs,
            ))
    return runs


def run_info(url: str, model: str, dataset: str, storage_options: dict[str, Any] | None = None) -> RunInfo:
    for run in list_runs(url, storage_options):
        if run.model == model and run.dataset == dataset:
            return run
    raise ActstoreError(f"model {model!r} / dataset {dataset!r} is not in {url}; `actstore ls {url}` lists what is")


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


def list_steering(url: str, storage_options: dict[str, Any] | None = None) -> tuple[list[SteeringInfo], list[RecordedInfo]]:
    """Steering vectors and recorded intervention runs in the store, from metadata only."""
    from .interventions import list_recorded
    from .steering import list_vectors

    root = _root(url, storage_options)
    vectors, recorded = [], []
    for model_key, _ in sorted(root.groups()):
        model = layout.decode_name(model_key)
        for name in list_vectors(root, model):
            attrs = dict(root[f"{model_key}/steering/{layout.encode_name(name)}"].attrs)
            vectors.append(SteeringInfo(model, name, int(attrs["layer"]), str(attrs.get("method", "")),
                                        str(attrs.get("source", "")), str(attrs.get("minus") or ""),
                                        float(attrs.get("norm", 0.0)), float(attrs.get("default_coefficient", 1.0))))
    for model, dataset, vector, attrs in list_recorded(root):
        config = attrs.get("config", {})
        group = root[f"{layout.encode_name(model)}/interventions/{layout.encode_name(dataset)}/{layout.encode_name(vector)}"]
        recorded.append(RecordedInfo(model, dataset, vector, list(config.get("coefficients", [])),
                                     int(group["example"].shape[0]), str(config.get("positions", "")),
                                     int(config.get("generate", 0))))
    return vectors, recorded
