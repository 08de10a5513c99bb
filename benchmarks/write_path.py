"""The extraction write path's own speed: the real ``actstore.extract`` with the model's forward replaced by
ready-made states of the right shape, against plain writes (or PUTs) of the same bytes, side by side in one run.

The model is a randomly initialised Llama of the chosen depth and width whose attention and MLP are tiny (its
forward is never used for the timed states); ``forward_states`` hands back slices of one pre-made tensor of
bfloat16 states (``--states-dtype float32``: a CPU's float32, converted as it is stored), so everything after
the forward is extraction's own: the copy into blocks in the stored dtype,
the pieces (statistics and pooled views), checksums, chunk writes, commits, the finish and the consolidation.
Timed per round, alternating, each side ending with ``os.sync()`` so both include getting the bytes to disk:
  extraction: the fill loop and ``finish_run`` of ``actstore.extract`` (model loading, tokenizing, the lens
              head and consolidation excluded; timed the same way on older versions, for comparisons);
  plain: the run's own ``hidden`` chunk files written again as they are, one thread and then one per core
         (locally), or PUT in parallel with obstore (``--s3``: the tests' S3 server on 127.0.0.1).

    python benchmarks/write_path.py [--layers 25] [--d-model 2048] [--tokens 65536] [--repeats 3] [--s3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import actstore
from activation_store.extract import capture
from activation_store.store import layout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def tiny_wide_model(out: Path, layers: int, d_model: int) -> None:
    """A Llama of ``layers`` blocks × ``d_model`` whose blocks are nearly empty (1 head of 8, MLP of 8)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=8,
                         num_hidden_layers=layers - 1, num_attention_heads=1, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def dataset(out: Path, tokens: int) -> None:
    """Examples of 20–200 words; the tests' byte-level tokenizer makes about one token per character."""
    rng = np.random.default_rng(0)
    words = "states cross the host once and many chunks are written together off the lock".split()
    with open(out, "w") as f:
        made, i = 0, 0
        while made < tokens:
            text = " ".join(rng.choice(words, int(rng.integers(20, 200))))
            f.write(json.dumps({"id": f"e{i}", "variant": "en", "text": text}) + "\n")
            made, i = made + len(text), i + 1


class ReadyStates:
    """``forward_states`` replaced: the first tokens of one pre-made tensor in the compute dtype (bfloat16, as a
    GPU computes them, by default), as many as the batch has (grown, once, to the largest batch: the warm-up
    round pays for it)."""

    def __init__(self, layers: int, d_model: int, dtype: torch.dtype = torch.bfloat16):
        self.shape, self.dtype = (layers, d_model), dtype
        self.pool = torch.empty((layers, 0, d_model), dtype=dtype)

    def __call__(self, model, ids, pad_id, device=None, **inputs):
        n = sum(len(row) for row in ids)
        if n > self.pool.shape[1]:
            generator = torch.Generator().manual_seed(0)
            self.pool = (torch.randn((self.shape[0], n, self.shape[1]), generator=generator) * 4).to(self.dtype)
        return self.pool[:, :n]


