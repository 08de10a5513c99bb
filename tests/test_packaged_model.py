"""The real packaged Gemma 3 270M: stored states equal its own hidden_states; the lens reproduces its logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.lens import logits as lens_logits
from activation_store.extract.models import resolve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    _, directory, _ = resolve("gemma3-270m")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma")
    out = {}
    for dtype in ("bfloat16", "float32"):
        out[dtype] = str(root / f"{dtype}.zarr")
        actstore.extract(model="gemma3-270m", dataset="django-ui", store=out[dtype], variants=["en", "zh", "ru"],
                         limit=4, dtype=dtype, batch_size=4, progress=False)
    return out


def own_outputs(gemma, ids):
    model, _ = gemma
    with torch.no_grad():
        result = model(torch.tensor([ids]), output_hidden_states=True)
    return torch.stack(result.hidden_states)[:, 0].numpy(), result.logits[0].numpy()


def test_every_layer_and_token_matches(gemma, stores):
    for dtype, store in stores.items():
        ds = actstore.open_run(store, "gemma3-270m", "django-ui")
        assert ds.sizes["layer"] == 19 and ds.sizes["d_model"] == 640 and ds.sizes["example"] == 12
        worst = 0.0
        for example in range(ds.sizes["example"]):
            offset, count = int(ds.token_offset[example]), int(ds.token_count[example])
            ids = ds.token_id.values[offset:offset + count].tolist()
            assert ids[0] == gemma[1].bos_token_id
            states, _ = own_outputs(gemma, ids)
            stored = ds.hidden.isel(token=slice(offset, offset + count)).values
            assert np.isfinite(stored).all()
            # batched vs single-example float32 arithmetic differs by ~1e-6 of each vector's largest entry;
            # bfloat16 storage adds its rounding, at most 2^-8 of the value itself
            vector_scale = np.abs(states).max(axis=-1, keepdims=True)
            rounding = np.abs(states) * 2.0**-8 if dtype == "bfloat16" else 0.0
            difference = np.abs(stored - states)
            assert (difference <= rounding + 1e-5 * vector_scale).all(), f"{dtype} example {example}"
            worst = max(worst, float((difference / vector_scale).max()))
        print(f"{dtype}: max difference to the model's own hidden_states, relative to the vector's scale: {worst:.2e}")
    # the real model's states overflow float16 (|h| ~ 1e5) and are still stored finite
    ds = actstore.open_run(stores["bfloat16"], "gemma3-270m", "django-ui")
    assert float(abs(ds.hidden).max()) > 65504


def test_lens_reproduces_logits(gemma, stores):
    ds = actstore.open_run(stores["float32"], "gemma3-270m", "django-ui")
    lens = actstore.open_lens(stores["float32"], "gemma3-270m")
    assert ds.final_norm_applied.values.tolist() == [False] * 18 + [True]
    assert lens.attrs["final_norm"]["convention"] == "1+weight"
    worst = 0.0
    for example in range(ds.sizes["example"]):
        offset, count = int(ds.token_offset[example]), int(ds.token_count[example])
        _, own = own_outputs(gemma, ds.token_id.values[offset:offset + count].tolist())
        got = lens_logits(ds.hidden.isel(layer=-1, token=slice(offset, offset + count)), lens).values
        worst = max(worst, float(np.abs(got - own).max()))
    print(f"lens on stored last layer vs model logits: max abs difference {worst:.2e}")
    assert worst < 1e-3
