"""Ways to write one run's ``hidden`` chunks (raw bfloat16 bits + CRC32C), side by side in one run, same bytes.

The candidates issue 26 names, each writing the same token blocks of a (layers, tokens, d_model) uint16 array
into a fresh local array with ``hidden``'s codecs and chunking: plain file writes of the bytes (the disk's own
speed: one thread, then one per core), zarr-python's array assignment as extraction used it (default settings,
then with more async concurrency and threads), the ``zarrs`` Rust codec pipeline, TensorStore, and actstore's
own block writer (``store/chunk_writer.py``: whole chunks written in parallel, the GIL released). Rounds alternate
between writers; medians are printed, with GB/s and the ratio to the plain sequential write.

    python benchmarks/chunk_writers.py [--layers 25] [--d-model 2048] [--tokens 16384] [--chunk-tokens 2048]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs


def create(root: Path, shape, chunks) -> zarr.Array:
    return zarr.create_array(str(root), shape=shape, chunks=chunks, dtype="uint16", fill_value=0x7FC0,
                             compressors=[zarr.codecs.Crc32cCodec()], config={"write_empty_chunks": True},
                             dimension_names=("layer", "token", "d_model"), overwrite=True)


def plain(root: Path, data: np.ndarray, chunk: int, threads: int) -> None:
    root.mkdir(parents=True)
    jobs = [(layer, start) for start in range(0, data.shape[1], chunk) for layer in range(data.shape[0])]

    def one(job):
        layer, start = job
        with open(root / f"{layer}.{start}", "wb") as f:
            f.write(memoryview(data[layer, start:start + chunk]).cast("B"))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))


def zarr_assign(root: Path, data: np.ndarray, chunk: int, config: dict) -> None:
    with zarr.config.set(config):
        array = create(root, data.shape, (1, chunk, data.shape[2]))
        for start in range(0, data.shape[1], chunk):
            array[:, start:start + chunk] = data[:, start:start + chunk]


def tensorstore_write(root: Path, data: np.ndarray, chunk: int) -> None:
    import tensorstore as ts

    create(root, data.shape, (1, chunk, data.shape[2]))  # the same metadata; TensorStore writes the chunks
    array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root)}}, open=True).result()
    pending = []
    for start in range(0, data.shape[1], chunk):
        pending.append(array[:, start:start + chunk].write(data[:, start:start + chunk]))
        if len(pending) > 2:
            pending.pop(0).result()
    for p in pending:
        p.result()


def actstore_write(root: Path, data: np.ndarray, chunk: int, threads: int) -> None:
    """The extraction's writer, handed each block as a view of the data (extraction packs into its own reused
    buffers instead; that copy is the packing's, not the writer's)."""
    from activation_store.store.chunk_writer import BlockWriter

    array = create(root, data.shape, (1, chunk, data.shape[2]))
    with BlockWriter({"hidden": array}, on_written=lambda start, stop, piece: None, threads=threads) as writer:
        for start in range(0, data.shape[1], chunk):
            writer.submit(start, {"hidden": data[:, start:start + chunk]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--d-model", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--chunk-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    data = rng.integers(0, 0x7F00, size=(args.layers, args.tokens, args.d_model), dtype=np.uint16)
    chunk = args.chunk_tokens
    from activation_store.store.chunk_writer import default_threads

    threads = default_threads()
    writers = {
        "plain writes, 1 thread": lambda r: plain(r, data, chunk, 1),
        f"plain writes, {cores} threads": lambda r: plain(r, data, chunk, cores),
        "zarr, defaults (extraction before)": lambda r: zarr_assign(r, data, chunk, {}),
        f"zarr, concurrency 64, {cores} threads": lambda r: zarr_assign(
            r, data, chunk, {"async.concurrency": 64, "threading.max_workers": cores}),
        "zarrs codec pipeline": lambda r: zarr_assign(
            r, data, chunk, {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}),
        "tensorstore": lambda r: tensorstore_write(r, data, chunk),
        f"actstore BlockWriter, {threads} threads (its default)": lambda r: actstore_write(r, data, chunk, threads),
        "actstore BlockWriter, 1 thread": lambda r: actstore_write(r, data, chunk, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in writers}
    work = Path(tempfile.mkdtemp(prefix="actstore-writers-", dir=args.dir))
    try:
        for repeat in range(args.repeats):
            for i, (name, write) in enumerate(writers.items()):
                target = work / f"w{i}-{repeat}"
                os.sync()
                started = time.perf_counter()
                try:
                    write(target)
                    os.sync()  # the bytes on disk, not in the page cache
                    times[name].append(time.perf_counter() - started)
                except Exception as exc:  # a candidate that cannot write this array is reported, not fatal
                    times[name] = []
                    print(f"{name}: failed: {type(exc).__name__}: {exc}".splitlines()[0])
                shutil.rmtree(target, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gb = data.nbytes / 1e9
    base = statistics.median(times["plain writes, 1 thread"])
    print(f"{args.layers} layers x {args.tokens:,} tokens x {args.d_model} (bf16 bits), chunks of {chunk} tokens "
          f"({chunk * args.d_model * 2 / 2**20:.0f} MiB): {gb:.2f} GB per write, synced; medians of {args.repeats}")
    print(f"| writer | seconds | GB/s | vs plain 1 thread |\n|---|---|---|---|")
    for name, values in times.items():
        if values:
            t = statistics.median(values)
            print(f"| {name} | {t:.2f} | {gb / t:.2f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
