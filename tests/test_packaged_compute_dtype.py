"""The packaged Gemma 3 270M in half precision: bfloat16 states equal its own, float16 overflows and is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.errors import ActstoreError
from activation_store.extract.models import resolve

pytestmark = pytest.mark.slow


def test_bfloat16_compute_equals_gemmas_own_bfloat16_states(tmp_path):
    store = str(tmp_path / "bf16.zarr")
    actstore.extract(model="gemma3-270m", dataset="django-ui", store=store, variants=["en", "zh"], limit=3,
                     dtype="float32", compute_dtype="bfloat16", device="cpu", batch_size=3, progress=False)
    run = actstore.open_run(store, "gemma3-270m", "django-ui")
    stored = np.asarray(run["hidden"].values)
    _, directory, _ = resolve("gemma3-270m")
    net = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    rows = []
    for text in run["text"].values:  # each example alone: the model's own forward, no padding
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(str(text), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            rows.append(torch.stack(net.model(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0].float())
    reference = torch.cat(rows, dim=1).numpy()
    scale = np.abs(reference).max(axis=(1, 2), keepdims=True)  # per layer: |h| reaches ~1e5 at some positions
    assert np.all(np.abs(stored - reference) <= scale * 2 ** -6 + np.abs(reference) * 2 ** -5)


def test_float16_compute_overflows_and_nothing_is_stored(tmp_path):
    store = tmp_path / "f16.zarr"
    with pytest.raises(ActstoreError, match=r"inf/NaN hidden states at layer \d+ in float16 compute .*65504"):
        actstore.extract(model="gemma3-270m", dataset="django-ui", store=str(store), variants=["en"], limit=4,
                         compute_dtype="float16", device="cpu", progress=False)
    assert not store.exists()
