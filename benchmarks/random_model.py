"""A randomly initialised Llama-style model of a chosen size, saved as a local model directory.

For throughput measurements on machines that hold no packaged weights (a GPU box with no network):
the numbers depend on the shapes, not on the weights. Its tokenizer is the tests' byte-level BPE.

    python benchmarks/random_model.py OUT [--layers 18] [--hidden 640] [--intermediate 2048] [--heads 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import build_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--hidden", type=int, default=640)  # Gemma 3 270M's width
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=max(1, args.heads // 4), max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, {args.layers} layers × {args.hidden}")


if __name__ == "__main__":
    main()
