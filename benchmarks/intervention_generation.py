"""Generation speed of recorded interventions: the key-value cache (what ``record_interventions`` does now)
against rerunning the whole steered sequence each step (what it did before), same prompts, same vector, same
model, one run; medians of ``--repeats``. The outputs must be equal token for token (greedy).

    python benchmarks/intervention_generation.py [--model gemma3-270m] [--prompts 8] [--tokens 32] [--prompt-tokens 256]

``--prompt-tokens N`` puts a context before each prompt so it is N tokens long (the paper's few-shot
prompts run to a few hundred): the uncached path reruns all of it at every step, the cached one once."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from activation_store.extract.capture import pad_batch
from activation_store.extract.interventions import (Steering, _forward, _generate, _pick, _prompt_cache,
                                                    decoder_layers, steer_mask, steered_positions)
from activation_store.extract.models import plan_model

CONTEXT = ("The committee met on Tuesday to review the annual report. Members discussed the budget, the new "
           "library wing, and the schedule for repairs to the old bridge. ")
PROMPTS = ["The weather today is", "接下来的文字全部是中文的。这本书", "def add(a, b):\n    return", "Todo el texto siguiente",
           "Once upon a time", "The capital of France is", "for i in range(", "Good morning, my friend"]


@torch.inference_mode()
def uncached(net, rows, pad_id, hook, coefficient, where, steps):
    """The previous path: each step reruns prompt + generated tokens (right-padded) without a cache."""
    lengths = torch.tensor([len(r) for r in rows])
    ids, mask = pad_batch([r + [pad_id] * steps for r in rows], pad_id)
    mask[:] = 0
    for i, n in enumerate(lengths.tolist()):
        mask[i, :n] = 1
    out = torch.zeros((len(rows), steps), dtype=torch.long)
    for t in range(steps):
        steer = torch.zeros(ids.shape)
        for i, n in enumerate(lengths.tolist()):
            steer[i, steered_positions(where, n)] = 1.0
            if where == "all":
                steer[i, : n + t] = 1.0
        hook.set(coefficient, steer)
        width = int(lengths.max()) + t
        logits, _ = _forward(net, ids[:, :width], mask[:, :width], lengths + t)
        chosen = _pick(logits, None)
        out[:, t] = chosen
        ids[torch.arange(len(rows)), lengths + t] = chosen
        mask[torch.arange(len(rows)), lengths + t] = 1
    return out


@torch.inference_mode()
def cached(net, rows, pad_id, hook, coefficient, where, steps):
    lengths = torch.tensor([len(r) for r in rows])
    ids, mask = pad_batch(rows, pad_id)
    chosen = [steered_positions(where, n) for n in lengths.tolist()]
    hook.set(coefficient, steer_mask(chosen, ids.shape[1]))
    logits, _ = _forward(net, ids, mask, lengths)
    past, left = _prompt_cache(net, rows, pad_id, hook, coefficient, chosen, {})
    return torch.from_numpy(_generate(net, left, lengths, logits, past, hook, coefficient, where, steps, -1, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coefficient", type=float, default=4.0)
    parser.add_argument("--prompt-tokens", type=int, default=0, help="lengthen each prompt to this many tokens")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = plan_model(args.model)
    net = model.load_weights()
    context = model.tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    rows = []
    for prompt in (PROMPTS * 4)[: args.prompts]:
        ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        before = (context * (args.prompt_tokens // len(context) + 1))[: max(0, args.prompt_tokens - 1 - len(ids))]
        rows.append([model.tokenizer.bos_token_id or 0] + before + ids)
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    layer = model.n_decoder_layers // 2
    results = {}
    with Steering(decoder_layers(net)[layer - 1], vector) as hook:
        for name, fn in (("uncached", uncached), ("cached", cached)):
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                out = fn(net, rows, model.pad_id, hook, args.coefficient, "all", args.tokens)
                times.append(time.perf_counter() - started)
            results[name] = (statistics.median(times), out)
    same = torch.equal(results["cached"][1], results["uncached"][1])
    n = len(rows) * args.tokens
    print(f"{args.model}: {len(rows)} prompts of {min(map(len, rows))}–{max(map(len, rows))} tokens × {args.tokens} "
          f"new tokens, vector at layer {layer}, positions all, "
          f"greedy; medians of {args.repeats}")
    for name, (seconds, _) in results.items():
        print(f"  {name:>8}: {seconds:7.2f} s  {n / seconds:8.1f} tokens/s")
    print(f"  speed-up: {results['uncached'][0] / results['cached'][0]:.1f}x; outputs identical: {same}")


if __name__ == "__main__":
    main()
