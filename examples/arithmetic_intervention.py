"""The paper's arithmetic intervention on the packaged Gemma 3 270M, recorded once and analysed from the store.

Prompts "{a+b}={a}+" (the model should continue with b). The steering vector is
the mean last-token state of "<r> equals to <a+1> plus" minus that of "<r> equals
to <a> plus" (number words), at one layer: it says "the second operand is one more",
so r = (a+1) + (b−1) predicts the answer b−1. It is added at the last prompt
position with strengths 0, 0.5, …, 3, and each continuation is sorted into: result
unchanged (b), shifted as predicted (b−1), other. Runs in a few minutes on 2 cores.

    python examples/arithmetic_intervention.py [--store ./arith.zarr] [--items 40] [--layer 6]

The same steps from the shell:
    actstore extract --model gemma3-270m --dataset arith.jsonl --variants plus1,base --store S
    actstore steering define --store S --model gemma3-270m --name a-plus-one --layer 6 \\
        --from-states arith:variant=plus1 --minus arith:variant=base
    actstore extract --model gemma3-270m --dataset arith.jsonl --variants prompt --store S \\
        --intervene a-plus-one --coefficients 0,0.5,1,1.5,2,2.5,3 --steer-positions last --generate 2
    actstore analyze intervention --store S --model gemma3-270m --dataset arith --vector a-plus-one --rule arithmetic
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from num2words import num2words

import actstore
from activation_store.workflows.intervention import intervention_report
from activation_store.workflows.steering import define_vector
from activation_store.extract.interventions import InterventionSpec, record_interventions
from activation_store.extract.spec import RunSpec

STRENGTHS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def write_dataset(path: Path, n_items: int, seed: int = 0) -> None:
    """Items "a+b" (b ≥ 2, so b − 1 is still a positive answer), three variants each."""
    pairs = [(a, b) for a in range(1, 40) for b in range(2, 10)]
    random.Random(seed).shuffle(pairs)
    rows = []
    for a, b in pairs[:n_items]:
        r = a + b
        rows.append({"id": f"{a}+{b}", "prompt": f"{r}={a}+",
                     "plus1": f"{num2words(r)} equals to {num2words(a + 1)} plus",
                     "base": f"{num2words(r)} equals to {num2words(a)} plus"})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./arith.zarr")
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()

    data = Path(args.store).with_name("arith.jsonl")
    data.parent.mkdir(parents=True, exist_ok=True)
    write_dataset(data, args.items)
    run = actstore.extract(model=args.model, dataset=str(data), store=args.store, variants=["plus1", "base"],
                           dtype="float32", progress=False)
    print(run.summary())
    _, _, attrs = define_vector(args.store, run.model, "a-plus-one", args.layer, from_states="arith:variant=plus1",
                                minus="arith:variant=base", overwrite=True)
    print(f"vector a-plus-one at layer {args.layer}: |v| = {attrs['norm']:.1f} "
          f"(mean over {attrs['n_source']} + {attrs['n_minus']} last-token states)")
    recorded = record_interventions(
        RunSpec(args.model, str(data), args.store, variants=["prompt"], overwrite=True, progress=False),
        InterventionSpec("a-plus-one", STRENGTHS, positions="last", generate=2))
    print(recorded.summary())
    report = intervention_report(args.store, run.model, "arith", "a-plus-one", Path(args.out), rule="arithmetic",
                                 n_boot=1000)
    shares = report.shares
    print(f"\noutcome shares over {shares.attrs['n_items']} prompts '{{a+b}}={{a}}+' "
          f"(vector at layer {args.layer}, last position) [95% CI]")
    print(f"{'strength':>8}  " + "  ".join(f"{c:>22}" for c in shares.category.values))
    for c in range(shares.sizes["condition"]):
        row = shares.isel(condition=c)
        cells = [f"{float(s):.3f} [{float(lo):.2f}, {float(hi):.2f}]" for s, lo, hi in zip(row.share.values, row.ci_low.values,
                                                                                         row.ci_high.values)]
        print(f"{float(row.coefficient):8.1f}  " + "  ".join(f"{cell:>22}" for cell in cells))
    kl = report.table[(report.table.metric == "kl")]
    print("\nKL(baseline || steered) of the next token: measured / logit-lens forecast at the layer")
    for coefficient, rows in kl.groupby("coefficient"):
        measured = rows[rows.source == "measured"]["mean"].iloc[0]
        forecast = rows[rows.source == "lens-forecast"]["mean"]
        print(f"{coefficient:8.1f}  {measured:8.3f}  /  {forecast.iloc[0] if len(forecast) else float('nan'):8.3f}")
    for path in report.files:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
