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


def extract(model: str = DEFAULT_MODEL, dataset: str = DEFAULT_DATASET, store: str = "./acts.zarr",
            **options: Any) -> ExtractResult:
    """Run ``model`` over ``dataset`` once and store every layer's hidden states in ``store``.

    ``options`` are ``RunSpec``'s, by their flat names or as whole option groups (extract/spec.py): the
    source (``variants``, ``limit``, ``columns`` and ``id_column`` of an ``hf:`` dataset, ``trust_remote_code``),
    the tokenization (``bos``, ``suffixes``, ``templates``: media variant → prompt holding ``<image>`` or
    ``<audio>``), what is stored (``dtype``, ``layers``: indices, ``"0:18"`` or ``"all"``; ``positions``:
    ``all``, ``last``, ``mean``; ``chunk_tokens``; ``compression``: ``none``, ``zstd``, ``blosc-zstd``,
    ``blosc-lz4``, lossless and not part of the run's configuration, so a resumed run keeps the one it began
    with), the placement (``device``: ``auto`` is CUDA, then MPS, then CPU; ``compute_dtype``, default float32 on
    the CPU and bfloat16 on GPUs that have it; ``device_map``, ``max_memory``; ``batch_size``, ``"auto"``
    taking the largest batch that fits the device's free memory), the location (``storage_options``), and
    ``overwrite``, ``progress``."""
    return extract_run(RunSpec(model, dataset, store, **options))


def extract_run(spec: RunSpec) -> ExtractResult:
    """Extract the run ``spec`` describes: a campaign of that one run, in this process."""
    return run_campaign([spec], progress=spec.progress).runs[0]
