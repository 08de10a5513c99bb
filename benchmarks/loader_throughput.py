"""The PyTorch loader (shuffle on) against a plain sequential zarr read of the same chunks, in one run.

Both sides read every chunk of the chosen layers once and end with states of
one dtype: with ``--dtype float32`` (the default) the plain read decodes each
chunk's bfloat16 bits to float32 (the least any consumer must do); with
``--dtype bfloat16`` it keeps the stored bits, as the loader then does. The loader
also mixes chunks in its shuffle buffer and hands out (batch_size, d_model)
tensors with their coordinates. Repeats
alternate the two, after one warm-up pass of each (so both read from the same
page cache); medians are printed with their ratio. Goal: loader ≥ 0.8× plain.
Each side's CPU seconds (all threads of this process) are printed too: on a
machine whose cores are busy with other work, throughput follows CPU per row,
and the loader's read-ahead threads cannot overlap its shuffling with reads.

    python benchmarks/loader_throughput.py [--tokens 131072] [--layers 2] [--d-model 640] [--repeats 3] [--dtype bfloat16]
    python benchmarks/loader_throughput.py --store URL --model M --dataset D [--layer 6 --layer 12]

Without ``--store`` a bfloat16 run of the given shape is written to a temporary
store first with the store's own writer (random values; contents do not matter here)."""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import actstore
from activation_store.store import Store, layout
from activation_store.store.precision import decode_bfloat16
from activation_store.store.write import NewRun, create_run


def write_run(url: str, n_layers: int, n_tokens: int, d_model: int, chunk: int, per_example: int = 64) -> None:
    store = Store.open(url, mode="a")
    n_examples = -(-n_tokens // per_example)
    counts = np.full(n_examples, per_example)
    counts[-1] = n_tokens - per_example * (n_examples - 1)
    writer = create_run(store, layout.run_path("bench", "synthetic"), NewRun(
        n_layers=n_layers, d_model=d_model, dtype="bfloat16",
        chunk_tokens=chunk,
        token_coords={"token_id": np.zeros(n_tokens, np.int32),
                      "token_example": np.repeat(np.arange(n_examples, dtype=np.int32), counts),
                      "position": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
                      "modality": np.zeros(n_tokens, np.int8)},
        example_coords={"item": np.array([f"i{k}" for k in range(n_examples)]), "variant": np.array(["x"] * n_examples),
                        "text": np.array([""] * n_examples), "token_offset": np.cumsum(counts) - counts,
                        "token_count": counts},
        final_norm_applied=np.zeros(n_layers, bool), attrs={"config_hash": "bench"}))
    rng = np.random.default_rng(0)
    for start in range(0, n_tokens, chunk):
        size = min(chunk, n_tokens - start)
        writer.write_block(start, rng.integers(0x3C00, 0x4000, size=(n_layers, size, d_model), dtype=np.uint16))
    store.consolidate()


def plain_read(url: str, path: str, layers: list[int], decode: bool = True) -> tuple[int, float, float]:
    """Every chunk of ``layers`` in store order, decoded to float32 unless ``decode`` is off:
    (tokens × layers, seconds, CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    hidden = Store.open(url).root[path][layout.HIDDEN]
    chunk = hidden.chunks[1]
    bf16 = decode and hidden.attrs.get(layout.ENCODING_ATTR) == layout.BF16_ENCODING
    rows = 0
    for layer in layers:
        for start in range(0, hidden.shape[1], chunk):
            block = hidden[layer, start:start + chunk]
            block = decode_bfloat16(block) if bf16 else block
            rows += block.shape[0]
    return rows, time.perf_counter() - started, time.process_time() - cpu


def loader_read(loader) -> tuple[int, float, float]:
    """One epoch of the loader (each iteration is the next epoch: a new order): (rows, seconds, CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    rows = sum(len(batch.layer) for batch in loader)
    return rows, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--layer", type=int, action="append", help="layers to read (default: all)")
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=640)
    parser.add_argument("--chunk-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--buffer-mb", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the batches' dtype")
    args = parser.parse_args()
    decode = args.dtype == "float32"
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"{tmp}/acts.zarr"
        if not args.store:
            write_run(url, args.layers, args.tokens, args.d_model, args.chunk_tokens)
        ds = actstore.open_run(url, args.model, args.dataset)
        layers = args.layer or list(range(ds.sizes["layer"]))
        path = layout.run_path(args.model, args.dataset)
        bytes_per_row = ds.sizes["d_model"] * (2 if ds.hidden.attrs.get("dtype") == "bfloat16" else 4)
        started = time.perf_counter()
        loader = actstore.torch.loader(url, args.model, args.dataset, layers=layers, batch_size=args.batch_size,
                                       shuffle=True, seed=0, buffer_bytes=args.buffer_mb << 20, num_workers=args.workers,
                                       dtype=args.dtype)
        setup = time.perf_counter() - started                            # opening the run and planning the reads
        plain_read(url, path, layers, decode), loader_read(loader)       # warm-up
        plain, loaded, plain_cpu, loaded_cpu = [], [], [], []
        for _ in range(args.repeats):
            rows_plain, seconds, cpu = plain_read(url, path, layers, decode)
            plain.append(seconds)
            plain_cpu.append(cpu)
            rows_loaded, seconds, cpu = loader_read(loader)
            loaded.append(seconds)
            loaded_cpu.append(cpu)
        assert rows_plain == rows_loaded, (rows_plain, rows_loaded)
        stored_mb = rows_plain * bytes_per_row / 1e6
        print(f"{rows_plain:,} rows (tokens × layers) × d_model {ds.sizes['d_model']}, {stored_mb:.0f} MB stored, "
              f"chunks of {ds.hidden.data.chunksize[1]} tokens; medians of {args.repeats}")
        for name, times, cpu in (("plain zarr read" + (" + decode" if decode else ", bits as stored"), plain, plain_cpu),
                                 (f"loader, shuffle on ({args.buffer_mb} MB buffer, batch {args.batch_size}, "
                                  f"{args.workers} workers, {args.dtype})", loaded, loaded_cpu)):
            median = statistics.median(times)
            print(f"  {name:<62} {median:6.2f} s  {rows_plain / median:>12,.0f} tokens/s  {stored_mb / median:7.0f} MB/s"
                  f"  CPU {statistics.median(cpu):5.2f} s")
        print(f"  loader / plain throughput: {statistics.median(plain) / statistics.median(loaded):.2f}× "
              f"(one epoch each; building the loader, once: {setup:.2f} s)")
        if args.workers == 0:  # the ring and CPU time are this process's; workers are other processes
            print(f"  rows moved within the shuffle ring (still buffered where a read is reserved): "
                  f"{loader.dataset.rows_moved / rows_loaded:.1%} of the epoch's "
                  f"(buffer {loader.dataset.capacity:,} rows, ring {loader.dataset.ring_rows:,})")
            print(f"  loader / plain rows per CPU second: {statistics.median(plain_cpu) / statistics.median(loaded_cpu):.2f}× "
                  f"(what the throughput ratio tends to when the cores are busy with other work; "
                  f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
