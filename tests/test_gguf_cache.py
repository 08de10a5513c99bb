"""The GGUF → safetensors cache: several processes converting one GGUF at once convert it once.

A tiny Llama GGUF is written here with the ``gguf`` package (random weights, the session's byte-level BPE
tokenizer), so nothing is downloaded. Each process imports only the cache module before the start signal,
so the conversion itself (which imports transformers) takes seconds — long enough that every process asks
for the model while the first is still converting, which the test checks from the cache's own log."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_model, build_tokenizer

PROCESSES = 3

WORKER = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from activation_store.extract.gguf_cache import converted
gguf, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
asked = time.time()
directory, checksum = converted(gguf, gguf.stem)
answered = time.time()
from activation_store.extract.models import plan_model
net = plan_model(str(gguf)).load_weights()
digest = hashlib.sha256()
for name, tensor in sorted(net.state_dict().items()):
    digest.update(name.encode()); digest.update(tensor.float().numpy().tobytes())
print(json.dumps({"pid": os.getpid(), "asked": asked, "answered": answered, "directory": str(directory),
                  "weights": digest.hexdigest()}))
"""

LLAMA_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_tiny_gguf(path: Path) -> Path:
    """The conftest tiny Llama as a float32 GGUF with llama.cpp's tensor names and a gpt2-style BPE vocabulary."""
    import gguf

    tokenizer = build_tokenizer()
    model = build_model("llama", len(tokenizer))
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokenizer))
    bpe = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in ("<pad>", "<s>", "</s>") else 1 for t in tokens])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in bpe["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for layer in range(config.num_hidden_layers):
        names.update({f"model.layers.{layer}.{hf}.weight": f"blk.{layer}.{ours}.weight" for hf, ours in LLAMA_NAMES.items()})
    for name, tensor in model.state_dict().items():
        writer.add_tensor(names[name], tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_processes_converting_one_gguf_at_once_convert_it_once(tmp_path):
    gguf_file = write_tiny_gguf(tmp_path / "tiny-gguf.gguf")
    cache = tmp_path / "cache"
    env = {**os.environ, "ACTSTORE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(gguf_file), str(r), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a process did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    log = [json.loads(line) for line in (cache / "models" / "conversions.jsonl").read_text().splitlines()]
    assert len(log) == 1, log  # one conversion on this machine
    conversion = log[0]
    assert conversion["pid"] in {s["pid"] for s in seen}
    # every process asked while the conversion was under way, so without the lock each would have converted
    assert all(s["asked"] < conversion["finished"] for s in seen), (seen, conversion)
    assert all(s["answered"] >= conversion["finished"] - 0.01 for s in seen)  # the others waited for it
    assert len({s["directory"] for s in seen}) == 1 and len({s["weights"] for s in seen}) == 1
    models = cache / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == [Path(seen[0]["directory"]).name]  # no staging left
    with open(gguf_file, "rb") as handle:
        assert conversion["sha256"] == hashlib.sha256(handle.read()).hexdigest()
