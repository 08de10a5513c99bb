"""Extraction throughput vs a bare forward pass, side by side in one process on the same batches.

Bare: ``model.base_model(..., output_hidden_states=True)`` on each padded batch,
outputs discarded (what any activation capture must at least pay), and the full
causal-LM forward (with the LM head) for reference. Extraction: ``actstore.extract``'s
forward-capture-write loop into a fresh local store and its finish (views, statistics, consolidation): the
marginal time of the tokens, model loading excluded (``ExtractResult.fill_seconds + finish_seconds``). Repeats alternate and medians are reported.

On a GPU the bare forward waits for the device at the end of each pass (``synchronize``), as
extraction does when it takes each batch's states to the host; the goal there is >= 0.9x.

    python benchmarks/extract_overhead.py [--model gemma3-270m] [--limit 40] [--repeats 3] \
        [--device auto|cpu|cuda|cuda:N|mps] [--compute-dtype float32|bfloat16|float16]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import actstore
from activation_store.extract.capture import pad_batch
from activation_store.extract.datasets import load_dataset
from activation_store.extract.devices import default_compute_dtype, device_kind, resolve_device
from activation_store.extract.models import attention, load_model
from activation_store.extract.tokens import tokenize


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def bare(model, batches, pad_id, head: bool, device: str) -> float:
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in batches:
            input_ids, mask = pad_batch(ids, pad_id)
            runner = model if head else model.base_model
            runner(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                   use_cache=False)
        synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dataset", default="django-ui")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-dtype", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    compute_dtype = args.compute_dtype or default_compute_dtype(device)

    loaded = load_model(args.model, device=device, compute_dtype=compute_dtype)
    data = load_dataset(args.dataset, limit=args.limit)
    layout = tokenize(loaded.tokenizer, data.examples())
    batches = [layout.ids[i:i + args.batch_size] for i in range(0, len(layout.ids), args.batch_size)]
    pad_id = loaded.tokenizer.pad_token_id or 0
    n = layout.n_tokens
    print(f"model {args.model}, dataset {args.dataset} (limit {args.limit}): {len(layout.ids)} examples, {n:,} tokens, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"device {device_kind(device)}, compute dtype {compute_dtype}, attention {attention(loaded.model)}")
    bare(loaded.model, batches[:2], pad_id, head=False, device=device)  # warm-up
    times = {"bare base-model forward": [], "bare causal-LM forward": [], "extraction to local store": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            times["bare base-model forward"].append(bare(loaded.model, batches, pad_id, False, device))
            times["bare causal-LM forward"].append(bare(loaded.model, batches, pad_id, True, device))
            result = actstore.extract(model=args.model, dataset=args.dataset, limit=args.limit, batch_size=args.batch_size,
                                      store=f"{tmp}/run{repeat}.zarr", progress=False, device=device,
                                      compute_dtype=compute_dtype)
            times["extraction to local store"].append(result.fill_seconds + result.finish_seconds)
    rates = {name: n / statistics.median(values) for name, values in times.items()}
    for name, rate in rates.items():
        print(f"{name:28s} median {statistics.median(times[name]):7.2f} s  {rate:9,.0f} tokens/s  (runs: "
              + ", ".join(f"{t:.2f}" for t in times[name]) + ")")
    extraction = rates["extraction to local store"]
    print(f"ratio extraction / bare base-model forward: {extraction / rates['bare base-model forward']:.3f}")
    print(f"ratio extraction / bare causal-LM forward:  {extraction / rates['bare causal-LM forward']:.3f}")


if __name__ == "__main__":
    main()
