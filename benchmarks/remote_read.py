"""Reading a store over S3 vs from local disk, side by side in one run.

1. Builds a store through the library's own writer: one run of synthetic
   bfloat16 hidden states with a real model's shape (default: SmolLM2-135M,
   31 layers × 576, chunks of 2,048 tokens ≈ 2.4 MB). No model is needed.
2. Starts an S3-protocol server on 127.0.0.1 (moto_server, as the tests do;
   signatures checked) and pushes the store with ``actstore push``'s code.
3. Counts the HTTP requests that opening the store over S3 takes. The count
   comes from the server's own access log, so a client-side retry would count too.
4. Times one analysis-like computation (the per-layer mean of every
   example's last-token hidden state: ``open_run`` plus dask, all chunks read)
   from the local store and from S3, several times each: over S3 with s3fs and
   with obstore (Zarr's ``ObjectStore``, the default for reading), each with
   dask's default threads and with more threads and more concurrent requests per
   Zarr call (``async.concurrency``). Prints the medians and the ratios.

    python benchmarks/remote_read.py [--tokens 16384] [--repeats 5]

The S3 server is a Python process on the same two cores, so the ratio
overstates what a real bucket costs per byte. It does not show real network
latency either. Read it as the client-side overhead plus a slow local server.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import dask
import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3 server helper

import actstore  # noqa: E402
from activation_store.analyze.pair_similarity import variant_similarity  # noqa: E402
from activation_store.store import layout  # noqa: E402
from activation_store.store.transfer import copy_store  # noqa: E402
from activation_store.store import Store  # noqa: E402
from activation_store.store.write import NewRun, create_run  # noqa: E402
from s3_server import MotoServer  # noqa: E402

MODEL, DATASET = "synthetic/SmolLM2-shaped", "synthetic"


def build_store(path: str, tokens: int, layers: int, d_model: int, chunk_tokens: int) -> int:
    """A store with one run of random bfloat16 states, written block by block by the real writer; returns examples."""
    rng = np.random.default_rng(0)
    counts = []
    while sum(counts) < tokens:
        counts.append(int(min(rng.integers(6, 40), tokens - sum(counts))))
    counts = np.array(counts, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n = len(counts)
    target = Store.open(path, mode="a")
    writer = create_run(target, layout.run_path(MODEL, DATASET), NewRun(
        n_layers=layers, d_model=d_model, dtype="bfloat16",
        chunk_tokens=chunk_tokens,
        token_coords={"token_id": rng.integers(0, 49152, tokens, dtype=np.int32),
                      "token_example": np.repeat(np.arange(n, dtype=np.int32), counts),
                      "position": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
                      "modality": np.array(["text"] * tokens, dtype=object)},
        example_coords={"item": np.array([f"item{i // 2}" for i in range(n)], dtype=object),
                        "variant": np.array(["en", "zh"] * (n // 2) + ["en"] * (n % 2), dtype=object),
                        "text": np.array([f"example {i}" for i in range(n)], dtype=object),
                        "token_offset": offsets, "token_count": counts},
        final_norm_applied=np.array([False] * (layers - 1) + [True]),
        attrs={"config": {"synthetic": True}, "config_hash": "synthetic", "provenance": {"model": MODEL}},
    ))
    for start in range(0, tokens, chunk_tokens):
        size = min(chunk_tokens, tokens - start)
        block = rng.standard_normal((layers, size, d_model), dtype=np.float32)
        bits = (block.view(np.uint32) + 0x8000) >> 16  # round to bfloat16 bit patterns
        writer.write_block(start, bits.astype(np.uint16))
    target.consolidate()
    return n


def analysis(url: str, storage_options: dict | None) -> np.ndarray:
    """Per-layer mean of each example's last-token state, opened from scratch."""
    ds = actstore.open_run(url, MODEL, DATASET, storage_options=storage_options)
    last = (ds.token_offset + ds.token_count - 1).values
    return ds.hidden.isel(token=last).mean("token").values


@contextmanager
def s3fs_calls():
    calls: list[str] = []

    class Count(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("CALL:"):
                calls.append(record.getMessage().split(" ")[1])

    logger, handler = logging.getLogger("s3fs"), Count()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield calls
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.WARNING)


def requests_during(server: MotoServer, action) -> list[str]:
    before = len(server.requests_logged())
    action()
    time.sleep(0.3)  # the log line is written after the response
    return [line.split('"')[1].split(" ")[0] + " " + line.split('"')[1].split(" ")[1].split("?")[0].split("/", 2)[-1]
            for line in server.requests_logged()[before:]]


