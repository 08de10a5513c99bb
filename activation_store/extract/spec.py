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
from ..store.write import COMPRESSIONS, DEFAULT_COMPRESSION
from .datasets import DEFAULT_DATASET, Dataset, load_dataset
from .devices import check_compute_dtype, default_compute_dtype, device_kind, resolve_device
from .keep import Keep, LayerChoice, check_positions, parse_layers, resolve_layers
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
    batch_size: int | str = 16  # or "auto": the largest power of two that fits the device, recorded in the config
    chunk_tokens: int | None = None
    overwrite: bool = False
    trust_remote_code: bool = False
    storage_options: Mapping[str, Any] | None = None
    progress: bool = True
    columns: Mapping[str, str] | None = None  # variant → column of an ``hf:`` dataset
    id_column: str | None = None
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto (CUDA, then MPS, then the CPU)
    compute_dtype: str | None = None  # what the model runs in; None: float32 on the CPU, bfloat16 on GPUs that have it
    device_map: str | None = None  # "auto": accelerate places a model larger than one device
    max_memory: Mapping[Any, Any] | None = None  # with device_map: accelerate's per-device limits
    templates: Mapping[str, str] | None = None  # media variant → prompt holding <image> or <audio>
    layers: LayerChoice = None  # hidden states kept: None (all), indices, or "START:STOP[:STEP]" (extract/keep.py)
    positions: str = "all"  # all tokens, or one state per example: "last" or "mean" (BOS left out)
    # lossless compression of ``hidden`` (store/write.py COMPRESSIONS). Not part of the config: it changes no
    # number, so a run resumed with another one keeps the codecs its ``hidden`` was created with (and its
    # provenance, written then, says which); --overwrite makes it afresh with this one.
    compression: str = DEFAULT_COMPRESSION

    def __post_init__(self) -> None:
        # lists and None from callers become one canonical form, so equal specs compare equal
        set_ = object.__setattr__
        set_(self, "variants", tuple(self.variants) if self.variants else None)
        set_(self, "suffixes", dict(self.suffixes or {}))
        set_(self, "storage_options", dict(self.storage_options) if self.storage_options else None)
        set_(self, "columns", dict(self.columns) if self.columns else None)
        set_(self, "max_memory", dict(self.max_memory) if self.max_memory else None)
        set_(self, "templates", dict(self.templates) if self.templates else None)
        set_(self, "layers", parse_layers(self.layers))
        check_positions(self.positions)
        if self.dtype not in DTYPES:
            raise ActstoreError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                          or self.batch_size < 1):
            raise ActstoreError(f"--batch-size must be at least 1 or 'auto', got {self.batch_size!r}")
        check_compute_dtype(self.compute_dtype)
        resolve_device(self.device)  # unknown, or cuda without CUDA: refused here, before anything is read or written
        if self.device_map not in (None, "auto"):
            raise ActstoreError(f"unknown device map {self.device_map!r}; the only placement offered is 'auto'")
        if self.max_memory and self.device_map is None:
            raise ActstoreError("max_memory only applies with --device-map auto")
        if self.compression not in COMPRESSIONS:
            raise ActstoreError(f"unknown compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}")
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

    def keep(self, model: ModelPlan) -> Keep:
        """The layers and positions this run stores, checked against ``model`` (a layer it lacks is refused)."""
        return Keep(resolve_layers(self.layers, model.n_layers, model.name), model.n_layers, self.positions,
                    self.bos, self.dtype)

    def placement(self) -> tuple[str, str]:
        """``(torch device, compute dtype)`` this spec runs on here: ``auto`` and the dtype default resolved."""
        device = resolve_device(self.device)
        return device, self.compute_dtype or default_compute_dtype(device)

    def config(self, data: Dataset, model: ModelPlan, batch_size: int | None = None) -> dict[str, Any]:
        """The options that decide what a run's arrays hold (its identity); kinds of run add their own keys.

        ``batch_size`` is the one ``"auto"`` chose. The compute dtype is a key only when it is not float32,
        so runs made before it was an option keep their hash (and resume)."""
        batch = self.batch_size if batch_size is None else batch_size
        if not isinstance(batch, int):
            raise ValueError("config() of a batch_size='auto' spec needs the batch size auto chose")
        config = {
            "model": model.name, "model_checksum": model.checksum, "dataset": data.name,
            "dataset_version": data.version, "dataset_checksum": data.checksum, "variants": list(data.variants),
            "limit": self.limit, "bos": self.bos, "suffixes": dict(self.suffixes),
            **({"templates": dict(self.templates)} if self.templates else {}),  # absent: text runs keep their hash
            "batch_size": batch, "format": layout.FORMAT_VERSION,
            # absent for all layers and tokens: full runs keep their hash
            **(self.keep(model).config() if self.layers is not None or self.positions != "all" else {}),
        }
        _, compute_dtype = self.placement()
        if compute_dtype != "float32":
            config["compute_dtype"] = compute_dtype
        return config

    def provenance(self, data: Dataset, model: ModelPlan, architecture: str, *, created: bool = True,
                   compute: Mapping[str, Any] | None = None, batch_choice: str | None = None) -> dict[str, Any]:
        """Where a run came from: model and dataset sources, tokenization, where and how the model ran
        (device kind, compute dtype and ``compute``: what the loaded model reports, its attention and placement
        — ``models.loaded_compute``), library versions (and when)."""
        device, compute_dtype = self.placement()
        ran: dict[str, Any] = {"device": device_kind(device), "compute_dtype": compute_dtype,
                               "batch_size": batch_choice or "given", **(compute or {})}
        record = {
            "model": model.name, "model_source": model.source, "model_checksum": model.checksum,
            "architecture": architecture, "dataset": data.name, "dataset_version": data.version,
            "dataset_checksum": data.checksum, "dataset_source": data.source, "variants": list(data.variants),
            "tokenization": {"bos": self.bos, "suffixes": dict(self.suffixes), "template": None,
                             "tokenizer": type(model.tokenizer).__name__},
            "compute": ran,
            "compression": self.compression,  # of hidden; what store/write.py create_run applies
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
