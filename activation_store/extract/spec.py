"""One run's specification: every option of a run that writes into a store, validated once.

Plain extraction, intervention recording (and the cluster extraction to come) build a
``RunSpec`` — from keyword arguments or from the CLI — and take from it the dataset,
the configuration dict and its hash, the conflict check against a stored run and the
provenance, so every group they write describes itself the same way. Options that
only one kind of run has (a steering vector's coefficients…) live in that run's own
spec beside it."""
from __future__ import annotations

import datetime
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checksums import config_hash
from ..errors import ActstoreError, ConfigConflictError
from ..store import layout
from ..store.precision import DTYPES
from .datasets import DEFAULT_DATASET, Dataset, load_dataset
from .models import DEFAULT_MODEL, ModelPlan


@dataclass(frozen=True)
class RunSpec:
    """What to run (model × dataset, tokenized how) and where and how to store it."""

    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    store: str = "./acts.zarr"
    variants: tuple[str, ...] | None = None
    limit: int | None = None
    bos: bool = True
    suffixes: Mapping[str, str] = field(default_factory=dict)
    dtype: str = "bfloat16"
    batch_size: int = 16
    chunk_tokens: int | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    storage_options: Mapping[str, Any] | None = None
    progress: bool = True
    columns: Mapping[str, str] | None = None  # variant → column of an ``hf:`` dataset
    id_column: str | None = None
    templates: Mapping[str, str] | None = None  # media variant → prompt holding <image> or <audio>

    def __post_init__(self) -> None:
        # lists and None from callers become one canonical form, so equal specs compare equal
        set_ = object.__setattr__
        set_(self, "variants", tuple(self.variants) if self.variants else None)
        set_(self, "suffixes", dict(self.suffixes or {}))
        set_(self, "storage_options", dict(self.storage_options) if self.storage_options else None)
        set_(self, "columns", dict(self.columns) if self.columns else None)
        set_(self, "templates", dict(self.templates) if self.templates else None)
        if self.dtype not in DTYPES:
            raise ActstoreError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.batch_size < 1:
            raise ActstoreError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ActstoreError(f"--chunk-tokens must be at least 1, got {self.chunk_tokens}")

    def load_data(self) -> Dataset:
        """The dataset restricted to the spec's variants and limit, checked against the suffixes and store layout."""
        data = load_dataset(self.dataset, list(self.variants) if self.variants else None, self.limit,
                            columns=dict(self.columns) if self.columns else None, id_column=self.id_column)
        unknown = sorted(set(self.suffixes) - set(data.variants))
        if unknown:
            raise ActstoreError(f"suffix given for unknown variant {unknown[0]!r}; variants: {', '.join(data.variants)}")
        if data.name in layout.RESERVED_GROUPS:
            raise ActstoreError(f"a dataset may not be named {data.name!r}: that group holds {data.name} data; rename the file")
        return data

    def config(self, data: Dataset, model: ModelPlan) -> dict[str, Any]:
        """The options that decide what a run's arrays hold (its identity); kinds of run add their own keys."""
        return {
            "model": model.name, "model_checksum": model.checksum, "dataset": data.name,
            "dataset_version": data.version, "dataset_checksum": data.checksum, "variants": list(data.variants),
            "limit": self.limit, "bos": self.bos, "suffixes": dict(self.suffixes),
            **({"templates": dict(self.templates)} if self.templates else {}),  # absent: text runs keep their hash
            "batch_size": self.batch_size, "format": layout.FORMAT_VERSION,
        }

    def provenance(self, data: Dataset, model: ModelPlan, architecture: str, *, created: bool = True) -> dict[str, Any]:
        """Where a run came from: model and dataset sources, tokenization, library versions (and when)."""
        record = {
            "model": model.name, "model_source": model.source, "model_checksum": model.checksum,
            "architecture": architecture, "dataset": data.name, "dataset_version": data.version,
            "dataset_checksum": data.checksum, "dataset_source": data.source, "variants": list(data.variants),
            "tokenization": {"bos": self.bos, "suffixes": dict(self.suffixes), "template": None,
                             "tokenizer": type(model.tokenizer).__name__},
            "versions": versions(),
        }
        if created:
            record["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return record


def stored_config_matches(existing: Mapping[str, Any], config: dict[str, Any], what: str, store: str) -> None:
    """Refuse to add to a stored ``what`` made with another configuration, naming the keys that differ."""
    if existing.get("config_hash") == config_hash(config):
        return
    old = existing.get("config", {})
    differs = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    raise ConfigConflictError(f"{store} already holds {what} made with a different configuration "
                              f"({', '.join(differs) or 'unknown'} differ); pass --overwrite to replace it")


def versions() -> dict[str, str]:
    """The versions of the libraries that computed a run's numbers."""
    import numpy
    import torch
    import transformers
    import zarr

    from .. import __version__

    return {"actstore": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "zarr": zarr.__version__, "numpy": numpy.__version__, "python": platform.python_version()}
