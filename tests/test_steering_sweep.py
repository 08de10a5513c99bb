"""Recorded interventions: cached generation, resuming after an interruption, random controls and the sweep table.

References are plain torch (the tiny model run example by example without a
key-value cache, a forward hook adding the vector) or direct numpy arithmetic
on the recorded arrays."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.intervention import per_example, set_ids
from activation_store.analyze.sweep import effect, parse_metric, residual_norm
from activation_store.errors import ActstoreError
from activation_store.extract import interventions as recorder
from activation_store.extract.interventions import InterventionSpec, record_interventions
from activation_store.extract.spec import RunSpec
from activation_store.store.interventions import open_recorded
from activation_store.store.steering import read_vector
from activation_store.workflows.steering import define_vector
from activation_store.workflows.sweep import define_control, markdown_table, sweep_table, table_verdict

ROWS = [  # lengths differ (padding) and the longest exceed the tiny Gemma 3's sliding window of 16 tokens
    {"id": "cat", "en": "The cat sits on the table. The cat sits on the table. Le chat est assis sur la table."},
    {"id": "pw", "en": "Change my password"},
    {"id": "sum", "en": "five plus three, twelve times two, 5+3, 12*2, def add(a, b): return a + b"},
    {"id": "mul", "en": "twelve times two"},
    {"id": "code", "en": "def add(a, b): return a + b"},
]
LAYER = 2
STEPS = 8
SETS = {"pos": [" t", "The"], "neg": [" table", "Le"]}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    model_dir = tiny_model_dir("gemma3")
    root = tmp_path_factory.mktemp("sweep")
    data = root / "texts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    (root / "sets.json").write_text(json.dumps(SETS), encoding="utf-8")
    store = str(root / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=store, dtype="float32", batch_size=3, progress=False)
    name = model_dir.name
    _, vector, _ = define_vector(store, name, "t-table", LAYER, from_unembedding=" t", minus=" table")
    return model_dir, root, data, store, name, vector


def uncached(model, tokenizer, vector, coefficient, text, steps, positions):
    """Greedy continuation in plain torch, the whole sequence rerun each step (no cache), steered by a hook."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    n = len(ids)
    v = torch.tensor(vector)

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        if positions == "all":
            hidden[:, :] += coefficient * v
        else:
            hidden[:, n - 1] += coefficient * v
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[LAYER - 1].register_forward_hook(hook)
    try:
        current = list(ids)
        with torch.no_grad():
            for _ in range(steps):
                current.append(int(model(torch.tensor([current]), use_cache=False).logits[0, -1].argmax()))
    finally:
        handle.remove()
    return current[n:]


@pytest.mark.parametrize("positions", ["last", "all"])
def test_cached_generation_equals_uncached(setup, positions):
    model_dir, root, data, store, name, vector = setup
    coefficients = [0.0, 60.0]
    record_interventions(RunSpec(str(model_dir), str(data), store, batch_size=3, progress=False, overwrite=True),
                         InterventionSpec("t-table", coefficients, positions=positions, generate=STEPS))
    ds = open_recorded(store, name, "texts", "t-table")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    differs = 0
    for c, coefficient in enumerate(coefficients):
        for e, text in enumerate(ds.text.values):
            expected = uncached(model, tokenizer, vector, coefficient, str(text), STEPS, positions)
            assert ds.generated_id.values[c, 0, e].tolist() == expected, (positions, c, e)
            differs += expected != ds.generated_id.values[0, 0, e].tolist()
    assert differs  # the vector changes some continuation: the comparison covers steered generation


