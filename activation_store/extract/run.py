"""One extraction run: model × dataset → a run group in a store.

Everything that can be wrong with the arguments is found before the store is
touched. Forward passes run on the main thread; encoding and writing each
finished block of chunks happens on a writer thread, so disk (or S3) time
overlaps compute. A killed run resumes from its last committed block and ends
byte-identical to an uninterrupted one, because batches are a fixed partition
of the examples and a resumed block is recomputed from its batch's start."""
from __future__ import annotations

import datetime
import os
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..checksums import config_hash
from ..errors import ActstoreError, ConfigConflictError
from ..store import Store, layout, location
from ..store.precision import DTYPES, encode, storage_dtype
from ..store.lock import run_lock
from ..store.write import consolidate_if_stale, create_run, reopen_run, run_attrs, write_lens
from .capture import capture, final_norm_applied
from .datasets import DEFAULT_DATASET, load_dataset
from .lens_head import lens_head
from .media import MediaLayout, media_layout
from .models import DEFAULT_MODEL, load_model, resolve
from .tokens import tokenize

CHUNK_BYTES = 16 << 20


@dataclass
class ExtractResult:
    store: str
    model: str
    dataset: str
    status: str  # "written", "resumed" or "already complete"
    examples: int
    tokens: int
    layers: int
    tokens_written: int
    seconds: float
    fill_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the forward-and-write loop alone (no model loading)."""
        return self.tokens_written / self.fill_seconds if self.fill_seconds else 0.0

    def summary(self) -> str:
        rate = f", {self.tokens_per_second:,.0f} tokens/s" if self.tokens_written else ""
        return (f"{self.status}: {self.model}/{self.dataset} in {self.store} — {self.examples} examples, "
                f"{self.tokens:,} tokens × {self.layers} layers; wrote {self.tokens_written:,} tokens "
                f"in {self.seconds:.1f}s{rate}")


def default_chunk_tokens(d_model: int, dtype: str) -> int:
    """Tokens per chunk so that one layer's chunk is about 16 MB (a power of two, 256…65536)."""
    target = CHUNK_BYTES // (d_model * storage_dtype(dtype).itemsize)
    return int(min(65536, max(256, 1 << int(np.log2(max(target, 1))))))


