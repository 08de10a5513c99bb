"""What a run will cost before it runs: weights, activations per batch, bytes on disk, free space.

Everything comes from the model's config and tokenizer alone: the parameter count
is exact (the architecture is built on torch's ``meta`` device, which allocates
nothing), activation memory is an upper bound per batch. The same figures choose
``--batch-size auto`` and feed ``--dry-run``."""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ActstoreError
from ..store import location
from ..store.precision import storage_dtype
from ..store.views import spread_chunk
from .devices import DTYPE_BYTES

CHUNK_BYTES = 16 << 20
AUTO_BATCH_CAP = 1024  # more examples per batch than this buys no speed, only padding
AUTO_MEMORY_SHARE = 0.8  # of the free memory, the rest left to the allocator's fragmentation and the runtime


def default_chunk_tokens(d_model: int, dtype: str) -> int:
    """Tokens per chunk so that one layer's chunk is about 16 MB (a power of two, 256…65536)."""
    target = CHUNK_BYTES // (d_model * storage_dtype(dtype).itemsize)
    return int(min(65536, max(256, 1 << int(np.log2(max(target, 1))))))


def run_chunk_tokens(d_model: int, dtype: str, n_tokens: int, chunk_tokens: int | None = None) -> int:
    """The chunk length a run gets: the user's, else at most ~16 MB per layer chunk, spread evenly over the run.

    zarr stores an edge chunk whole, so a run of 12,167 tokens in chunks of 8,192 would store 16,384 (fill
    included: 1.35× the states); two chunks of 6,084 store 12,168. The run's length is known when it is
    planned, and a resume reuses the recorded length, so the chunk grid never changes under a run."""
    return chunk_tokens or spread_chunk(n_tokens, default_chunk_tokens(d_model, dtype))


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a model's memory: from its config, without its weights."""

    n_layers: int  # hidden states per token: the embeddings plus one per block
    d_model: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    parameters: int

    def weight_bytes(self, compute_dtype: str) -> int:
        return self.parameters * DTYPE_BYTES[compute_dtype]

    def activation_bytes(self, batch: int, width: int, compute_dtype: str) -> int:
        """Device bytes one forward pass with ``output_hidden_states`` needs beyond the weights (upper bound).

        Every layer's state is kept (and packed once more for the copy to the host); one block's working set
        (q/k/v, attention scores as eager attention materialises them, the gated MLP) exists at a time."""
        tokens = batch * width
        kept = 2 * self.n_layers * tokens * self.d_model
        qkv = tokens * (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        scores = batch * self.n_heads * width * width
        mlp = 3 * tokens * self.intermediate
        return (kept + qkv + scores + mlp + 4 * tokens * self.d_model) * DTYPE_BYTES[compute_dtype]


def model_shape(config: Any, trust_remote_code: bool = False) -> ModelShape:
    """The sizes of a transformers config; the parameter count from the architecture built on ``meta``."""
    import torch
    from transformers import AutoModelForCausalLM

    text = config.get_text_config()
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ActstoreError(f"cannot build {type(config).__name__} from its config: {message}") from None
    parameters = sum(p.numel() for p in skeleton.parameters())  # tied weights count once
    heads = int(getattr(text, "num_attention_heads", 1))
    d_model = int(text.hidden_size)
    return ModelShape(
        n_layers=int(text.num_hidden_layers) + 1, d_model=d_model,
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * d_model), n_heads=heads,
        n_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or d_model // heads),
        vocab=int(text.vocab_size), parameters=int(parameters),
    )


def auto_batch_size(shape: ModelShape, widths: list[int], compute_dtype: str, free_bytes: int) -> int:
    """The largest power-of-two batch whose worst case (the longest example) fits ``free_bytes``.

    A power of two keeps the choice stable when free memory moves a little between runs; a resume
    reuses the recorded choice anyway, so the partition of examples into batches never changes."""
    width = max(widths)
    fits = int(free_bytes * AUTO_MEMORY_SHARE) // max(1, shape.activation_bytes(1, width, compute_dtype))
    if fits < 1:
        raise ActstoreError(f"not even one example of {width} tokens fits the {free_bytes / 1e9:.2f} GB free on the "
                            "device; use a smaller --compute-dtype, --device-map auto or another device")
    cap = min(AUTO_BATCH_CAP, 1 << max(0, math.ceil(math.log2(len(widths)))))
    return min(cap, 1 << int(math.log2(fits)))


def free_disk(store: str) -> int | None:
    """Free bytes where a local store would be written (its nearest existing parent); None for URLs."""
    if location.is_remote(store):
        return None
    path = os.path.abspath(location.local_path(store))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return int(shutil.disk_usage(path).free)


def store_bytes(n_tokens: int, n_layers: int, d_model: int, dtype: str, chunk: int) -> tuple[int, int]:
    """``(bytes per layer, bytes in total)`` of ``hidden`` on disk: whole chunks (the edge one too), uncompressed.

    ``n_tokens`` counts what ``hidden``'s second axis holds: tokens, or examples in a ``--positions last|mean`` run."""
    per_layer = math.ceil(n_tokens / chunk) * chunk * d_model * storage_dtype(dtype).itemsize if n_tokens else 0
    return per_layer, per_layer * n_layers


def view_bytes(n_examples: int, n_layers: int, d_model: int, dtype: str) -> int:
    """Bytes of a full run's pooled views (last token at ``dtype``, mean at float32) and statistics."""
    per_layer = n_examples * d_model * (storage_dtype(dtype).itemsize + 4) + d_model * 16 + 4
    return per_layer * n_layers
