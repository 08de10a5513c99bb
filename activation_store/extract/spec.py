"""One run's specification: every option of a run that writes into a store, validated once.

Plain extraction, intervention recording (and the cluster extraction to come) build a
``RunSpec`` — from keyword arguments or from the CLI — and take from it the dataset,
the configuration dict and its hash, the conflict check against a stored run and the
provenance, so every group they write describes itself the same way. Options that
only one kind of run has (a steering vector's coefficients…) live in that run's own
spec beside it.

The options come in five frozen groups, each validated once when built (as tuned-lens's
``scripts/ingredients.py`` groups its options): ``Source`` (model, dataset, which texts),
``Tokenization``, ``Stored`` (what is kept, and how on disk), ``Placement`` (where the model
runs) and the store's ``Location``. ``extract()``, the CLI and the campaign build a
``RunSpec`` from the flat names (``OPTIONS``) instead of listing them again."""
from __future__ import annotations

import datetime
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any

from ..checksums import config_hash
from ..errors import ActstoreError, ConfigConflictError
from ..store import layout
from ..store.address import Location
from ..store.precision import DTYPES
from ..store.write import COMPRESSIONS, DEFAULT_COMPRESSION
from .datasets import DEFAULT_DATASET, Dataset, load_dataset
from .devices import check_compute_dtype, default_compute_dtype, device_kind, resolve_device
from .keep import Keep, LayerChoice, check_positions, parse_layers, resolve_layers
from .models import DEFAULT_MODEL, ModelPlan
from .site_names import implied_layers, site_requests


def _dict(value: Mapping[Any, Any] | None) -> dict[Any, Any] | None:
    return dict(value) if value else None


@dataclass(frozen=True)
class Source:
    """What is read: the model and the dataset's texts (which variants, how many items, which columns)."""

    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    variants: tuple[str, ...] | None = None
    limit: int | None = None
    columns: Mapping[str, str] | None = None  # variant → column of an ``hf:`` dataset
    id_column: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", tuple(self.variants) if self.variants else None)
        object.__setattr__(self, "columns", _dict(self.columns))


@dataclass(frozen=True)
class Tokenization:
    """How each example becomes tokens: BOS, a suffix per variant, a prompt per media variant."""

    bos: bool = True
    suffixes: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] | None = None  # media variant → prompt holding <image> or <audio>

    def __post_init__(self) -> None:
        object.__setattr__(self, "suffixes", dict(self.suffixes or {}))
        object.__setattr__(self, "templates", _dict(self.templates))


@dataclass(frozen=True)
class Stored:
    """What is kept of the states and how it is laid out on disk."""

    dtype: str = "bfloat16"
    layers: LayerChoice = None  # hidden states kept: None (all), indices, or "START:STOP[:STEP]" (extract/keep.py)
    positions: str = "all"  # all tokens, or one state per example: "last" or "mean" (BOS left out)
    chunk_tokens: int | None = None
    # lossless compression of ``hidden`` (store/write.py COMPRESSIONS). Not part of the config: it changes no
    # number, so a run resumed with another one keeps the codecs its ``hidden`` was created with (and its
    # provenance, written then, says which); --overwrite makes it afresh with this one.
    compression: str = DEFAULT_COMPRESSION
    # sites captured besides the residual stream (always kept, as ``hidden``): names, module paths or
    # TransformerLens hook names (extract/sites.py); a TL name with a block index also names its layer
    sites: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", parse_layers(self.layers))
        object.__setattr__(self, "sites", site_requests(self.sites))
        check_positions(self.positions)
        if self.dtype not in DTYPES:
            raise ActstoreError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise ActstoreError(f"unknown compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ActstoreError(f"--chunk-tokens must be at least 1, got {self.chunk_tokens}")


@dataclass(frozen=True)
class Placement:
    """Where and how the model runs: device, compute dtype, device map and batch size."""

    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto (CUDA, then MPS, then the CPU)
    compute_dtype: str | None = None  # what the model runs in; None: float32 on the CPU, bfloat16 on GPUs that have it
    device_map: str | None = None  # "auto": accelerate places a model larger than one device
    max_memory: Mapping[Any, Any] | None = None  # with device_map: accelerate's per-device limits
    batch_size: int | str = 16  # or "auto": the largest power of two that fits the device, recorded in the config

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_memory", _dict(self.max_memory))
        if self.batch_size != "auto" and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                          or self.batch_size < 1):
            raise ActstoreError(f"--batch-size must be at least 1 or 'auto', got {self.batch_size!r}")
        check_compute_dtype(self.compute_dtype)
        resolve_device(self.device)  # unknown, or cuda without CUDA: refused here, before anything is read or written
        if self.device_map not in (None, "auto"):
            raise ActstoreError(f"unknown device map {self.device_map!r}; the only placement offered is 'auto'")
        if self.max_memory and self.device_map is None:
            raise ActstoreError("max_memory only applies with --device-map auto")