class FinishTimer:
    """Times the campaign's ``finish_run`` calls (views and statistics), the same way whatever the version."""

    def __init__(self):
        from activation_store.extract import campaign

        self.seconds, self.real = 0.0, campaign.finish_run
        campaign.finish_run = self

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.real(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def stored_chunks(store: str, options: dict | None, run: str) -> list[tuple[str, bytes]]:
    """The run's ``hidden`` chunk files as (key, bytes): exactly what extraction wrote."""
    if options is not None:
        from activation_store.store.location import filesystem

        fs, root = filesystem(store, options)
        return [(key.split("/hidden/c/", 1)[1], fs.cat_file(key)) for key in fs.find(f"{root}/{run}/hidden/c")]
    hidden = Path(store) / run / "hidden" / "c"
    return [(str(p.relative_to(hidden)), p.read_bytes()) for p in sorted(hidden.rglob("*")) if p.is_file()]


def plain_local(chunks: list[tuple[str, bytes]], target: Path, threads: int) -> None:
    def one(item):
        key, data = item
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=25, help="hidden states per token (embeddings + blocks)")
    parser.add_argument("--d-model", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="extract into the tests' local S3 server instead")
    parser.add_argument("--states-dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="what the replaced forward hands over (float32: a CPU's compute, converted on storing)")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="actstore-write-path-", dir=args.dir))
    model_dir, data = work / "model", work / "data.jsonl"
    tiny_wide_model(model_dir, args.layers, args.d_model)
    dataset(data, args.tokens)
    capture.forward_states = ReadyStates(args.layers, args.d_model, getattr(torch, args.states_dtype))
    capture.final_norm_applied = lambda model, ids, pad_id, device=None: [False] * args.layers
    finishing = FinishTimer()
    if args.s3:
        from _s3 import plain_parallel_puts, start_s3_server

        url_base, options = start_s3_server()  # stopped at exit
    cores = os.cpu_count() or 1

    def extraction(repeat: int) -> float:
        store = f"{url_base}/w{repeat}.zarr" if args.s3 else str(work / f"w{repeat}.zarr")
        result = actstore.extract(model=str(model_dir), dataset=str(data), store=store, batch_size=args.batch_size,
                                  progress=False, **({"storage_options": options} if args.s3 else {}))
        started = time.perf_counter()
        os.sync()
        seconds = result.fill_seconds + finishing.take() + time.perf_counter() - started
        if not chunks:  # the warm-up round's chunk files: what the plain sides write
            chunks.extend(stored_chunks(store, options if args.s3 else None, layout.run_path(model_dir.name, "data")))
            shape.append(result.tokens)
        remove(store)
        return seconds

    def plain(threads: int, repeat: int) -> float:
        target = f"{url_base}/plain{repeat}" if args.s3 else str(work / f"plain{repeat}-{threads}")
        if args.s3:
            seconds = plain_parallel_puts(target, options, [b for _, b in chunks], threads=threads)
        else:
            started = time.perf_counter()
            plain_local(chunks, Path(target), threads)
            os.sync()
            seconds = time.perf_counter() - started
        remove(target)
        return seconds

    def remove(target: str) -> None:
        if args.s3:
            from activation_store.store.location import filesystem

            fs, root = filesystem(target, options)
            fs.rm(root, recursive=True)  # the in-memory server holds every byte: one store at a time
        else:
            shutil.rmtree(target, ignore_errors=True)

    chunks: list[tuple[str, bytes]] = []
    shape: list[int] = []
    sides = {"extraction (fill + finish)": extraction}
    if args.s3:
        sides["plain parallel PUTs, 16 at a time"] = lambda repeat: plain(16, repeat)
    else:
        for threads in sorted({1, cores}):
            sides[f"plain writes, {threads} thread{'s' * (threads > 1)}"] = lambda repeat, t=threads: plain(t, repeat)
    times: dict[str, list[float]] = {name: [] for name in sides}
    try:
        extraction(0)  # warm-up: imports, the pool of states, the chunk files for the plain sides
        names = list(sides)
        for repeat in range(1, args.repeats + 1):  # each round in another order: no side always follows another
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                os.sync()
                times[name].append(sides[name](repeat))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gb = sum(len(b) for _, b in chunks) / 1e9
    where = "the local S3 server" if args.s3 else f"local disk ({work.parent})"
    print(f"{args.layers} layers x {args.d_model}, {shape[0]:,} tokens (bfloat16): {gb:.2f} GB of chunks to "
          f"{where}; medians of {args.repeats} rounds after a warm-up, each synced")
    base_name = next(n for n in times if n.startswith("plain"))
    for name, values in times.items():
        t = statistics.median(values)
        print(f"  {name:36s} {t:7.2f} s  {gb / t:6.2f} GB/s  (runs: {', '.join(f'{v:.2f}' for v in values)})")
    best_plain = min(statistics.median(v) for n, v in times.items() if n.startswith("plain"))
    ext = statistics.median(times["extraction (fill + finish)"])
    print(f"extraction / {base_name}: {statistics.median(times[base_name]) / ext:.2f}x; "
          f"extraction / fastest plain: {best_plain / ext:.2f}x")


if __name__ == "__main__":
    main()
