"""Shared fixtures: tiny randomly initialised transformers models built here, and the CLI.

Tiny models use the real transformers code paths (Llama's RMSNorm, Gemma 3's
1 + weight RMSNorm with logit soft-capping, GPT-2's LayerNorm) with random
weights; their tokenizer is a byte-level BPE trained in the test session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "The cat sits on the table.", "Le chat est assis sur la table.", "猫坐在桌子上。", "Кошка сидит на столе.",
    "five plus three", "5+3", "twelve times two", "12*2", "Change my password", "修改我的密码", "def add(a, b): return a + b",
] * 20


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(arch: str, vocab_size: int):
    import torch
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(0)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
        return LlamaForCausalLM(config)
    if arch == "gemma3":
        config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                                  final_logit_softcapping=30.0, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                  sliding_window=16)
        model = Gemma3ForCausalLM(config)
        with torch.no_grad():  # random norm weights, so 1 + weight and weight differ
            model.model.norm.weight.normal_(0, 0.5)
        return model
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=4, n_positions=256,
                            bos_token_id=1, eos_token_id=2)
        model = GPT2LMHeadModel(config)
        with torch.no_grad():
            model.transformer.ln_f.bias.normal_(0, 0.5)
        return model
    raise ValueError(arch)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(arch)`` → a saved (safetensors) tiny random model directory."""
    cache: dict[str, Path] = {}

    def make(arch: str = "llama") -> Path:
        if arch not in cache:
            tokenizer = build_tokenizer()
            model = build_model(arch, len(tokenizer))
            path = tmp_path_factory.mktemp(f"tiny-{arch}")
            model.save_pretrained(path, safe_serialization=True)
            tokenizer.save_pretrained(path)
            cache[arch] = path
        return cache[arch]

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread in this process for a module's tests: single-process references computed with the same
    number of threads as each worker (or each --quiet subprocess) are bit-identical to theirs.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def parallel_jsonl(tmp_path) -> Path:
    return write_pairs(tmp_path)


PAIRS = [
    {"id": "cat", "en": "The cat sits on the table.", "zh": "猫坐在桌子上。", "fr": "Le chat est assis sur la table."},
    {"id": "pw", "en": "Change my password", "zh": "修改我的密码", "fr": "Modifier mon mot de passe"},
    {"id": "sum", "en": "five plus three", "zh": "五加三", "fr": "cinq plus trois"},
    {"id": "mul", "en": "twelve times two", "zh": "十二乘以二", "fr": "douze fois deux"},
    {"id": "code", "en": "add a and b", "zh": "把a和b相加", "fr": "ajouter a et b"},
]


def write_pairs(folder: Path) -> Path:
    """``folder/pairs.jsonl``: five items in English, Chinese and French (what ``parallel_jsonl`` gives)."""
    import json

    path = folder / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in PAIRS) + "\n", encoding="utf-8")
    return path


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real ``actstore`` command in a subprocess: exit code, stdout and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "activation_store", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def _forked_cli():
    from forked_cli import ForkedCli

    return ForkedCli()


@pytest.fixture
def cli(_forked_cli):
    """``cli(*args)`` → exit code, stdout and stderr of the command's own ``main()`` in a fresh forked process
    (tests/forked_cli.py): what a user sees, without paying the imports per call. Tests about the interpreter
    start itself (installs, first-run messages) use ``run_cli``."""
    return _forked_cli
