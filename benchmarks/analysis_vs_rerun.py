"""Analysis from the store vs rerunning the model (the paper's way), side by side in one run.

1. Similarity (Eq. 1, last token, mean-centred) for N digit/word pairs of the
   arithmetic set: from the store (open + compute) vs loading the model, running
   it over the 2N inputs and computing the same score with numpy.
2. Logit-lens throughput (one-pass vocabulary projection from the store) as a
   share of this machine's own float32 matmul throughput on blocks of the same shape
   (all cores, numpy's BLAS), the two measured alternately and compared by their medians.

    python benchmarks/analysis_vs_rerun.py [--pairs 250] [--repeats 3] [--store /tmp/acts.zarr]

``--store`` reuses (or, when missing, keeps) the extracted store, so the minutes of
extraction are paid once; the store must hold the arithmetic run with ≥ ``--pairs`` pairs,
of which the first ``--pairs`` are scored on both sides.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

import actstore
from activation_store.analyze.lens_readout import readout
from activation_store.analyze.projection import state_chunks
from activation_store.analyze.selection import examples_of, tokens_of
from activation_store.analyze.pair_similarity import variant_similarity
from activation_store.extract.capture import pad_batch
from activation_store.extract.datasets import load_dataset
from activation_store.extract.models import load_model
from activation_store.extract.tokens import tokenize


def rerun_similarity(model: str, pairs: int, batch_size: int = 16) -> tuple[np.ndarray, float]:
    """The paper's way: load the model, run it over both variants, score with numpy; returns the scores and the
    seconds after loading (forward passes and the score's arithmetic: the issue's "model already loaded")."""
    loaded = load_model(model)
    examples = load_dataset("arithmetic", limit=pairs).examples()
    # the two compared variants only (the dataset has a third, result-first), digits then words
    examples = [e for e in examples if e.variant == "digits"] + [e for e in examples if e.variant == "words"]
    layout = tokenize(loaded.tokenizer, examples)
    pad = loaded.tokenizer.pad_token_id or 0
    last = []
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(layout.ids), batch_size):
            ids, mask = pad_batch(layout.ids[i:i + batch_size], pad)
            out = loaded.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            ends = mask.sum(1) - 1
            last.append(torch.stack(out.hidden_states)[:, torch.arange(len(ends)), ends].double())
    states = torch.cat(last, dim=1).numpy()                       # (layer, 2N, d): digits then words
    x, y = states[:, :pairs], states[:, pairs:]
    mean = (x.mean(1, keepdims=True) + y.mean(1, keepdims=True)) / 2
    x, y = x - mean, y - mean
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    cos = np.einsum("lid,ljd->lij", x, y)
    diag = np.trace(cos, axis1=1, axis2=2)
    scores = diag / pairs - (cos.sum((1, 2)) - diag) / (pairs * (pairs - 1))
    return scores, time.perf_counter() - started


def matmul_gflops(d_model: int, vocab_chunk: int, rows: int, repeats: int = 20) -> float:
    """float32 GEMM throughput on blocks of the lens's shape: (rows × d_model) @ (d_model × vocab chunk)."""
    a = np.random.default_rng(0).standard_normal((rows, d_model), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((vocab_chunk, d_model), dtype=np.float32)
    a @ b.T
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b.T
    return 2 * rows * d_model * vocab_chunk * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--pairs", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lens-tokens", type=int, default=64)
    parser.add_argument("--store", help="extract here once and reuse (default: a temporary store)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"{tmp}/acts.zarr"
        if not (args.store and os.path.exists(os.path.join(store, "zarr.json"))):
            actstore.extract(model=args.model, dataset="arithmetic", limit=args.pairs, store=store, progress=False)
        items = [item for item, _ in load_dataset("arithmetic", limit=args.pairs).items]
        rerun, rerun_loaded, from_store, from_open = [], [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            expected, loaded = rerun_similarity(args.model, args.pairs)
            rerun.append(time.perf_counter() - started)
            rerun_loaded.append(loaded)
            started = time.perf_counter()
            ds = actstore.open_run(store, args.model, "arithmetic")
            ds = ds.isel(example=np.flatnonzero(np.isin(ds["item"].values, items)))
            opened = time.perf_counter()
            result = variant_similarity(ds, ["digits", "words"], pool="last", center=True, n_boot=1000)
            from_store.append(time.perf_counter() - started)
            from_open.append(time.perf_counter() - opened)
        difference = float(np.abs(result.score.sel(pair="digits-words").values - expected).max())
        med = statistics.median
        print(f"similarity, {args.pairs} digit/word pairs × {ds.sizes['layer']} layers ({args.model}), "
              f"medians of {args.repeats}:")
        print(f"  rerun, model already loaded (forward + numpy score): {med(rerun_loaded):7.2f} s"
              f"   (with loading the model: {med(rerun):.2f} s)")
        print(f"  from the store, run already open (analysis, 95% CI incl.): {med(from_open):7.3f} s"
              f"   (with opening the run: {med(from_store):.3f} s)")
        print(f"  speed-up, loaded model vs open run: {med(rerun_loaded) / med(from_open):.0f}×; "
              f"loaded model vs opening the run too: {med(rerun_loaded) / med(from_store):.0f}×; "
              f"load + rerun vs open + analysis: {med(rerun) / med(from_store):.0f}×")
        print(f"  max |score difference| {difference:.1e} (bfloat16 store vs float32 rerun)")

        lens = actstore.open_lens(store, args.model)
        tokens = tokens_of(ds, examples_of(ds, variant="words"))[: args.lens_tokens]
        hidden = ds.hidden.isel(token=tokens)
        vectors = hidden.sizes["layer"] * hidden.sizes["token"]
        d_model, vocab = lens.sizes["d_model"], lens.sizes["vocab"]
        rows = int(np.prod(state_chunks(hidden.shape[:-1])))
        readout(hidden, lens, k=5)                                       # warm-up: page cache, imports
        times, peaks = [], []
        for _ in range(args.repeats):  # alternated, so both sides meet the same machine (its neighbours vary)
            started = time.perf_counter()
            readout(hidden, lens, k=5)
            times.append(time.perf_counter() - started)
            peaks.append(matmul_gflops(d_model, lens.unembedding.data.chunksize[0], rows))
        lens_rate = 2 * vectors * d_model * vocab / statistics.median(times) / 1e9
        peak = statistics.median(peaks)
        print(f"logit lens: {vectors} states × {vocab:,} vocab in median {statistics.median(times):.2f} s "
              f"= {lens_rate:.1f} GFLOP/s (incl. reading the {lens.unembedding.nbytes / 1e6:.0f} MB unembedding)")
        print(f"  this machine's float32 matmul on the same block shape ({rows} × {d_model} @ {d_model} × "
              f"{lens.unembedding.data.chunksize[0]}): {peak:.1f} GFLOP/s; "
              f"lens throughput = {100 * lens_rate / peak:.0f}% of it")


if __name__ == "__main__":
    main()
