"""A campaign's plan, made on the client before any store is touched: every name and option checked, every
run tokenized, and where its tasks run settled."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import ActstoreError
from ..store import commits, layout
from .datasets.media import media_variants
from .estimate import auto_batch_size, model_shape, run_chunk_tokens
from .keep import Keep
from .media import media_layout
from .model_names import locate
from .models import ModelPlan, plan_model
from .progress import quiet_loading
from .spec import RunSpec
from .tasks import ModelRef, Prepared, load
from .tokens import TokenLayout, tokenize


def resumed_chunk(spec: RunSpec, existing: dict[str, Any] | None) -> int | None:
    """The chunk length to plan with: the user's, else the one a run being resumed was made with (so a run begun
    under an older chunking rule resumes), else None (``run_chunk_tokens`` chooses)."""
    if spec.chunk_tokens or existing is None or spec.overwrite:
        return spec.chunk_tokens
    return existing.get("config", {}).get("chunk_tokens")


@dataclass
class RunPlan:
    """One run of the campaign, as planned on the client."""

    spec: RunSpec
    model: ModelPlan
    data: Any
    path: str
    tokens: TokenLayout
    chunk_tokens: int
    config: dict[str, Any]
    committed: commits.Ranges = field(default_factory=list)
    create: bool = False  # a new (or replaced) run group, made after its model is prepared
    status: str = "written"
    device: str = "cpu"  # where its tasks run: cpu, mps, cuda:N (in this process) or cuda (each worker's own GPU)
    compute_dtype: str = "float32"
    keep: Keep | None = None
    offsets: np.ndarray | None = None  # each example's first unit along ``hidden``'s second axis (tokens or examples)
    counts: np.ndarray | None = None  # … and its number of units
    n_units: int = 0
    batch_size: int | None = None  # None until ``--batch-size auto`` has sized a new run from the loaded model
    batch_choice: str | None = None  # how ``auto`` chose it, for the provenance

    @property
    def ref(self) -> ModelRef:
        memory = tuple(self.spec.max_memory.items()) if self.spec.max_memory else None
        return ModelRef(self.spec.model, self.spec.trust_remote_code, self.model.checksum, not self.spec.progress,
                        self.device, self.compute_dtype, self.spec.device_map, memory)

    @property
    def name(self) -> str:
        return f"{self.model.name}/{self.data.name}"

    @property
    def n_chunks(self) -> int:
        return commits.n_chunks(self.n_units, self.chunk_tokens)

    def settle(self, existing: dict[str, Any] | None) -> None:
        """Chunk length, batch size and configuration, once the stored run (if any) is known: a resume keeps its
        chunking and the batch size ``auto`` chose when it began; a new ``auto`` run is configured once sized."""
        self.chunk_tokens = run_chunk_tokens(self.model.d_model, self.keep.stored_dtype, self.n_units,
                                             resumed_chunk(self.spec, existing))
        resuming = existing is not None and not self.spec.overwrite
        if self.spec.batch_size != "auto":
            self.configure(self.spec.batch_size)
        elif resuming:
            self.configure(existing["config"]["batch_size"], "auto: the batch size recorded when the run began")

    def configure(self, batch_size: int, choice: str | None = None) -> None:
        self.batch_size, self.batch_choice = batch_size, choice
        self.config = run_config(self.spec, self.data, self.model, batch_size, self.chunk_tokens)

    def size_batches(self, prepared: Prepared) -> None:
        """``--batch-size auto`` of a new run: the largest batch that fits the memory the loaded weights left free."""
        if self.batch_size is None:
            batch = auto_batch_size(model_shape(self.model.config, self.spec.trust_remote_code),
                                    [len(row) for row in self.tokens.ids], self.compute_dtype, prepared.free)
            self.configure(batch, f"auto: {prepared.free:,} bytes free on {prepared.device} after loading the weights")

    @property
    def done(self) -> bool:
        return commits.missing(self.committed, self.n_chunks) == []


def run_config(spec: RunSpec, data: Any, model: Any, batch_size: int, chunk_tokens: int) -> dict[str, Any]:
    """A run's whole configuration (what its hash is of): the spec's, the stored dtype and the chunk length.

    ``model`` needs only ``name``, ``checksum`` and (for a layer or position choice) ``n_layers``, so the early
    answers (extract/early.py) make the same dict without loading the model."""
    return {**spec.config(data, model, batch_size), "dtype": spec.dtype, "chunk_tokens": chunk_tokens}


def checked_sources(specs: Sequence[RunSpec], clustered: bool = False) -> list[Any]:
    """Every spec's dataset, after the checks that need no torch and no model file read: one store, datasets
    that load, no media on a cluster, a writable store, every model name known (``locate``: no conversion)."""
    if not specs:
        raise ActstoreError("nothing to extract: no model × dataset given")
    if any(s.location != specs[0].location for s in specs):
        raise ActstoreError("a campaign writes one store; got several")
    data = [spec.load_data() for spec in specs]
    if clustered and (any(s.templates for s in specs) or any(media_variants(d) for d in data)):
        raise ActstoreError("image and audio variants (and --template) run in this process, where the media are "
                            "encoded: drop --workers/--scheduler, or choose text variants with --variants")
    specs[0].location.check_writable()
    for model in dict.fromkeys(spec.model for spec in specs):  # a misspelt name: one line, before transformers
        locate(model)
    return data


def _plan_models(specs: Sequence[RunSpec]) -> dict[tuple[str, bool], ModelPlan]:
    models: dict[tuple[str, bool], ModelPlan] = {}
    for spec in specs:
        key = (spec.model, spec.trust_remote_code)
        if key not in models:
            with quiet_loading(not spec.progress):
                models[key] = plan_model(spec.model, trust_remote_code=spec.trust_remote_code)
    return models


def plan(specs: Sequence[RunSpec], clustered: bool = False, data: Sequence[Any] | None = None) -> list[RunPlan]:
    """Check every spec and tokenize every run, touching no store: any bad name anywhere refuses the lot.

    ``data``: the specs' datasets, from ``checked_sources`` (which is run here when not given). Image and audio
    variants are laid out by the model's processor here; a model that makes its media ids itself (Chameleon's
    VQ codes) is loaded for it, into this process's model cache. On a cluster they are refused."""
    if data is None:
        data = checked_sources(specs, clustered)
    models = _plan_models(specs)
    plans, seen = [], set()
    for spec, dataset in zip(specs, data):
        model = models[(spec.model, spec.trust_remote_code)]
        if model.name in layout.RESERVED_ROOT_GROUPS:
            raise ActstoreError(f"a model may not be named {model.name!r}: that group holds saved {model.name}; "
                                f"rename the model directory")
        path = layout.run_path(model.name, dataset.name)
        if path in seen:
            raise ActstoreError(f"{model.name}/{dataset.name} is named twice in the campaign")
        seen.add(path)
        keep = spec.keep(model)
        device, compute_dtype = spec.placement()
        p = RunPlan(spec, model, dataset, path, None, 0, {}, device=device, compute_dtype=compute_dtype, keep=keep)
        p.tokens = media_layout(model, dataset, dataset.examples(), bos=spec.bos, suffixes=spec.suffixes,
                                templates=spec.templates, weights=functools.partial(_weights, p.ref, model)) \
            or tokenize(model.tokenizer, dataset.examples(), bos=spec.bos, suffixes=spec.suffixes)
        keep.check_lengths([len(row) for row in p.tokens.ids],
                           [f"item {e.item!r} ({e.variant})" for e in p.tokens.examples])
        p.offsets, p.counts, p.n_units = keep.units(p.tokens.offsets, p.tokens.counts)
        plans.append(p)
    return plans


