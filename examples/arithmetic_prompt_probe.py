"""Does Qwen2.5-Coder 0.5B answer the paper's result-first addition prompts? The unsteered accuracy decides whether
the ActAdd arithmetic intervention (``examples/steering_sweeps.py``, ``arith``) can be read at all (PAPER.md:
"if it does not, the steering outcome cannot be read"). Greedy next token after "{a+b}={a}+" with k worked
examples before it, over the sweep's items; prints the share whose next token is b:

    python examples/arithmetic_prompt_probe.py [--items 40]"""
from __future__ import annotations

import argparse
import random
import time

import torch

from activation_store.extract.models import load_model

SHOTS = [(4, 3), (5, 4), (8, 7), (17, 6), (12, 9), (26, 5), (3, 8), (31, 2)]


def prompt(a: int, b: int, shots: int) -> str:
    """``shots`` worked examples "{x+y}={x}+{y}", one a line, then "{a+b}={a}+" (the paper's result-first form)."""
    return "".join(f"{x + y}={x}+{y}\n" for x, y in SHOTS[:shots]) + f"{a + b}={a}+"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--shots", default="2,4,8")
    args = parser.parse_args()
    lm = load_model("qwen2.5-coder-0.5b")
    net, tok = lm.model, lm.tokenizer
    pairs = [(a, b) for a in range(1, 40) for b in range(2, 10)]  # the sweep's items (arithmetic_rows)
    random.Random(0).shuffle(pairs)
    pairs = pairs[: args.items]
    prefix = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for shots in [int(s) for s in args.shots.split(",")]:
        started = time.perf_counter()
        rows = [prefix + tok(prompt(a, b, shots), add_special_tokens=False)["input_ids"] for a, b in pairs]
        width, pad = max(map(len, rows)), tok.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left padding: last column = last token
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.no_grad():
            top = net(input_ids=ids, attention_mask=mask).logits[:, -1].argmax(-1).tolist()
        answers = [tok.decode([t]).strip() for t in top]
        right = sum(answer == str(b) for answer, (_, b) in zip(answers, pairs))
        print(f"{shots} shots: next token = b in {right}/{len(pairs)} "
              f"(e.g. {', '.join(f'{a + b}={a}+ → {x}' for x, (a, b) in zip(answers[:5], pairs))}); "
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