# The option groups of a run, by the ``RunSpec`` field that holds each; and every flat keyword (``extract()``'s,
# the CLI's, ``RunSpec``'s own attributes) → (group field, the group's attribute). The location's ``url`` is
# called ``store`` outside it.
GROUPS: dict[str, type] = {"source": Source, "tokenization": Tokenization, "stored": Stored,
                           "compute": Placement, "location": Location}
OPTIONS: dict[str, tuple[str, str]] = {
    ("store" if f.name == "url" else f.name): (group, f.name) for group, cls in GROUPS.items() for f in fields(cls)}
_POSITIONAL = ("model", "dataset", "store")


@dataclass(frozen=True, init=False)
class RunSpec:
    """What to run (model × dataset, tokenized how) and where and how to store it: five option groups, each
    validated when built, plus ``overwrite`` and ``progress``.

    ``RunSpec(model, dataset, store, limit=…, device=…)`` takes every option by its flat name (as ``extract()``
    and ``actstore extract`` name them) or whole groups (``compute=Placement(…)``), flat names overriding the
    group they belong to; ``spec.limit``, ``spec.store``… read them back, and ``dataclasses.replace`` works with
    either."""

    source: Source
    tokenization: Tokenization
    stored: Stored
    compute: Placement
    location: Location
    overwrite: bool = False
    progress: bool = True

    def __init__(self, *args: Any, overwrite: bool = False, progress: bool = True, **options: Any) -> None:
        if len(args) > len(_POSITIONAL):
            raise TypeError(f"RunSpec() takes at most {len(_POSITIONAL)} positional arguments ({', '.join(_POSITIONAL)})")
        for name, value in zip(_POSITIONAL, args):
            if name in options:
                raise TypeError(f"RunSpec() got multiple values for argument {name!r}")
            options[name] = value
        given = {name: options.pop(name, None) for name in GROUPS}
        flat: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        for key, value in options.items():
            if key not in OPTIONS:
                raise TypeError(f"RunSpec() got an unexpected keyword argument {key!r}")
            group, attr = OPTIONS[key]
            flat[group][attr] = value
        for name, cls in GROUPS.items():
            record = given[name]
            record = replace(record, **flat[name]) if record is not None else cls(**flat[name])
            object.__setattr__(self, name, record)
        object.__setattr__(self, "overwrite", overwrite)
        object.__setattr__(self, "progress", progress)

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
        # a TransformerLens name with a block index (blocks.5.hook_mlp_out) names its layer
        layers = self.layers if self.layers is not None else implied_layers(self.sites)
        return Keep(resolve_layers(layers, model.n_layers, model.name), model.n_layers, self.positions,
                    self.bos, self.dtype, tuple(self.sites or ()))

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
            **(self.keep(model).config() if self.layers is not None or self.positions != "all" or self.sites else {}),
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


for _name, (_group, _attr) in OPTIONS.items():  # spec.model, spec.store, spec.batch_size…: read from their group
    setattr(RunSpec, _name, property(attrgetter(f"{_group}.{_attr}"), doc=f"``{_group}.{_attr}``"))


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

    from ..version import __version__

    return {"actstore": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "zarr": zarr.__version__, "numpy": numpy.__version__, "python": platform.python_version()}