def timed(fn, repeats: int) -> tuple[list[float], np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--layers", type=int, default=31)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--chunk-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--similarity", action="store_true", help="also time the similarity analysis once each way")
    parser.add_argument("--threads", type=int, default=8, help="dask threads for the more-concurrency variants")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        local = f"{tmp}/acts.zarr"
        started = time.perf_counter()
        examples = build_store(local, args.tokens, args.layers, args.d_model, args.chunk_tokens)
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        chunk_mb = args.chunk_tokens * args.d_model * 2 / 1e6
        print(f"store: 1 run, {examples:,} examples, {args.tokens:,} tokens × {args.layers} layers × {args.d_model} "
              f"bfloat16, chunks {args.chunk_tokens} tokens ({chunk_mb:.1f} MB); {len(files)} objects, "
              f"{size / 1e6:,.0f} MB; built in {time.perf_counter() - started:.1f}s")

        server = MotoServer(request_log=f"{tmp}/moto.log").start()
        try:
            os.environ.update(server.env())
            server.client().create_bucket(Bucket="bench")
            url, options = "s3://bench/acts.zarr", {"endpoint_url": server.endpoint}
            pushed = copy_store(local, url, destination_options=options, progress=False)
            print(f"push: {pushed.sent} objects, {pushed.bytes_sent / 1e6:,.0f} MB in {pushed.seconds:.1f}s "
                  f"({pushed.bytes_sent / 1e6 / pushed.seconds:,.0f} MB/s incl. MD5 and verification)")
            again = copy_store(local, url, destination_options=options, progress=False)
            print(f"push again (nothing to send): {again.skipped} objects found identical in {again.seconds:.2f}s")

            for client in ("s3fs", "obstore"):
                os.environ["ACTSTORE_S3_CLIENT"] = client
                with s3fs_calls() as calls:
                    opened = requests_during(server, lambda: actstore.open_run(url, MODEL, DATASET,
                                                                                storage_options=options))
                print(f"[{client}] HTTP requests to open one run over S3 (open_run, server log): {len(opened)} — "
                      + ", ".join(opened) + f"  [s3fs calls: {len(calls)}]")
                tree = requests_during(server, lambda: actstore.open(url, storage_options=options))
                print(f"[{client}] HTTP requests to open the whole store over S3 (open): {len(tree)}")
                read = requests_during(server, lambda: analysis(url, options))
                print(f"[{client}] HTTP requests for open + the computation: {len(read)} "
                      f"({sum(r.startswith('GET') for r in read)} GET, {sum(r.startswith('HEAD') for r in read)} HEAD)")
            os.environ.pop("ACTSTORE_S3_CLIENT")

            local_times, local_result = timed(lambda: analysis(local, None), args.repeats)
            local_median = statistics.median(local_times)
            print(f"per-layer mean of last-token states ({examples:,} examples, reads all {size / 1e6:,.0f} MB), "
                  f"median of {args.repeats}, S3 clients alternated run by run:")
            print(f"  {'local':<58} {local_median:6.3f}s  ({size / 1e6 / local_median:6,.0f} MB/s)  runs: "
                  + ", ".join(f"{t:.3f}" for t in local_times))
            threads = dask.config.get("num_workers", None) or os.cpu_count()
            variants = {  # name: (client, dask threads, zarr async.concurrency)
                f"S3 s3fs (before), {threads} dask threads": ("s3fs", threads, 10),
                f"S3 s3fs, {args.threads} dask threads, async.concurrency 64": ("s3fs", args.threads, 64),
                f"S3 obstore (default now), {threads} dask threads": ("obstore", threads, 10),
                f"S3 obstore, {args.threads} dask threads, async.concurrency 64": ("obstore", args.threads, 64),
            }
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, (client, workers, concurrency) in variants.items():
                    os.environ["ACTSTORE_S3_CLIENT"] = client
                    with dask.config.set(num_workers=workers), zarr.config.set({"async.concurrency": concurrency}):
                        spent, result = timed(lambda: analysis(url, options), 1)
                    assert np.array_equal(local_result, result), f"{name}: S3 and local results differ"
                    times[name] += spent
            os.environ.pop("ACTSTORE_S3_CLIENT")
            for name, spent in times.items():
                median = statistics.median(spent)
                print(f"  {name:<58} {median:6.3f}s  ({size / 1e6 / median:6,.0f} MB/s)  {median / local_median:4.1f}x local"
                      "  runs: " + ", ".join(f"{t:.3f}" for t in spent))
            before, now = (statistics.median(times[name]) for name in list(variants)[::2])
            print(f"  obstore / s3fs read throughput: {before / now:.2f}x (results identical to local in every run)")

            if args.similarity:  # the paper's analysis as `actstore analyze similarity` runs it, minus writing results
                print("similarity (open_run + variant_similarity, en vs zh, last token, centred, 1000 resamples), once each:")
                spent = {}
                for name, where, client in (("local", local, None), ("S3 s3fs", url, "s3fs"), ("S3 obstore", url, "obstore")):
                    if client:
                        os.environ["ACTSTORE_S3_CLIENT"] = client
                    started = time.perf_counter()
                    ds = actstore.open_run(where, MODEL, DATASET, storage_options=None if client is None else options)
                    result = variant_similarity(ds, ["en", "zh"], pool="last", center=True, n_boot=1000)
                    spent[name] = time.perf_counter() - started
                    reference = result if client is None else reference
                    np.testing.assert_allclose(result.score.values, reference.score.values)
                    print(f"  {name:<12} {spent[name]:6.2f}s  {spent[name] / spent['local']:4.1f}x local")
                os.environ.pop("ACTSTORE_S3_CLIENT")
                print(f"  obstore / s3fs: {spent['S3 s3fs'] / spent['S3 obstore']:.2f}x faster")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
