"""Bytes on disk of one dataset under several capture choices, side by side in one process.

For each selection the same model runs over the same examples into its own fresh
store; printed per run: ``hidden``'s bytes on disk against the packed size
(kept layers × states × d_model × bytes per value: what the states alone take),
the whole run group's bytes (coordinates, pooled views, statistics included) and
the ratio to the full run. ``old-chunks`` is a full run chunked the way runs were
before chunks were sized to the run (``--chunk-tokens`` = the ~16 MB default, so
the edge chunk is stored whole, mostly fill).

    python benchmarks/store_bytes.py [--model smollm2-135m] [--dataset django-ui] [--limit 1000] \
        [--selections full,old-chunks,last,mean,layers]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import actstore
from activation_store.extract.estimate import default_chunk_tokens
from activation_store.extract.models import plan_model
from activation_store.store import layout

SELECTIONS = {
    "full": {},
    "old-chunks": {"chunk_tokens": "default"},
    "last": {"positions": "last"},
    "mean": {"positions": "mean"},
    "layers": {"layers": "0:99:10"},  # every tenth layer
}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="django-ui")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--selections", default=",".join(SELECTIONS))
    args = parser.parse_args()
    plan = plan_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="actstore-bytes-") as tmp:
        for name in args.selections.split(","):
            options = dict(SELECTIONS[name])
            if options.get("chunk_tokens") == "default":
                options["chunk_tokens"] = default_chunk_tokens(plan.d_model, "bfloat16")
            if "layers" in options:
                options["layers"] = options["layers"].replace("99", str(plan.n_layers))
            store = Path(tmp) / f"{name}.zarr"
            started = time.perf_counter()
            result = actstore.extract(model=args.model, dataset=args.dataset, store=str(store), limit=args.limit,
                                      batch_size=args.batch_size, progress=False, **options)
            seconds = time.perf_counter() - started
            ds = actstore.open_run(str(store), result.model, result.dataset)
            group = store / layout.run_path(result.model, result.dataset)
            hidden = du(group / layout.HIDDEN)
            packed = ds.hidden.size * (4 if options.get("positions") == "mean" else 2)
            rows.append((name, result, hidden, packed, du(group), int(ds.hidden.attrs["chunk_tokens"]), seconds))
    full = next((row[4] for row in rows if row[0] == "full"), rows[0][4])
    first = rows[0][1]
    print(f"{first.model} over {first.dataset}: {first.examples:,} examples, {first.tokens:,} tokens; "
          f"{plan.n_layers} layers × d_model {plan.d_model}")
    print(f"{'selection':<11} {'layers':>6} {'states':>8} {'chunk':>6} {'hidden on disk':>15} {'packed':>13} "
          f"{'ratio':>7} {'run group':>13} {'vs full':>8} {'seconds':>8}")
    for name, result, hidden, packed, group, chunk, seconds in rows:
        print(f"{name:<11} {result.layers:>6} {result.tokens_written:>8,} {chunk:>6,} {hidden:>15,} {packed:>13,} "
              f"{hidden / packed:>6.4f}× {group:>13,} {group / full:>7.3f}× {seconds:>8.1f}")


if __name__ == "__main__":
    main()
