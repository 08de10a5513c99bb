"""Reproduce the text experiments of Wu et al. (2024) from one activation store, and write the report.

Extracts the grid (Gemma 3 270M: multilingual django-ui and COGS-style semantics; Qwen2.5-Coder 0.5B:
arithmetic and HumanEval code; SmolLM2 135M: the English-centred control), runs every analysis from the
store through ``activation_store.workflows``, and writes docs/reproduction.md with its figures in
docs/figures/. The same as ``actstore report``.

    python examples/reproduce_semantic_hub.py [--store ./reproduction.zarr] [--limit django-ui=40,code=80]
                                              [--models gemma3-270m,qwen2.5-coder-0.5b,smollm2-135m]
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from activation_store.workflows.reproduction import reproduce, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./reproduction.zarr")
    parser.add_argument("--models", default=None, help="main[,code[,control]]")
    parser.add_argument("--limit", default=None, help="N, or DATASET=N,… (items per dataset)")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--lens-layer-step", type=int, default=1, help="lens analyses read every Nth layer")
    args = parser.parse_args()
    command = ("python examples/reproduce_semantic_hub.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip()
    path = args.docs / "reproduction.md"
    run = reproduce(args.store, args.docs, models=args.models.split(",") if args.models else None, limit=args.limit,
                    n_boot=args.bootstrap, lens_step=args.lens_layer_step,
                    on_finding=lambda partial: write_report(partial, path, command))
    for finding in run.findings:
        print(f"{finding.verdict:>30}  {finding.title}")
    print(f"wrote {path} in {run.seconds['total']:.0f} s")


if __name__ == "__main__":
    main()
