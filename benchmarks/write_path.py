"""The extraction write path's own speed: the real ``actstore.extract`` with the model's forward replaced by
ready-made states of the right shape, against plain writes (or PUTs) of the same bytes, side by side in one run.

The model is a randomly initialised Llama of the chosen depth and width whose attention and MLP are tiny (its
forward is never used for the timed states); ``forward_states`` hands back slices of one pre-made tensor of
float32 states, so everything after the forward is extraction's own: the copy into blocks in the stored dtype,
the pieces (statistics and pooled views), checksums, chunk writes, commits, the finish and the consolidation.
Timed per round, alternating, each side ending with ``os.sync()`` so both include getting the bytes to disk:
  extraction: fill + finish of ``actstore.extract`` (model loading, tokenizing and the lens head excluded);
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
    """Examples of 40–400 words; the tests' byte-level tokenizer makes about one token per character."""
    rng = np.random.default_rng(0)
    words = "states cross the host once and many chunks are written together off the lock".split()
    with open(out, "w") as f:
        made, i = 0, 0
        while made < tokens:
            text = " ".join(rng.choice(words, int(rng.integers(40, 400))))
            f.write(json.dumps({"id": f"e{i}", "variant": "en", "text": text}) + "\n")
            made, i = made + len(text), i + 1


class ReadyStates:
    """``forward_states`` replaced: slices of one pre-made float32 tensor, as many real tokens as the batch."""

    def __init__(self, layers: int, d_model: int, most: int):
        generator = torch.Generator().manual_seed(0)
        self.pool = torch.randn((layers, most, d_model), generator=generator) * 4
        self.real = capture.forward_states

    def __call__(self, model, ids, pad_id, device=None, **inputs):
        n = sum(len(row) for row in ids)
        if n > self.pool.shape[1]:
            return self.real(model, ids, pad_id, device, **inputs)
        return self.pool[:, :n]


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
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="extract into the tests' local S3 server instead")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="actstore-write-path-", dir=args.dir))
    model_dir, data = work / "model", work / "data.jsonl"
    tiny_wide_model(model_dir, args.layers, args.d_model)
    dataset(data, args.tokens)
    ready = ReadyStates(args.layers, args.d_model, most=args.batch_size * 2048)
    capture.forward_states = ready
    capture.final_norm_applied = lambda model, ids, pad_id, device=None: [False] * args.layers
    server = None
    if args.s3:
        from _s3 import local_s3, plain_parallel_puts

        server = local_s3()
        url_base, options = server.url, server.storage_options
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {}
    stored = 0
    try:
        for repeat in range(args.repeats + 1):  # the first round warms up (imports, page cache) and is not kept
            store = f"{url_base}/w{repeat}.zarr" if args.s3 else str(work / f"w{repeat}.zarr")
            os.sync()
            result = actstore.extract(model=str(model_dir), dataset=str(data), store=store, batch_size=args.batch_size,
                                      progress=False, **({"storage_options": options} if args.s3 else {}))
            started = time.perf_counter()
            os.sync()
            extraction = result.fill_seconds + result.finish_seconds + time.perf_counter() - started
            run = layout.run_path(model_dir.name, "data")
            if args.s3:
                from activation_store.store.location import filesystem

                fs, root = filesystem(store, options)
                keys = [k for k in fs.find(f"{root}/{run}/hidden/c")]
                chunks = [(k.split("/hidden/c/", 1)[1], fs.cat_file(k)) for k in keys]
            else:
                hidden_dir = Path(store) / run / "hidden" / "c"
                chunks = [(str(p.relative_to(hidden_dir)), p.read_bytes()) for p in sorted(hidden_dir.rglob("*"))
                          if p.is_file()]
            stored = sum(len(b) for _, b in chunks)
            sides = {"extraction (fill + finish)": extraction}
            if args.s3:
                started = time.perf_counter()
                plain_parallel_puts(f"{url_base}/plain{repeat}", options, [b for _, b in chunks], threads=16)
                sides["plain parallel PUTs, 16 at a time"] = time.perf_counter() - started
            else:
                for threads in (1, cores):
                    target = work / f"plain{repeat}-{threads}"
                    os.sync()
                    started = time.perf_counter()
                    plain_local(chunks, target, threads)
                    os.sync()
                    sides[f"plain writes, {threads} thread{'s' * (threads > 1)}"] = time.perf_counter() - started
                    shutil.rmtree(target, ignore_errors=True)
                shutil.rmtree(store, ignore_errors=True)
            if repeat:
                for name, seconds in sides.items():
                    times.setdefault(name, []).append(seconds)
            del chunks
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    gb = stored / 1e9
    where = "the local S3 server" if args.s3 else f"local disk ({work.parent})"
    print(f"{args.layers} layers x {args.d_model}, {result.tokens:,} tokens (bfloat16): {gb:.2f} GB of chunks to "
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