def test_resume_after_interruption(setup, tmp_path, monkeypatch):
    """A run killed after two condition blocks resumes with them and recomputes only the rest; same arrays."""
    model_dir, root, data, store, name, _ = setup
    define_vector(store, name, "resume", LAYER, from_unembedding=" t", minus=" table")
    spec = RunSpec(str(model_dir), str(data), store, batch_size=3, progress=False)
    steering = InterventionSpec("resume", [0, 1, 2, 4], positions="last", generate=3, target_tokens=str(root / "sets.json"))
    real_write, computed = recorder.write_partial, []

    def killed_after_two(store_, path, hash_, condition, block):
        if len(computed) == 2:
            raise KeyboardInterrupt  # the process dies between blocks
        real_write(store_, path, hash_, condition, block)
        computed.append(condition)

    monkeypatch.setattr(recorder, "write_partial", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        record_interventions(spec, steering)
    with pytest.raises(ActstoreError, match="no recorded intervention"):
        open_recorded(store, name, "texts", "resume")   # an interrupted run is no recorded run
    monkeypatch.setattr(recorder, "write_partial", lambda *a: (real_write(*a), computed.append(a[3])))
    result = record_interventions(spec, steering)
    assert computed == [0, 1, 2, 3] and "resumed: 2 of 4" in result.status
    fresh = str(tmp_path / "fresh.zarr")
    actstore.extract(model=str(model_dir), dataset=str(data), store=fresh, dtype="float32", batch_size=3, progress=False)
    define_vector(fresh, name, "resume", LAYER, from_unembedding=" t", minus=" table")
    record_interventions(replace(spec, store=fresh), steering)
    resumed, again = open_recorded(store, name, "texts", "resume"), open_recorded(fresh, name, "texts", "resume")
    for var in ("support_id", "logprob", "top_id", "target_logprob", "generated_id", "states"):
        np.testing.assert_array_equal(resumed[var].values, again[var].values, err_msg=var)
    assert record_interventions(spec, steering).status == "already complete"


def test_random_control(setup, cli):
    _, _, _, store, name, vector = setup
    control = define_control(store, name, "t-table", seed=3)
    a = read_vector(actstore.Store.open(store), name, control)
    assert a.layer == LAYER and a.attrs["method"] == "random" and a.attrs["seed"] == 3
    assert abs(np.linalg.norm(a.vector) - np.linalg.norm(vector)) < 1e-4
    assert abs(float(a.vector @ vector) / np.linalg.norm(vector) ** 2) < 0.9   # not the vector itself
    again = define_vector(store, name, "again", None, random_like="t-table", seed=3)[1]
    other = define_vector(store, name, "other", None, random_like="t-table", seed=4)[1]
    np.testing.assert_array_equal(again, a.vector)
    assert not np.allclose(other, a.vector)
    done = cli("steering", "define", "--store", store, "--model", name, "--name", "r9", "--random-like", "t-table",
               "--seed", "9")
    assert done.returncode == 0 and f"layer {LAYER}" in done.stdout, done.stderr


@pytest.mark.parametrize("args,message", [
    (["--random-like", "t-table"], "--random-like NAME takes --seed S"),
    (["--random-like", "nope", "--seed", "1"], "no steering vector 'nope'"),
    (["--random-like", "t-table", "--seed", "1", "--layer", "1"], "sits at its vector's layer"),
    (["--from-unembedding", " t", "--seed", "1", "--layer", "1"], "--seed goes with --random-like"),
    (["--from-unembedding", " t"], "--layer is required"),
])
def test_random_control_bad_input(setup, cli, args, message):
    _, _, _, store, name, _ = setup
    before = sorted(str(p) for p in Path(store).rglob("*"))
    done = cli("steering", "define", "--store", store, "--model", name, "--name", "bad", *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert sorted(str(p) for p in Path(store).rglob("*")) == before


def test_sweep_table(setup, cli, tmp_path):
    """Effects equal the recorded deltas; relative strength is c × |v| / median |h| of the stored run's states."""
    model_dir, root, data, store, name, vector = setup
    control = define_control(store, name, "t-table", seed=0)
    targets = str(root / "sets.json")
    spec = RunSpec(str(model_dir), str(data), store, batch_size=3, progress=False, overwrite=True)
    for vec in ("t-table", control):
        record_interventions(spec, InterventionSpec(vec, [0, 2, 8], positions="last", target_tokens=targets))
    table = sweep_table(store, name, "texts", [("t-table", control)], "diff:pos,neg", targets, n_boot=200)
    assert table.coefficient.tolist() == [2.0, 8.0] and (table.layer == LAYER).all() and (table.n_items == 5).all()
    ds = open_recorded(store, name, "texts", "t-table")
    per = per_example(ds, set_ids(ds, SETS, actstore.open_lens(store, name).vocab_token.values))
    direct = (per.delta_logprob.sel(set="pos") - per.delta_logprob.sel(set="neg")).mean("example").values
    np.testing.assert_allclose(table.effect.values, direct[1:], atol=1e-9)
    assert ((table.effect_low <= table.effect) & (table.effect <= table.effect_high)).all()
    run = actstore.open_run(store, name, "texts")
    h = run.hidden.sel(layer=LAYER).values[run.position.values > 0]
    median = np.median(np.linalg.norm(h.astype(np.float64), axis=-1))
    np.testing.assert_allclose(table.relative_strength.values, np.array([2, 8]) * np.linalg.norm(vector) / median, rtol=1e-5)
    assert table.forecast.notna().all() and table.control_effect.notna().all()
    assert table.effect.iloc[1] > 0    # W_U(" t") − W_U(" table") raises " t" against " table" at the last position
    assert "| t-table | 2 | 8 |" in markdown_table(table)
    done = cli("analyze", "sweep", "--store", store, "--model", name, "--dataset", "texts", "--vector", "t-table",
               "--control", control, "--target-tokens", targets, "--metric", "share:pos,neg", "--bootstrap", "50",
               "--out", tmp_path)
    assert done.returncode == 0 and "random control" in done.stdout, done.stderr
    bad = cli("analyze", "sweep", "--store", store, "--model", name, "--dataset", "texts", "--vector", "t-table",
              "--target-tokens", targets, "--metric", "share:pos,nope")
    assert bad.returncode == 2 and "no" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_metrics_and_verdict():
    import pandas as pd
    import xarray as xr

    lp = np.log(np.array([[[0.2, 0.2]], [[0.4, 0.1]]]))  # (condition, example, set)
    per = xr.Dataset({"set_logprob": (("condition", "example", "set"), lp), "kl": (("condition", "example"), [[0.0], [0.3]])},
                     coords={"condition": [0, 1], "coefficient": ("condition", [0.0, 5.0]), "set": ["pos", "neg"],
                             "item": ("example", ["a"])})
    np.testing.assert_allclose(effect(per, "diff:pos,neg").values[:, 0], [0, np.log(4)])
    np.testing.assert_allclose(effect(per, "share:pos,neg").values[:, 0], [0, 0.6])
    np.testing.assert_allclose(effect(per, "prob:pos").values[:, 0], [0, 0.2])
    for bad in ("share:pos", "diff", "foo:a,b", "prob:a,b"):
        with pytest.raises(ActstoreError, match="--metric"):
            parse_metric(bad)
    with pytest.raises(ActstoreError, match="no target set 'x'"):
        effect(per, "prob:x")
    assert residual_norm(xr.DataArray([[3.0, 4.0], [6.0, 8.0], [0.0, 1.0]], dims=("token", "d_model"))) == 5.0
    row = dict(vector="v", control="r", layer=1, positions="last", coefficient=1.0, relative_strength=0.1,
               forecast=0.1, forecast_low=0, forecast_high=0.2, n_items=10)
    table = pd.DataFrame([{**row, "effect": 0.2, "effect_low": 0.1, "effect_high": 0.3, "control_effect": 0.0,
                           "control_low": -0.1, "control_high": 0.1},
                          {**row, "coefficient": 2.0, "effect": 0.5, "effect_low": 0.4, "effect_high": 0.6,
                           "control_effect": 0.3, "control_low": 0.2, "control_high": 0.4}])
    found = table_verdict(table, +1)
    assert found["shown"] and found["row"].coefficient == 1.0   # coefficient 2's control shows the effect too
    assert not table_verdict(table, -1)["shown"]


def test_explicit_builtin_signatures():
    """range/slice/getattr… have no inspectable signature: the code dataset's table names their parameters,
    range's by argument count (range(stop) vs range(start, stop[, step]))."""
    from activation_store.extract.datasets.code import annotate

    source = "range(n)\nrange(1, n)\nrange(0, n, 2)\ngetattr(o, name)\nslice(k)\n"
    marks = [(source[:m.char].count("\n"), m.target, m.alternatives) for m in annotate(source)]
    assert marks == [(0, "stop", ("n",)), (1, "start", ("1",)), (1, " stop", (" n",)), (2, "start", ("0",)),
                     (2, " stop", (" n",)), (2, " step", (" 2",)), (3, "object", ("o",)), (4, "stop", ("k",))]