def _versions() -> dict[str, str]:
    import transformers
    import zarr

    return {"actstore": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "zarr": zarr.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _check_writable(store: str) -> None:
    """Refuse before any work: an empty path, an unwritable place, a directory that is something else."""
    if location.is_remote(store):
        return
    if not store.strip():
        raise ActstoreError("empty --store; name a directory such as ./acts.zarr or a URL")
    path = location.local_path(store)
    if os.path.exists(path) and not os.path.exists(os.path.join(path, "zarr.json")):
        debris = any(not name.startswith(".") or ".lock" not in name for _, _, files in os.walk(path) for name in files)
        if not os.path.isdir(path) or debris:  # only a killed run's lock may be there before the store is
            raise ActstoreError(f"{store} exists and is not an actstore store; choose a new or empty directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ActstoreError(f"cannot write the store at {store}: {parent} is not a writable directory")


def extract(
    model: str = DEFAULT_MODEL,
    dataset: str = DEFAULT_DATASET,
    store: str = "./acts.zarr",
    *,
    variants: list[str] | None = None,
    limit: int | None = None,
    bos: bool = True,
    suffixes: dict[str, str] | None = None,
    templates: dict[str, str] | None = None,
    dtype: str = "bfloat16",
    batch_size: int = 16,
    chunk_tokens: int | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Run ``model`` over ``dataset`` once and store every layer's hidden states in ``store``."""
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise ActstoreError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if batch_size < 1:
        raise ActstoreError(f"--batch-size must be at least 1, got {batch_size}")
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ActstoreError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    data = load_dataset(dataset, variants, limit)
    unknown_suffix = sorted(set(suffixes or {}) - set(data.variants))
    if unknown_suffix:
        raise ActstoreError(f"suffix given for unknown variant {unknown_suffix[0]!r}; variants: {', '.join(data.variants)}")
    if data.name in layout.RESERVED_GROUPS:
        raise ActstoreError(f"a dataset may not be named {data.name!r}: that group holds {data.name} data; rename the file")
    _check_writable(store)
    name, _, checksum = resolve(model)
    if name in layout.RESERVED_ROOT_GROUPS:
        raise ActstoreError(f"a model may not be named {name!r}: that group holds saved {name}; rename the model directory")
    path = layout.run_path(name, data.name)
    with run_lock(store, path, storage_options):  # one writer per run: a second is refused, naming the first
        return _extract_locked(model, data, store, name, path, started, limit=limit, bos=bos, suffixes=suffixes,
                               templates=templates,
                               dtype=dtype, batch_size=batch_size, chunk_tokens=chunk_tokens, overwrite=overwrite,
                               trust_remote_code=trust_remote_code, storage_options=storage_options, progress=progress)


def _extract_locked(model, data, store, name, path, started, *, limit, bos, suffixes, templates, dtype, batch_size, chunk_tokens,
                    overwrite, trust_remote_code, storage_options, progress) -> ExtractResult:
    """The part of ``extract`` that reads and writes the run, under its lock."""
    target = Store.open(store, storage_options, mode="r+") if Store.exists(store, storage_options) else None
    existing = run_attrs(target, path) if target is not None else None

    loaded = load_model(model, trust_remote_code=trust_remote_code)
    tokenizer, net = loaded.tokenizer, loaded.model
    tokens = media_layout(loaded.processor, net, data, data.examples(), bos=bos, suffixes=suffixes, templates=templates) \
        or tokenize(tokenizer, data.examples(), bos=bos, suffixes=suffixes)
    text_config = net.config.get_text_config()
    d_model = int(text_config.hidden_size)
    n_layers = int(text_config.num_hidden_layers) + 1
    # a run smaller than one default chunk gets one exactly-sized chunk: Zarr stores edge chunks whole
    chunk = chunk_tokens or min(default_chunk_tokens(d_model, dtype), max(1, tokens.n_tokens))
    config = {
        "model": name, "model_checksum": loaded.checksum, "dataset": data.name, "dataset_version": data.version,
        "dataset_checksum": data.checksum, "variants": list(data.variants), "limit": limit, "bos": bos,
        "suffixes": suffixes or {}, **({"templates": templates} if templates else {}),  # absent: text runs keep their hash
        "dtype": dtype, "batch_size": batch_size, "chunk_tokens": chunk,
        "format": layout.FORMAT_VERSION,
    }
    digest = config_hash(config)
    resuming = False
    if existing is not None and not overwrite:
        if existing.get("config_hash") != digest:
            old = existing.get("config", {})
            differs = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ConfigConflictError(
                f"{store} already holds {name}/{data.name} made with a different configuration "
                f"({', '.join(differs) or 'unknown'} differ); pass --overwrite to replace it"
            )
        if existing.get("progress", {}).get("complete"):
            consolidate_if_stale(target, path)  # a kill after the last block may have missed it
            return ExtractResult(store, name, data.name, "already complete", len(tokens.examples), tokens.n_tokens,
                                 n_layers, 0, time.perf_counter() - started)
        resuming = True

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    target = target or Store.open(store, storage_options, mode="a")
    head_arrays, head_attrs = lens_head(net, tokenizer)
    write_lens(target, layout.encode_name(name), head_arrays,
               {**head_attrs, "model": name, "model_source": loaded.source, "model_checksum": loaded.checksum,
                "architecture": type(net).__name__, "n_layers": n_layers})
    if resuming:
        writer = reopen_run(target, path)
        consolidate_if_stale(target, path)  # killed before its first consolidation: readers see it
    else:
        applied = final_norm_applied(net, tokens.ids[: min(4, len(tokens.ids))], pad_id)
        attrs = {
            "config": config, "config_hash": digest,
            "provenance": {
                "model": name, "model_source": loaded.source, "model_checksum": loaded.checksum,
                "architecture": type(net).__name__, "dtype": dtype,
                "dataset": data.name, "dataset_version": data.version, "dataset_checksum": data.checksum,
                "dataset_source": data.source, "variants": list(data.variants),
                "tokenization": {"bos": bos, "suffixes": suffixes or {}, "template": None,
                                 "tokenizer": type(tokenizer).__name__,
                                 **(tokens.provenance if isinstance(tokens, MediaLayout) else {})},
                "versions": _versions(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        writer = create_run(target, path, n_layers=n_layers, d_model=d_model, dtype=dtype, chunk_tokens=chunk,
                            token_coords=tokens.token_coords(), example_coords=tokens.example_coords(),
                            final_norm_applied=np.array(applied), attrs=attrs)
        target.consolidate()
    done = writer.tokens_done
    fill_started = time.perf_counter()
    written = _fill(net, tokens, writer, batch_size, pad_id, dtype, progress)
    fill_seconds = time.perf_counter() - fill_started
    target.consolidate()
    status = "resumed" if resuming and done else "written"
    return ExtractResult(store, name, data.name, status, len(tokens.examples), tokens.n_tokens, n_layers, written,
                         time.perf_counter() - started, fill_seconds)


def _fill(net, tokens, writer, batch_size: int, pad_id: int, dtype: str, progress: bool) -> int:
    """Forward every batch from the first uncommitted block on; write finished blocks on a thread."""
    from tqdm.auto import tqdm

    done, total, chunk = writer.tokens_done, tokens.n_tokens, writer.chunk_tokens
    if done >= total:
        return 0
    offsets = tokens.offsets
    first_example = int(np.searchsorted(offsets, done, side="right") - 1)
    first_batch = first_example // batch_size
    position = int(offsets[first_batch * batch_size])  # token index of the next captured token
    pending: list[torch.Tensor] = []
    block_start = done
    futures: list[Future] = []

    def flush(executor: ThreadPoolExecutor, final: bool) -> None:
        nonlocal pending, block_start
        buffered = sum(p.shape[1] for p in pending)
        while buffered >= chunk or (final and buffered):
            block = torch.cat(pending, dim=1)
            size = min(chunk, block.shape[1])
            head, rest = block[:, :size], block[:, size:]
            futures.append(executor.submit(lambda s, h: writer.write_block(s, encode(h, dtype)), block_start, head.clone()))
            while len(futures) > 2:  # backpressure: at most two blocks in flight
                futures.pop(0).result()
            block_start += size
            pending = [rest] if rest.shape[1] else []
            buffered -= size

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-writer") as executor, \
            tqdm(total=total, initial=done, unit="tok", unit_scale=True, disable=not progress,
                 desc="extract", dynamic_ncols=True) as bar:
        for start in range(first_batch * batch_size, len(tokens.ids), batch_size):
            hidden = capture(net, tokens.ids[start:start + batch_size], pad_id, **tokens.model_inputs(start, start + batch_size))
            skip = max(0, done - position)
            position += hidden.shape[1]
            if skip:
                hidden = hidden[:, skip:]
            if hidden.shape[1]:
                pending.append(hidden)
                bar.update(hidden.shape[1])
            flush(executor, final=False)
        flush(executor, final=True)
        for future in futures:
            future.result()
    return total - done
