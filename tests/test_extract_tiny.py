"""Extraction on tiny random models: stored states equal the model's own, the lens reproduces its logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.lens import logits as lens_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs: two torch threads fight on two cores

ARCHS = ["llama", "gemma3", "gpt2"]


def reference_states(model_dir, texts, bos=True):
    """Each text alone through the model (no batching, no padding): ids and hidden_states per layer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = ([tokenizer.bos_token_id] if bos else []) + tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            result = model(torch.tensor([ids]), output_hidden_states=True)
        out.append((ids, torch.stack(result.hidden_states)[:, 0].numpy(), result.logits[0].numpy()))
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_stored_states_equal_model_states(tiny_model_dir, parallel_jsonl, tmp_path, arch, dtype):
    model_dir = tiny_model_dir(arch)
    store = str(tmp_path / "acts.zarr")
    result = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, dtype=dtype,
                              batch_size=3, chunk_tokens=16, progress=False)
    assert result.status == "written" and result.examples == 15
    ds = actstore.open_run(store, model_dir.name, "pairs")
    reference = reference_states(model_dir, list(ds.text.values))
    assert ds.hidden.dtype == np.float32
    for example, (ids, states, _) in enumerate(reference):
        offset, count = int(ds.token_offset[example]), int(ds.token_count[example])
        assert ds.token_id.values[offset:offset + count].tolist() == ids
        stored = ds.hidden.isel(token=slice(offset, offset + count)).values
        assert stored.shape == states.shape
        if dtype == "float32":
            np.testing.assert_allclose(stored, states, rtol=1e-5, atol=1e-5)
        else:  # within bfloat16 rounding of the model's own value (2^-8 relative), never inf
            assert np.isfinite(stored).all()
            assert (np.abs(stored - states) <= np.abs(states) * 2.0**-8 + 1e-6).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_on_last_layer_reproduces_model_logits(tiny_model_dir, parallel_jsonl, tmp_path, arch):
    model_dir = tiny_model_dir(arch)
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, dtype="float32", progress=False)
    ds = actstore.open_run(store, model_dir.name, "pairs")
    lens = actstore.open_lens(store, model_dir.name)
    applied = ds.final_norm_applied.values
    assert not applied[:-1].any(), "only the last layer may already be normed"
    reference = reference_states(model_dir, list(ds.text.values))
    worst = 0.0
    for example, (_, _, model_logits) in enumerate(reference):
        offset, count = int(ds.token_offset[example]), int(ds.token_count[example])
        last = ds.hidden.isel(layer=-1, token=slice(offset, offset + count))
        got = lens_logits(last, lens).values
        worst = max(worst, float(np.abs(got - model_logits).max()))
    print(f"{arch}: lens vs model logits, max abs difference {worst:.2e}")
    assert worst < 1e-4


def test_lens_head_records_norm_convention(tiny_model_dir, parallel_jsonl, tmp_path):
    conventions = {}
    for arch in ARCHS:
        store = str(tmp_path / f"{arch}.zarr")
        actstore.extract(model=str(tiny_model_dir(arch)), dataset=str(parallel_jsonl), store=store, limit=1, progress=False)
        lens = actstore.open_lens(store, tiny_model_dir(arch).name)
        conventions[arch] = (lens.attrs["final_norm"]["kind"], lens.attrs["final_norm"]["convention"],
                             lens.attrs["final_logit_softcapping"])
    assert conventions == {"llama": ("rmsnorm", "weight", None), "gemma3": ("rmsnorm", "1+weight", 30.0),
                           "gpt2": ("layernorm", "weight", None)}


def test_layout_slices(tiny_model_dir, parallel_jsonl, tmp_path):
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(tiny_model_dir("llama")), dataset=str(parallel_jsonl), store=store,
                     variants=["zh", "en"], progress=False)
    ds = actstore.open_run(store, tiny_model_dir("llama").name, "pairs")
    # variant-major order: one variant is one contiguous slice, pairs share `item`
    assert list(ds.variant.values) == ["zh"] * 5 + ["en"] * 5
    assert list(ds["item"].values[:5]) == list(ds["item"].values[5:])
    assert ds.hidden.sizes["layer"] == 4 and ds.hidden.sel(layer=2).dims == ("token", "d_model")
    assert (np.diff(ds.token_example.values) >= 0).all()
    last = (ds.token_offset + ds.token_count - 1).values
    assert (ds.position.values[last] == ds.token_count.values - 1).all()
    assert (ds.modality.values == "text").all()
    tree = actstore.open(store)
    assert isinstance(tree, __import__("xarray").DataTree)
