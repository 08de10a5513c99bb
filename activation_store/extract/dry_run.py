"""``--dry-run``: what an extraction would take, from the model's config and tokenizer alone.

No weights are loaded and nothing is written: examples and tokens, parameters and
weight bytes at the compute dtype, activation bytes per batch and whether weights
plus one batch fit the chosen device, bytes of ``hidden`` per layer and in total
at the stored dtype (and of each other site), and the free space where a local store would go."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ActstoreError
from ..store.chunk_writer import IN_FLIGHT
from ..store.precision import storage_dtype
from .devices import free_memory
from .estimate import ModelShape, auto_batch_size, free_disk, model_shape, run_chunk_tokens, store_bytes, view_bytes
from .models import plan_model
from .site_names import RESIDUAL, site_first_layer, site_name, site_width
from .spec import RunSpec
from .tokens import tokenize

BYTES_PER_TOKEN_GUESS = 4  # UTF-8 bytes per token when the model's tokenizer is not at hand
WRITE_BUFFERS = IN_FLIGHT + 1


@dataclass(frozen=True)
class DryRun:
    """The cost of one extraction, before it runs."""

    model: str
    dataset: str
    store: str
    device: str
    compute_dtype: str
    dtype: str
    examples: int
    tokens: int
    tokens_estimated: bool
    longest: int
    shape: ModelShape
    batch_size: int
    activation_bytes: int
    device_free: int
    chunk_tokens: int
    layer_bytes: int
    hidden_bytes: int
    disk_free: int | None
    layers: tuple[int, ...] = ()
    positions: str = "all"
    units: int = 0  # along hidden's second axis: tokens, or examples for last/mean
    views_bytes: int = 0  # a full run's per-example views and every run's statistics
    compression: str = "none"  # of hidden: its bytes above are then an upper bound
    block_bytes: int = 0  # one block of hidden (every kept layer's chunk of the same tokens): a write buffer
    site_bytes: dict[str, int | None] = field(default_factory=dict)  # each site besides hidden; None: width unknown

    @property
    def buffer_bytes(self) -> int:
        """Host memory the writer holds: its reused block buffers (pinned on CUDA), whatever the run's length."""
        return WRITE_BUFFERS * self.block_bytes

    @property
    def total_bytes(self) -> int:
        return self.hidden_bytes + self.views_bytes + sum(n or 0 for n in self.site_bytes.values())

    @property
    def weight_bytes(self) -> int:
        return self.shape.weight_bytes(self.compute_dtype)

    @property
    def fits_device(self) -> bool:
        return self.weight_bytes + self.activation_bytes <= self.device_free

    @property
    def fits_disk(self) -> bool:
        return self.disk_free is None or self.total_bytes <= self.disk_free

    def summary(self) -> str:
        shape = self.shape
        guess = f" (estimated at {BYTES_PER_TOKEN_GUESS} bytes per token: no tokenizer)" if self.tokens_estimated else ""
        disk = "unknown (remote store)" if self.disk_free is None else _size(self.disk_free)
        return "\n".join([
            f"dry run: {self.model}/{self.dataset} -> {self.store} (nothing loaded, nothing written)",
            f"examples        {self.examples:,}; tokens {self.tokens:,}{guess}; longest {self.longest:,}",
            f"model           {shape.parameters:,} parameters; {shape.n_layers} layers (embeddings + "
            f"{shape.n_layers - 1} blocks) × d_model {shape.d_model:,}",
            f"weights         {_size(self.weight_bytes)} at {self.compute_dtype}",
            f"activations     {_size(self.activation_bytes)} per batch of {self.batch_size} × {self.longest} tokens "
            f"(upper bound; {_size(shape.activation_bytes(1, 1, self.compute_dtype))} per token)",
            f"device          {self.device}: {_size(self.device_free)} free; weights + one batch "
            + ("fit" if self.fits_device else "DO NOT fit (try --device-map auto, a smaller --batch-size or "
                                              "--compute-dtype)"),
            f"stored          {self._selection()}",
            f"on disk         {_size(self.layer_bytes)} per layer, {_size(self.hidden_bytes)} for hidden at "
            f"{'float32' if self.positions == 'mean' else self.dtype} (chunks of {self.chunk_tokens:,} "
            f"{'tokens' if self.positions == 'all' else 'examples'}); {_size(self.views_bytes)} for "
            f"{'pooled views and ' if self.positions == 'all' else ''}statistics; {_size(self.total_bytes)} in total",
            *([f"sites           {self._sites()}"] if self.site_bytes else []),
            f"write buffers   {_size(self.buffer_bytes)} of host memory{' (pinned)' if self.device.startswith('cuda') else ''}: "
            f"{WRITE_BUFFERS} blocks of {_size(self.block_bytes)}, one filling while {WRITE_BUFFERS - 1} are written, "
            f"reused to the end",
            f"compression     {self._compression()}",
            f"free at target  {disk}" + ("" if self.fits_disk else " — NOT ENOUGH"),
        ])


    def _sites(self) -> str:
        """Bytes of each site besides hidden (in the stored dtype, one array each)."""
        return "; ".join(f"{name} {_size(n) if n is not None else 'size known once the model is loaded'}"
                         for name, n in self.site_bytes.items())

    def _compression(self) -> str:
        if self.compression == "none":
            return "none (hidden stored raw, + a CRC32C per chunk)"
        return (f"{self.compression} (lossless, hidden only): the sizes above are uncompressed, an upper bound "
                f"(ratios measured in docs/scaling.md, 'Compressing hidden')")

    def _selection(self) -> str:
        n = self.shape.n_layers
        layers = "all layers" if len(self.layers) == n else f"{len(self.layers)} of {n} layers ({_ranges(self.layers)})"
        what = {"all": "every token", "last": "each example's last token",
                "mean": "each example's mean over its tokens (BOS left out)"}[self.positions]
        return f"{layers}, {what}: {self.units:,} states per layer"


