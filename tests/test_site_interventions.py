"""Steering at a site: a vector added to what the attention or MLP sublayer adds, recorded like a block-output run.

The reference is plain torch: a forward hook on the sublayer module of block LAYER − 1 named here per family
(Gemma's post-sublayer norms, whose outputs are what gets added), adding coefficient × vector at the last
prompt position. No actstore code is in it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.extract.interventions import InterventionSpec, record_interventions
from activation_store.extract.spec import RunSpec
from activation_store.store.interventions import open_recorded
from activation_store.workflows.steering import define_vector
from trees import tree_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {"id": "cat", "en": "The cat sits on the table.", "fr": "Le chat est assis sur la table."},
    {"id": "pw", "en": "Change my password", "fr": "Modifier mon mot de passe"},
    {"id": "sum", "en": "five plus three", "fr": "cinq plus trois"},
]
COEFFICIENTS = [0.0, 1.0, 4.0]
LAYER = 2
SUBLAYERS = {  # family → site → the module of a block whose output is what that sublayer adds
    "llama": {"attn_out": "self_attn", "mlp_out": "mlp"},
    "gemma3": {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"},
    "gpt2": {"attn_out": "attn", "mlp_out": "mlp"},
}


def block(model, index):
    return (model.transformer.h if hasattr(model, "transformer") else model.model.layers)[index]


@pytest.fixture(scope="module", params=sorted(SUBLAYERS))
def recorded(request, tiny_model_dir, tmp_path_factory):
    family = request.param
    model_dir = tiny_model_dir(family)
    root = tmp_path_factory.mktemp(f"site-steer-{family}")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    store = str(root / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=store, dtype="float32", batch_size=2, progress=False)
    name = model_dir.name
    _, vector, _ = define_vector(store, name, "en-fr", LAYER, from_states="pairs:variant=en", minus="pairs:variant=fr")
    np.save(root / "v.npy", vector * 20)  # the tiny model's mean difference is small
    define_vector(store, name, "v", LAYER, from_file=str(root / "v.npy"))
    vocab = len(AutoTokenizer.from_pretrained(model_dir))
    for site in ("resid_post", "attn_out", "mlp_out"):
        record_interventions(RunSpec(str(model_dir), str(data), store, batch_size=2, progress=False),
                             InterventionSpec("v", COEFFICIENTS, top_k=vocab, site=site, generate=2))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return family, model, AutoTokenizer.from_pretrained(model_dir), store, name, vector * 20, str(model_dir), str(data)


def reference(model, tokenizer, module, vector, coefficient, text):
    """Next-token log-probs at the last position with ``module``'s output steered there, in plain torch."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    v = torch.tensor(vector)

    def hook(_module, _inputs, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[:, len(ids) - 1] += coefficient * v
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()
    finally:
        handle.remove()


def stored_logprobs(ds, condition, example):
    """One condition's recorded next-token log-probs of one example, over the whole vocabulary (top_k = vocab)."""
    out = np.full(ds.sizes["rank"], np.nan)
    out[ds.top_id.values[condition, example]] = ds.top_logprob.values[condition, example]
    return out


@pytest.mark.parametrize("site", ["attn_out", "mlp_out"])
def test_steering_at_a_sublayer_equals_a_hook_on_it(recorded, site):
    family, model, tokenizer, store, name, vector, _, _ = recorded
    ds = open_recorded(store, name, "pairs", "v", site=site)
    module = getattr(block(model, LAYER - 1), SUBLAYERS[family][site])
    for e, text in enumerate(ds.text.values):
        for c, coefficient in enumerate(COEFFICIENTS):
            expected = reference(model, tokenizer, module, vector, coefficient, str(text))
            np.testing.assert_allclose(stored_logprobs(ds, c, e), expected, atol=1e-4, err_msg=f"{site} c={c} e={e}")
    assert np.abs(stored_logprobs(ds, 2, 0) - stored_logprobs(ds, 0, 0)).max() > 1e-3  # the vector does something


def test_mlp_out_is_the_last_addition_and_attn_out_is_not(recorded):
    """The MLP's output is added last in a block, so steering it equals steering the block's output; the
    attention's passes through the MLP first, so steering it does not."""
    _, _, _, store, name, _, _, _ = recorded
    resid, mlp, attn = (open_recorded(store, name, "pairs", "v", site=s) for s in ("resid_post", "mlp_out", "attn_out"))
    np.testing.assert_allclose(mlp.top_logprob.values, resid.top_logprob.values, atol=1e-4)
    np.testing.assert_array_equal(mlp.generated_id.values, resid.generated_id.values)
    np.testing.assert_allclose(mlp.states.values, resid.states.values, atol=1e-5)
    # steered at the attention, the block's output moves by c × v plus the MLP's answer to it
    moved = np.abs(attn.states.values[2] - resid.states.values[2]).max()
    assert moved > 1e-3
    np.testing.assert_array_equal(attn.states.values[0], resid.states.values[0])  # the baselines agree


def test_the_site_is_recorded(recorded):
    _, _, _, store, name, _, _, _ = recorded
    at_mlp = open_recorded(store, name, "pairs", "v@mlp_out")
    assert at_mlp.attrs["site"] == "mlp_out" and at_mlp.attrs["config"]["site"] == "mlp_out"
    plain = open_recorded(store, name, "pairs", "v")
    assert plain.attrs["site"] == "resid_post" and "site" not in plain.attrs["config"]  # older runs keep their hash
    assert at_mlp.attrs["config_hash"] != plain.attrs["config_hash"]


def test_a_site_that_cannot_be_steered_is_one_line_and_writes_nothing(recorded, cli):
    _, _, _, store, _, _, model_dir, data = recorded
    before = tree_hash(store)
    common = ("extract", "--model", model_dir, "--dataset", data, "--store", store, "--quiet")
    bad = cli(*common, "--intervene", "v", "--coefficients", "0,1", "--steer-site", "mlp_in")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert "--steer-site must be one of resid_post, attn_out, mlp_out, got 'mlp_in'" in lines[0]
    alone = cli(*common, "--steer-site", "attn_out")
    assert alone.returncode != 0 and "--steer-site goes with --intervene VECTOR" in alone.stderr
    assert tree_hash(store) == before
