"""Extraction throughput in-process vs on dask workers, side by side in one run, on the same data.

Three ways to run one campaign (one model × one dataset) into fresh local stores:
- in-process: no cluster, torch with ``--threads`` threads (the default ``actstore extract``);
- 1 worker × ``--threads`` torch threads (a LocalCluster of one process);
- ``--threads`` workers × 1 torch thread each.
Each configuration gets a warm-up run (model loads, lens head) that is not counted,
then ``--repeats`` timed runs, alternating between configurations; reported are
median tokens/s of the fill phase (forward passes, encoding, chunk writes,
commits), its ratio to in-process, peak RSS per process, and the largest
difference between the in-process and the multi-worker ``hidden`` arrays in
bfloat16 ulps (0 when torch computes the same bits with 1 and N threads).

    python benchmarks/extract_scaling.py [--model gemma3-270m] [--dataset django-ui] [--limit 60] [--repeats 3]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import zarr
from distributed import LocalCluster

from activation_store.extract.spec import RunSpec
from activation_store.extract.campaign import run_campaign
from activation_store.store import layout


def hidden_bits(store: str, model: str, dataset: str) -> np.ndarray:
    return zarr.open_group(store, mode="r")[f"{layout.run_path(model, dataset)}/hidden"][...]


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in bfloat16 ulps between two arrays of bfloat16 bit patterns (same sign assumed)."""
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) if a.size else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--dataset", default="django-ui")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="actstore-scaling-"))

    def spec(store: Path) -> RunSpec:
        return RunSpec(args.model, args.dataset, str(store), limit=args.limit, batch_size=args.batch_size,
                       chunk_tokens=args.chunk_tokens, progress=False)

    torch.set_num_threads(args.threads)
    one = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0)
    many = LocalCluster(n_workers=args.threads, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=0)
    configs = {
        "in-process": dict(),
        f"1 worker x {args.threads} threads": dict(scheduler=one.scheduler_address, threads_per_worker=args.threads),
        f"{args.threads} workers x 1 thread": dict(scheduler=many.scheduler_address, threads_per_worker=1),
    }
    rates: dict[str, list[float]] = {name: [] for name in configs}
    rss: dict[str, list[int]] = {name: [] for name in configs}
    stores: dict[str, str] = {}
    tokens = 0
    for repeat in range(args.repeats + 1):  # the first round warms up (loads, lens heads) and is not counted
        for name, options in configs.items():
            store = work / f"{name.replace(' ', '_')}-{repeat}.zarr"
            result = run_campaign([spec(store)], progress=False, **options)
            tokens = result.tokens_written
            stores[name] = str(store)
            if repeat:
                rates[name].append(result.tokens_per_second)
                own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                rss[name] = list(result.peak_rss.values()) if options else [own]
    model_name = run_campaign([spec(work / "in-process-0.zarr")], progress=False).runs[0].model
    base = statistics.median(rates["in-process"])
    print(f"{args.model} over {args.dataset} (limit {args.limit}): {tokens:,} tokens, batch {args.batch_size}, "
          f"chunks of {args.chunk_tokens} tokens; medians of {args.repeats} runs after a warm-up")
    print(f"{'configuration':<26}{'tokens/s':>10}{'vs in-process':>15}  peak RSS per process")
    for name in configs:
        median = statistics.median(rates[name])
        print(f"{name:<26}{median:>10,.0f}{median / base:>14.2f}x  "
              + ", ".join(f"{r / 2**20:,.0f} MiB" for r in rss[name]))
    reference = hidden_bits(stores["in-process"], model_name, args.dataset)
    for name in list(configs)[1:]:
        print(f"largest difference, {name} vs in-process: {ulps(hidden_bits(stores[name], model_name, args.dataset), reference)} bf16 ulp")
    one.close()
    many.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
