"""Analyses from the store equal direct computations on the model's own states (plain torch/numpy).

The reference path runs the tiny model example by example and computes each
analysis with numpy: no actstore code between the model and the numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.language_mass import language_mass
from activation_store.analyze.lens_readout import readout
from activation_store.analyze.selection import examples_of, tokens_of
from activation_store.analyze.pair_similarity import variant_similarity

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs: two torch threads fight on two cores

ROWS = [json.loads(line) for line in """
{"id": "cat", "en": "The cat sits on the table.", "zh": "猫坐在桌子上。"}
{"id": "pw", "en": "Change my password", "zh": "修改我的密码"}
{"id": "sum", "en": "five plus three", "zh": "五加三"}
{"id": "mul", "en": "twelve times two", "zh": "十二乘以二"}
{"id": "code", "en": "add a and b", "zh": "把a和b相加"}
{"id": "x", "en": "Le chat est assis", "zh": "猫在"}
""".strip().splitlines()]


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def setup(request, tiny_model_dir, tmp_path_factory):
    model_dir = tiny_model_dir(request.param)
    root = tmp_path_factory.mktemp(f"analysis-{request.param}")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS), encoding="utf-8")
    store = str(root / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=store, dtype="float32", batch_size=4, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    own = {}
    for row in ROWS:
        for variant in ("en", "zh"):
            ids = [tokenizer.bos_token_id] + tokenizer(row[variant], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                out = model(torch.tensor([ids]), output_hidden_states=True)
            own[row["id"], variant] = (ids, torch.stack(out.hidden_states)[:, 0])
    return model, store, model_dir.name, own


def reference_score(x: np.ndarray, y: np.ndarray, center: bool) -> float:
    """Eq. 1 the plain way, with the full n×n cosine matrix."""
    if center:
        mean = np.concatenate([x, y]).mean(axis=0)
        x, y = x - mean, y - mean
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    cos = x @ y.T
    n = len(x)
    return np.trace(cos) / n - (cos.sum() - np.trace(cos)) / (n * (n - 1))


@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("center", [True, False])
def test_similarity_equals_direct(setup, pool, center):
    _, store, name, own = setup
    ds = actstore.open_run(store, name, "pairs")
    result = variant_similarity(ds, ["en", "zh"], pool=pool, center=center, n_boot=200)
    items = sorted(r["id"] for r in ROWS)
    pick = (lambda h: h[:, -1]) if pool == "last" else (lambda h: h[:, 1:].mean(dim=1))
    for layer in range(ds.sizes["layer"]):
        x = np.stack([pick(own[i, "en"][1])[layer].double().numpy() for i in items])
        y = np.stack([pick(own[i, "zh"][1])[layer].double().numpy() for i in items])
        expected = reference_score(x, y, center)
        got = float(result.score.sel(pair="en-zh").isel(layer=layer))
        assert abs(got - expected) < 1e-4, (layer, got, expected)
        assert result.ci_low.isel(pair=0, layer=layer) <= got + 1e-12 <= result.ci_high.isel(pair=0, layer=layer) + 1e-9
    assert result.per_item.sizes["item"] == len(items)
    np.testing.assert_allclose(result.per_item.mean("item"), result.score, atol=1e-12)


def lens_reference(model, hidden_states: torch.Tensor) -> torch.Tensor:
    """The model's own modules: final norm (except where hidden_states already has it), LM head, soft-cap."""
    base = model.base_model
    normed = torch.cat([base.norm(hidden_states[:-1]), hidden_states[-1:]])
    logits = model.lm_head(normed)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits


def test_logit_lens_equals_direct(setup):
    model, store, name, own = setup
    ds = actstore.open_run(store, name, "pairs")
    lens = actstore.open_lens(store, name)
    example = int(examples_of(ds, item="cat", variant="zh")[0])
    tokens = tokens_of(ds, np.array([example]))
    ids, states = own["cat", "zh"]
    targets = np.array(ids[1:] + [ids[0]])                   # the next input token, as in next-token prediction
    result = readout(ds.hidden.isel(token=tokens), lens, k=4, targets=xr.DataArray(targets, dims="token"))
    with torch.no_grad():
        logprobs = torch.log_softmax(lens_reference(model, states).double(), dim=-1).numpy()   # (layer, pos, vocab)
    expected_top = np.argsort(-logprobs, axis=-1, kind="stable")[..., :4]
    np.testing.assert_allclose(result.top_prob.values, np.exp(np.take_along_axis(logprobs, expected_top, -1)), atol=1e-4)
    assert (result.top_id.values[..., 0] == expected_top[..., 0]).all()
    target_logprob = np.take_along_axis(logprobs, targets[None, :, None], -1)[..., 0]
    np.testing.assert_allclose(result.target_logprob.values, target_logprob, atol=1e-4)
    expected_rank = (logprobs > target_logprob[..., None]).sum(-1)
    assert (np.abs(result.target_rank.values - expected_rank) <= 1).all()   # ties within float error may swap


def test_language_mass_equals_direct(setup):
    model, store, name, own = setup
    ds = actstore.open_run(store, name, "pairs")
    lens = actstore.open_lens(store, name)
    rng = np.random.default_rng(0)
    table = rng.random((lens.sizes["vocab"], 3)).astype(np.float32)
    table /= table.sum(axis=1, keepdims=True)
    examples = examples_of(ds, variant="zh")
    mass = language_mass(ds.hidden.isel(token=tokens_of(ds, examples)), lens,
                         xr.DataArray(table, dims=("vocab", "language"), coords={"language": ["a", "b", "c"]}))
    per_token = []
    for item in ds["item"].values[examples]:
        with torch.no_grad():
            probs = torch.softmax(lens_reference(model, own[str(item), "zh"][1]).double(), dim=-1).numpy()
        per_token.append(probs @ table.astype(np.float64))      # (layer, pos, language)
    expected = np.concatenate(per_token, axis=1).mean(axis=1)
    np.testing.assert_allclose(mass.transpose("layer", "language").values, expected, atol=1e-4)