def _weights(ref: ModelRef, model: ModelPlan) -> Any:
    """The network the run's tasks use, loaded here (a model whose own encoder makes its media ids)."""
    return load(ref, model)[1]


def _place(plans: list[RunPlan], clustered: bool, workers: int | None) -> dict[str, float] | None:
    """Settle where tasks run; the resources each task holds on a cluster (``{"GPU": 1}`` for CUDA), else None.

    In this process a run keeps its resolved device (``cuda:0``…) or its device map. On a cluster ``cuda``
    becomes each worker's own GPU, so a pinned ``cuda:N`` (every worker on one GPU) and a device map (one model
    over several devices in one process) are refused, and a local cluster gets no more GPU workers than there
    are GPUs."""
    if clustered and any(p.spec.device_map for p in plans):
        raise ActstoreError("--device-map places one model over several devices in one process; campaigns on a "
                            "cluster place one model per device: drop --device-map, or drop --workers/--scheduler")
    kinds = {p.device.split(":")[0] for p in plans}
    if len(kinds) > 1:
        raise ActstoreError(f"a campaign runs on one kind of device; got {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    if not clustered or kind != "cuda":
        return None
    if any(":" in p.spec.device for p in plans):
        raise ActstoreError(f"--device {plans[0].spec.device} would put every worker on one GPU; give --device cuda: "
                            f"each worker takes its own GPU")
    if workers is not None:
        import torch

        if workers > torch.cuda.device_count():
            raise ActstoreError(f"--workers {workers} --device cuda: one model per GPU, and this machine has "
                                f"{torch.cuda.device_count()} GPU(s); give --workers {torch.cuda.device_count()} or fewer")
    for p in plans:
        p.device = "cuda"
    return {"GPU": 1}
