"""One extraction run: model × dataset → a run group in a store, as a campaign of one run in this process.

There is one extraction path (extract/campaign.py, extract/tasks.py): a single
run is planned, locked, prepared and filled exactly as a campaign's runs are,
by the in-process runner. Everything that can be wrong with the arguments is
found before the store is touched. Forward passes run on the main thread;
encoding and writing each finished block of chunks happens on a writer thread,
so disk (or S3) time overlaps compute, and each block is committed as soon as
its chunks are written. A killed run resumes from its committed blocks and ends
byte-identical to an uninterrupted one, because batches are a fixed partition
of the examples and a resumed block is recomputed from its batch's start."""
from __future__ import annotations

from typing import Any

from .campaign import ExtractResult, run_campaign
from .datasets import DEFAULT_DATASET
from .models import DEFAULT_MODEL
from .spec import RunSpec

__all__ = ["ExtractResult", "extract", "extract_run"]


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
    batch_size: int | str = 16,
    chunk_tokens: int | None = None,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    device: str = "auto",
    compute_dtype: str | None = None,
    device_map: str | None = None,
    max_memory: dict[Any, Any] | None = None,
    layers: str | list[int] | None = None,
    positions: str = "all",
    compression: str = "none",
) -> ExtractResult:
    """Run ``model`` over ``dataset`` once and store every layer's hidden states in ``store``.

    ``columns`` (variant → column) and ``id_column`` pick the texts of an ``hf:`` dataset. ``device``
    (``auto``: CUDA, then MPS, then CPU) and ``compute_dtype`` (default float32 on the CPU, bfloat16 on GPUs
    that have it) say where and how the model runs; ``dtype`` is what is stored. ``batch_size="auto"``
    takes the largest batch that fits the device's free memory. ``templates`` (media variant → prompt holding
    ``<image>`` or ``<audio>``) frame image and audio variants. ``layers`` (indices, ``"0:18"`` or ``"all"``) and
    ``positions`` (``all``, ``last``, ``mean``) store only part of the states (extract/keep.py). ``compression``
    (``none``, ``zstd``, ``blosc-zstd``, ``blosc-lz4``) compresses ``hidden`` losslessly with standard Zarr
    codecs; it is not part of the run's configuration: a resumed run keeps the compression it began with."""
    return extract_run(RunSpec(model, dataset, store, variants=variants, limit=limit, bos=bos, suffixes=suffixes or {},
                               dtype=dtype, batch_size=batch_size, chunk_tokens=chunk_tokens, overwrite=overwrite,
                               trust_remote_code=trust_remote_code, storage_options=storage_options, progress=progress,
                               columns=columns, id_column=id_column, templates=templates, device=device, compute_dtype=compute_dtype,
                               device_map=device_map, max_memory=max_memory, layers=layers, positions=positions, compression=compression))


def extract_run(spec: RunSpec) -> ExtractResult:
    """Extract the run ``spec`` describes: a campaign of that one run, in this process."""
    return run_campaign([spec], progress=spec.progress).runs[0]