def _ranges(layers: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in layers) if len(layers) <= 8 else f"{layers[0]}..{layers[-1]}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n} B"


def dry_run(spec: RunSpec) -> DryRun:
    """The cost of extracting ``spec``, computed without weights and without writing anything."""
    data = spec.load_data()
    model = plan_model(spec.model, spec.trust_remote_code, config_only=True)
    device, compute_dtype = spec.placement()
    examples = data.examples()
    if model.tokenizer is not None:
        widths = [len(row) for row in tokenize(model.tokenizer, examples, bos=spec.bos, suffixes=spec.suffixes).ids]
    else:
        text = [e.text + spec.suffixes.get(e.variant, "") for e in examples]
        widths = [int(spec.bos) + max(1, -(-len(t.encode()) // BYTES_PER_TOKEN_GUESS)) for t in text]
    shape = model_shape(model.config, spec.trust_remote_code)
    free = free_memory(device)
    batch_size = spec.batch_size
    if batch_size == "auto":
        try:
            batch_size = auto_batch_size(shape, widths, compute_dtype, max(0, free - shape.weight_bytes(compute_dtype)))
        except ActstoreError:  # not even one example fits: report it as such rather than stop
            batch_size = 1
    n_tokens = sum(widths)
    keep = spec.keep(model)
    units = n_tokens if keep.unit == "token" else len(widths)
    chunk = run_chunk_tokens(shape.d_model, keep.stored_dtype, units, spec.chunk_tokens)
    layer_bytes, hidden_bytes = store_bytes(units, len(keep.layers), shape.d_model, keep.stored_dtype, chunk)
    views = view_bytes(len(widths) if keep.unit == "token" else 0, len(keep.layers), shape.d_model, spec.dtype)
    sites = {site_name(request): _site_bytes(model.config, request, keep, units, chunk)
             for request in keep.site_specs if site_name(request) != RESIDUAL}
    return DryRun(
        model=model.name, dataset=data.name, store=spec.store, device=device, compute_dtype=compute_dtype,
        dtype=spec.dtype, examples=len(examples), tokens=n_tokens, tokens_estimated=model.tokenizer is None,
        longest=max(widths), shape=shape, batch_size=batch_size,  # as extract records it
        # a batch never holds more than every example
        activation_bytes=shape.activation_bytes(min(batch_size, len(widths)), max(widths), compute_dtype),
        device_free=free, chunk_tokens=chunk, layer_bytes=layer_bytes, hidden_bytes=hidden_bytes,
        disk_free=free_disk(spec.store), layers=keep.layers, positions=keep.positions, units=units, views_bytes=views,
        compression=spec.compression, block_bytes=len(keep.layers) * chunk * shape.d_model * storage_dtype(keep.stored_dtype).itemsize,
        site_bytes=sites,
    )


def _site_bytes(config, request: str, keep, units: int, chunk: int) -> int | None:
    """Bytes of one site's array (its layers, whole chunks, the stored dtype); None when its width is not in
    the config (a module path)."""
    per_token = site_width(config, request)
    if per_token is None:
        return None
    layers = sum(1 for layer in keep.layers if layer >= site_first_layer(request))
    padded = -(-units // chunk) * chunk
    return layers * padded * int(np.prod(per_token)) * storage_dtype(keep.stored_dtype).itemsize
