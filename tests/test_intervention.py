"""Recorded interventions: deltas from the store equal deltas of the model run directly with the same hook.

The reference path is plain torch: the tiny model example by example, a forward
hook on its decoder layer l−1 adding coefficient × vector at the last prompt
position, log-softmax of the model's own logits. No actstore code is in it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.intervention import forecast_states, lens_forecast, per_example, set_ids
from activation_store.workflows.steering import define_vector
from activation_store.extract.interventions import InterventionSpec, record_interventions
from activation_store.extract.spec import RunSpec
from activation_store.store.interventions import open_recorded

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs: two torch threads fight on two cores

ROWS = [
    {"id": "cat", "en": "The cat sits on the table.", "fr": "Le chat est assis sur la table."},
    {"id": "pw", "en": "Change my password", "fr": "Modifier mon mot de passe"},
    {"id": "sum", "en": "five plus three", "fr": "cinq plus trois"},
    {"id": "mul", "en": "twelve times two", "fr": "douze fois deux"},
    {"id": "code", "en": "add a and b", "fr": "ajouter a et b"},
]
TARGETS = {"the": [" t", "The"], "table": [" table"], "chat": ["Le", "hat"]}
COEFFICIENTS = [0.0, 1.0, 4.0]
LAYER = 2
GENERATE = 3


def decoder_layers(model):
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


@pytest.fixture(scope="module", params=["llama", "gemma3", "gpt2"])
def recorded(request, tiny_model_dir, tmp_path_factory):
    model_dir = tiny_model_dir(request.param)
    root = tmp_path_factory.mktemp(f"intervene-{request.param}")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    targets = root / "targets.json"
    targets.write_text(json.dumps(TARGETS), encoding="utf-8")
    store = str(root / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=store, dtype="float32", batch_size=4, progress=False)
    name = model_dir.name
    _, vector, _ = define_vector(store, name, "en-fr", LAYER, from_states="pairs:variant=en", minus="pairs:variant=fr")
    vector = vector * 20  # the tiny model's mean difference is small; make the deltas large enough to matter
    np.save(root / "v.npy", vector)
    define_vector(store, name, "en-fr-x20", LAYER, from_file=str(root / "v.npy"))
    np.save(root / "zero.npy", np.zeros_like(vector))
    define_vector(store, name, "zero", LAYER, from_file=str(root / "zero.npy"))
    vocab = len(AutoTokenizer.from_pretrained(model_dir))
    for vec in ("en-fr-x20", "zero"):
        record_interventions(RunSpec(str(model_dir), str(data), store, batch_size=4, progress=False),
                             InterventionSpec(vec, COEFFICIENTS, target_tokens=str(targets), top_k=vocab, generate=GENERATE))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tokenizer, store, name, vector


def reference(model, tokenizer, vector, coefficient, text, steps):
    """Next-token log-probs at the last position and a greedy continuation, steered, in plain torch."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    last = len(ids) - 1
    v = torch.tensor(vector)

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, last] += coefficient * v
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = decoder_layers(model)[LAYER - 1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            first = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
            generated, current = [], list(ids)
            for _ in range(steps):
                token = int(model(torch.tensor([current])).logits[0, -1].argmax())
                generated.append(token)
                current.append(token)
    finally:
        handle.remove()
    return first.numpy(), generated


def test_deltas_equal_direct(recorded):
    model, tokenizer, store, name, vector = recorded
    ds = open_recorded(store, name, "pairs", "en-fr-x20")
    lens = actstore.open_lens(store, name)
    ids = set_ids(ds, TARGETS, lens.vocab_token.values)
    per = per_example(ds, ids)
    vocab = {t: i for i, t in reversed(list(enumerate(lens.vocab_token.values)))}
    for e, text in enumerate(ds.text.values):
        base, base_gen = reference(model, tokenizer, vector, 0.0, str(text), GENERATE)
        for c, coefficient in enumerate(COEFFICIENTS):
            steered, generated = reference(model, tokenizer, vector, coefficient, str(text), GENERATE)
            kl = float((np.exp(base) * (base - steered)).sum())
            assert abs(float(per.kl[c, e]) - kl) < 1e-4, (c, e, float(per.kl[c, e]), kl)
            assert per.top1_changed[c, e] == float(steered.argmax() != base.argmax())
            for s, members in TARGETS.items():
                lp = lambda logp: np.logaddexp.reduce(logp[[vocab[m] for m in members]])  # noqa: E731
                assert abs(float(per.delta_logprob.sel(set=s)[c, e]) - (lp(steered) - lp(base))) < 1e-4
                assert abs(float(per.delta_prob.sel(set=s)[c, e]) - (np.exp(lp(steered)) - np.exp(lp(base)))) < 1e-4
            assert ds.generated_id.values[c, 0, e].tolist() == generated
    assert float(per.kl.isel(condition=2).mean()) > 1e-3   # the vector does something


def test_zero_vector_gives_zero_delta(recorded):
    _, _, store, name, _ = recorded
    ds = open_recorded(store, name, "pairs", "zero")
    lens = actstore.open_lens(store, name)
    per = per_example(ds, set_ids(ds, TARGETS, lens.vocab_token.values))
    for var in ("kl", "top1_changed", "delta_logprob", "delta_prob", "delta_share"):
        assert np.abs(per[var].values).max() < 1e-7, var
    assert (ds.generated_id.values == ds.generated_id.values[:1]).all()


def test_baseline_equals_plain_extraction(recorded):
    _, _, store, name, vector = recorded
    ds = open_recorded(store, name, "pairs", "en-fr-x20")
    run = actstore.open_run(store, name, "pairs")
    np.testing.assert_array_equal(ds.states.isel(condition=0).sel(layer=LAYER).values, run.hidden.sel(layer=LAYER).values)
    np.testing.assert_array_equal(ds.token_id.values, run.token_id.values)
    # the hook sits where hidden_states[LAYER] is read: steered states = baseline + c × v at the last positions only
    last = ds.token_offset.values + ds.token_count.values - 1
    for c, coefficient in enumerate(COEFFICIENTS):
        delta = ds.states.isel(condition=c).sel(layer=LAYER).values - run.hidden.sel(layer=LAYER).values
        np.testing.assert_allclose(delta[last], np.broadcast_to(coefficient * vector, delta[last].shape), atol=1e-4)
        others = np.setdiff1d(np.arange(delta.shape[0]), last)
        assert np.abs(delta[others]).max() == 0


def test_lens_forecast(recorded):
    """The forecast is the logit lens at the vector's layer with and without c × v; the final layer's lens is exact."""
    _, _, store, name, vector = recorded
    ds = open_recorded(store, name, "pairs", "en-fr-x20")
    lens = actstore.open_lens(store, name)
    ids = set_ids(ds, TARGETS, lens.vocab_token.values)
    states = forecast_states(ds, LAYER)
    forecast = lens_forecast(states, lens, vector, ds.coefficient.values, ids, ds.support_id.values)
    assert forecast.kl.shape == (3, len(ds.example)) and np.abs(forecast.kl.isel(condition=0)).max() == 0
    assert float(forecast.kl.isel(condition=2).mean()) > 0
    steered = forecast_states(ds.isel(condition=[2, 0, 1]).assign_coords(coefficient=("condition", [0.0, 1.0, 4.0])), LAYER)
    np.testing.assert_allclose(steered.values, states.values + 4.0 * vector, atol=1e-4)


def test_arithmetic_outcomes_and_shares():
    """The rule sorts "{a+b}={a}+" continuations into b (unchanged), b − 1 (shifted) and other."""
    import xarray as xr

    from activation_store.analyze.intervention import outcome_rule, outcome_shares, outcomes

    texts = np.array([[["3\n", "4", "9"]], [["2\n", "4=", "x"]]], dtype=object)   # (condition, sample, example)
    ds = xr.Dataset({"generated_text": (("condition", "sample", "example"), texts),
                     "generated_id": (("condition", "sample", "example", "step"), np.zeros((2, 1, 3, 2), int))},
                    coords={"condition": [0, 1], "coefficient": ("condition", [0.0, 2.0]),
                            "item": ("example", ["5+3", "1+5", "2+2"])})
    rule = outcome_rule("arithmetic")
    cats = outcomes(ds, rule)
    assert cats.values[:, 0].tolist() == [["unchanged", "shifted", "other"], ["shifted", "shifted", "other"]]
    shares = outcome_shares(cats, rule.categories, n_boot=50)
    np.testing.assert_allclose(shares.share.sel(category="shifted").values, [1 / 3, 2 / 3])
    np.testing.assert_allclose(shares.share.sum("category").values, 1)
    assert outcome_rule("arithmetic:+1")("5+3", "4", "") == "shifted"
