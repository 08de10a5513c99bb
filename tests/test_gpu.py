"""Extraction on a CUDA device, checked against the model's own forward on that device.

Skipped where no CUDA device is present (CI has none); ``benchmarks/gpu_check.sh`` runs this file on a GPU
machine. The CPU side of every device option is covered by ``test_devices.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import actstore

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def stored(store: str, model: str, dataset: str) -> np.ndarray:
    return np.asarray(actstore.open_run(store, model, dataset)["hidden"].values, dtype=np.float32)


def compute_block(store: str, model: str, dataset: str) -> dict:
    return dict(zarr.open_group(store, mode="r", use_consolidated=False)[f"{model}/{dataset}"].attrs)["provenance"][
        "compute"]


def own_states(model_dir, texts, dtype: torch.dtype, device: str) -> np.ndarray:
    """Each example alone (no padding) through the model's own forward: (layers, tokens, d_model) float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    rows = []
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(str(text), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            states = net.model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True).hidden_states
        rows.append(torch.stack(states)[:, 0].float().cpu())
    return torch.cat(rows, dim=1).numpy()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cuda_float32_states_equal_the_models_own_on_the_device(arch, tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir(arch)
    store = str(tmp_path / "cuda.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, dtype="float32",
                     device="cuda", compute_dtype="float32", batch_size=4, progress=False)
    states = stored(store, model_dir.name, "pairs")
    texts = actstore.open_run(store, model_dir.name, "pairs")["text"].values
    reference = own_states(model_dir, texts, torch.float32, "cuda")
    scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(states, reference, rtol=1e-4, atol=float(scale.max()) * 1e-5)
    compute = compute_block(store, model_dir.name, "pairs")
    assert compute["device"].startswith("cuda") and compute["compute_dtype"] == "float32"


def test_cuda_bfloat16_states_equal_the_models_own_bfloat16_states(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("gemma3")
    store = str(tmp_path / "bf16.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cuda",
                     compute_dtype="bfloat16", batch_size=4, progress=False)
    states = stored(store, model_dir.name, "pairs")
    texts = actstore.open_run(store, model_dir.name, "pairs")["text"].values
    reference = own_states(model_dir, texts, torch.bfloat16, "cuda")
    scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(states, reference, rtol=2 ** -5, atol=float(scale.max()) * 2 ** -7)
    assert compute_block(store, model_dir.name, "pairs")["compute_dtype"] == "bfloat16"


def test_cuda_run_equals_the_cpu_run_within_float32_rounding(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    common = dict(model=str(model_dir), dataset=str(parallel_jsonl), dtype="float32", compute_dtype="float32",
                  batch_size=4, progress=False)
    actstore.extract(store=str(tmp_path / "cpu.zarr"), device="cpu", **common)
    actstore.extract(store=str(tmp_path / "gpu.zarr"), device="cuda", **common)
    cpu, gpu = (stored(str(tmp_path / f"{d}.zarr"), model_dir.name, "pairs") for d in ("cpu", "gpu"))
    scale = np.abs(cpu).max()
    assert np.abs(cpu - gpu).max() <= scale * 1e-4


def test_device_map_auto_on_cuda_equals_the_plain_cuda_run(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    common = dict(model=str(model_dir), dataset=str(parallel_jsonl), dtype="float32", compute_dtype="float32",
                  batch_size=4, progress=False)
    actstore.extract(store=str(tmp_path / "plain.zarr"), device="cuda", **common)
    actstore.extract(store=str(tmp_path / "mapped.zarr"), device_map="auto", **common)
    placement = compute_block(str(tmp_path / "mapped.zarr"), model_dir.name, "pairs")["device_map"]
    assert placement and {str(v) for v in placement.values()} <= {"0", "cuda:0"}, placement
    np.testing.assert_array_equal(stored(str(tmp_path / "mapped.zarr"), model_dir.name, "pairs"),
                                  stored(str(tmp_path / "plain.zarr"), model_dir.name, "pairs"))


def test_auto_batch_size_on_cuda_is_recorded_and_resumes(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "auto.zarr")
    common = dict(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cuda", batch_size="auto",
                  progress=False)
    actstore.extract(**common)
    assert compute_block(store, model_dir.name, "pairs")["batch_size"].startswith("auto: ")
    assert actstore.extract(**common).status == "already complete"
