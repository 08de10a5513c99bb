"""Lossless compression of ``hidden``, measured on a real run's chunks: bytes saved and the CPU it costs.

For each candidate codec chain on ``hidden``'s stored values (a bfloat16 run's uint16 bit patterns, or
float32), every sampled chunk is encoded and decoded with the very codec objects zarr uses (zarr.codecs'
ZstdCodec and BloscCodec, through their numcodecs backends, Blosc on one thread), with the CRC32C that
every actstore chunk carries computed over the encoded bytes, as the store's chain does. Printed per chain:
the ratio raw / stored, the bytes saved, and encode and decode MB/s of raw data on one core (best of
``--repeat`` passes; ``none`` is the CRC32C alone, what a chunk costs today). Each decoded chunk is checked
bit for bit against the original.

    python benchmarks/compression.py STORE [--model M] [--dataset D] [--chunks N|all] [--repeat 3] [--distinct]

STORE holds a run made by ``actstore extract`` (the first run in it unless --model/--dataset say which).
``--chunks`` samples N chunks spread over layers and token blocks (default: one per layer). Examples that
share a prefix (the BOS token, a repeated opening) have identical states there, which a compressor with a
long window finds; ``--distinct`` drops each chunk's repeated rows first, for what text without repeats
would give (the rows dropped are counted in the header)."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import google_crc32c
import numcodecs.blosc
import numpy as np
import zarr
import zarr.codecs
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from activation_store.store import layout


@dataclass(frozen=True)
class Candidate:
    name: str
    codec: object | None  # a zarr BytesBytesCodec, or None: raw bytes

    def backend(self):
        if self.codec is None:
            return None
        if isinstance(self.codec, BloscCodec):
            return self.codec._blosc_codec  # the numcodecs.Blosc zarr builds from the same configuration
        return self.codec._zstd_codec


def candidates(typesize: int) -> list[Candidate]:
    rows = [Candidate("none (bytes + crc32c)", None),
            Candidate("zstd level 1", ZstdCodec(level=1)),
            Candidate("zstd level 3", ZstdCodec(level=3))]
    for cname in ("zstd", "lz4"):
        for shuffle in (BloscShuffle.shuffle, BloscShuffle.bitshuffle):
            for clevel in ((1, 5) if cname == "zstd" else (5,)):
                rows.append(Candidate(f"blosc {cname} clevel {clevel} {shuffle.value}",
                                      BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, typesize=typesize)))
    return rows


def sample_chunks(hidden: zarr.Array, count: int | None) -> list[tuple[int, int]]:
    """(layer, token chunk) pairs: all of them, or ``count`` spread evenly over layers and token blocks."""
    n_layers, n_blocks = hidden.shape[0], -(-hidden.shape[1] // hidden.chunks[1])
    every = [(layer, block) for layer in range(n_layers) for block in range(n_blocks)]
    if count is None or count >= len(every):
        return every
    return [(i % n_layers, (i * 7919) % n_blocks) for i in range(count)]  # every layer, blocks scattered


def crc(data) -> int:
    """CRC32C of ``data`` (bytes or an array) as zarr's Crc32cCodec computes it, without a copy."""
    view = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data).reshape(-1).view(np.uint8)
    view.flags.writeable = False  # google_crc32c takes read-only buffers only
    return google_crc32c.value(view)


def measure(candidate: Candidate, chunks: list[np.ndarray], repeat: int) -> tuple[int, float, float]:
    """(stored bytes, best encode seconds, best decode seconds) over all ``chunks``."""
    backend = candidate.backend()
    stored, encode_s, decode_s = 0, float("inf"), float("inf")
    for _ in range(repeat):
        encoded, started = [], time.perf_counter()
        for chunk in chunks:
            data = chunk if backend is None else backend.encode(chunk)
            encoded.append((data, crc(data)))
        encode_s = min(encode_s, time.perf_counter() - started)
        started = time.perf_counter()
        decoded = []
        for data, checksum in encoded:
            if crc(data) != checksum:
                raise AssertionError("checksum")
            decoded.append(data if backend is None else backend.decode(data))
        decode_s = min(decode_s, time.perf_counter() - started)
        stored = sum(memoryview(data).nbytes + 4 for data, _ in encoded)
        for chunk, out in zip(chunks, decoded):
            if np.frombuffer(out, dtype=chunk.dtype).tobytes() != chunk.tobytes():
                raise AssertionError(f"{candidate.name} did not round-trip a chunk")
    return stored, encode_s, decode_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--model")
    parser.add_argument("--dataset")
    parser.add_argument("--chunks", default=None, help="number of chunks to sample, or 'all' (default: one per layer)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--distinct", action="store_true", help="drop rows equal to an earlier row of their chunk")
    args = parser.parse_args()
    numcodecs.blosc.set_nthreads(1)  # per core
    root = zarr.open_group(args.store, mode="r")
    if args.model and args.dataset:
        path = layout.run_path(args.model, args.dataset)
    else:  # the first run in the store
        path = next(f"{m}/{d}" for m, group in root.groups() for d, run in group.groups() if layout.HIDDEN in run)
    hidden = root[path][layout.HIDDEN]
    count = None if args.chunks == "all" else int(args.chunks) if args.chunks else hidden.shape[0]
    picks = sample_chunks(hidden, count)
    step = hidden.chunks[1]
    chunks = [np.ascontiguousarray(hidden[layer, block * step:(block + 1) * step, :]) for layer, block in picks]
    rows = sum(len(c) for c in chunks)
    if args.distinct:
        chunks = [np.ascontiguousarray(c[np.sort(np.unique(c, axis=0, return_index=True)[1])]) for c in chunks]
    repeated = 1 - sum(len(c) for c in chunks) / rows
    raw = sum(c.nbytes for c in chunks)
    print(f"{args.store} {path}: hidden {hidden.shape} {hidden.dtype} ({hidden.attrs.get('dtype')}), "
          f"chunks {hidden.chunks}; {len(chunks)} chunks sampled, {raw / 1e6:,.1f} MB"
          + (f" after dropping {repeated:.1%} repeated rows" if args.distinct else "")
          + f"; best of {args.repeat}, one core")
    print(f"| chain | ratio | saved | encode MB/s | decode MB/s |\n|---|---|---|---|---|")
    for candidate in candidates(hidden.dtype.itemsize):
        stored, enc, dec = measure(candidate, chunks, args.repeat)
        saved = "-" if candidate.codec is None else f"{1 - stored / raw:.1%}"
        print(f"| {candidate.name} | {raw / stored:.3f} | {saved} | {raw / enc / 1e6:,.0f} | "
              f"{raw / dec / 1e6:,.0f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
