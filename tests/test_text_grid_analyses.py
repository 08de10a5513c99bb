"""The text-grid analyses from the store equal direct torch/numpy computations on a tiny model's own states."""
from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch
import xarray as xr
from transformers import AutoModelForCausalLM, AutoTokenizer

import actstore
from activation_store.analyze.baseline_similarity import variant_baseline_similarity
from activation_store.analyze.lens_readout import readout
from activation_store.analyze.selection import examples_of, last_tokens, tokens_of
from activation_store.analyze.targets_compare import candidate_logprobs, marked_tokens, role_confusion, target_margin
from activation_store.analyze.trajectories import DIGITS, anchored_pca, number_anchors
from activation_store.errors import ActstoreError
from activation_store.workflows.results import load_from_store


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def setup(request, tiny_model_dir, tmp_path_factory):
    model_dir = tiny_model_dir(request.param)
    store = str(tmp_path_factory.mktemp(f"grid-{request.param}") / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset="semantics", store=store, limit=10, dtype="float32", batch_size=8,
                     progress=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ds = actstore.open_run(store, model_dir.name, "semantics")
    own = {}
    for example in range(ds.sizes["example"]):
        ids = [tokenizer.bos_token_id] + tokenizer(str(ds.text.values[example]), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            own[example] = torch.stack(model(torch.tensor([ids]), output_hidden_states=True).hidden_states)[:, 0]
    return model, store, model_dir.name, own


def direct_logprobs(model, states: torch.Tensor, mode: str) -> np.ndarray:
    """(layer, position, vocab) log-probs: the model's own final norm (normed) or none (raw) on all but the
    last layer, which HF already returns normed; then its LM head and soft-cap."""
    inner = model.base_model.norm(states[:-1]) if mode == "normed" else states[:-1]
    with torch.no_grad():
        logits = model.lm_head(torch.cat([inner, states[-1:]]))
        cap = getattr(model.config, "final_logit_softcapping", None)
        logits = cap * torch.tanh(logits / cap) if cap else logits
        return torch.log_softmax(logits.double(), dim=-1).numpy()


@pytest.mark.parametrize("mode", ["normed", "raw"])
def test_lens_modes_equal_direct(setup, mode):
    model, store, name, own = setup
    ds, lens = actstore.open_run(store, name, "semantics"), actstore.open_lens(store, name)
    tokens = tokens_of(ds, np.array([3]))
    targets = np.append(ds.token_id.values[tokens][1:], 0)
    result = readout(ds.hidden.isel(token=tokens), lens, k=3, targets=xr.DataArray(targets, dims="token"), mode=mode)
    expected = direct_logprobs(model, own[3], mode)
    assert result.attrs["lens"] == mode
    np.testing.assert_allclose(result.target_logprob.values, np.take_along_axis(expected, targets[None, :, None], -1)[..., 0], atol=1e-4)
    np.testing.assert_allclose(np.log(result.top_prob.values[..., 0]), expected.max(axis=-1), atol=1e-4)
    other = direct_logprobs(model, own[3], "raw" if mode == "normed" else "normed")
    assert np.abs(other[:-1] - expected[:-1]).max() > 1e-2        # the two lenses really differ on inner layers
    np.testing.assert_allclose(other[-1], expected[-1], atol=1e-6)  # and agree on the last


@pytest.mark.parametrize("mode", ["normed", "raw"])
def test_target_margin_and_roles_equal_direct(setup, mode):
    model, store, name, own = setup
    ds, lens = actstore.open_run(store, name, "semantics"), actstore.open_lens(store, name)
    table = candidate_logprobs(ds, lens, marked_tokens(ds), mode=mode)
    vocab = {str(t): i for i, t in reversed(list(enumerate(lens.vocab_token.values)))}
    margins, by_gold = [], {}
    for token in table.token.values:
        example, position = int(ds.token_example.values[token]), int(ds.position.values[token])
        logprobs = direct_logprobs(model, own[example], mode)[:, position]                      # (layer, vocab)
        target = str(ds.target.values[token])
        alternatives = json.loads(str(ds.alternatives.values[token]))
        margins.append(logprobs[:, vocab[target]] - logprobs[:, [vocab[a] for a in alternatives]].max(axis=1))
        by_gold.setdefault(target, []).append(logprobs)
    summary = target_margin(table, n_boot=200)
    np.testing.assert_allclose(summary.per_token_margin.values, np.stack(margins, axis=1), atol=1e-4)
    np.testing.assert_allclose(summary.margin.values, np.mean(margins, axis=0), atol=1e-4)
    assert (summary.ci_low.values <= summary.margin.values + 1e-9).all() and summary.attrs["lens"] == mode
    golds = sorted(by_gold)
    if len(golds) < 2:
        pytest.skip("the tiny tokenizer spells the role words alike")
    raw = np.stack([np.mean(by_gold[g], axis=0)[:, [vocab[p] for p in golds]] for g in golds], axis=1)
    confusion = role_confusion(table)
    np.testing.assert_allclose(confusion.confusion.values, raw - raw.mean(axis=1, keepdims=True), atol=1e-4)


def test_anchored_trajectories_equal_direct(setup):
    _, store, name, own = setup
    ds, lens = actstore.open_run(store, name, "semantics"), actstore.open_lens(store, name)
    examples = examples_of(ds, variant="sentence")
    result = anchored_pca(last_tokens(ds, examples), number_anchors(lens, DIGITS))
    anchors = lens.unembedding.values[[int(np.flatnonzero(lens.vocab_token.values == d)[0]) for d in DIGITS]].astype(np.float64)
    z = lambda v: (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True)  # noqa: E731
    fitted = z(anchors)
    centred = fitted - fitted.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)            # PCA by the covariance's eigenvectors
    axes = eigenvectors[:, ::-1][:, :2].T
    for i, example in enumerate(examples):
        states = z(own[int(example)][:, -1].double().numpy())                   # (layer, d_model)
        expected = (states - fitted.mean(axis=0)) @ axes.T
        got = result.trajectory.isel(example=i).values
        signs = np.sign((got * expected).sum(axis=0))                            # a component's sign is arbitrary
        np.testing.assert_allclose(got, expected * signs, atol=1e-4)
    top = eigenvalues[::-1]
    np.testing.assert_allclose(result.explained_variance.values, top[:2] / top.sum(), atol=1e-8)


@pytest.mark.parametrize("center", [True, False])
def test_baseline_similarity_equals_direct(setup, center):
    _, store, name, own = setup
    ds = actstore.open_run(store, name, "semantics")
    result = variant_baseline_similarity(ds, "sentence", "form", "form-swapped", center=center, n_boot=200)
    items = sorted(set(ds["item"].values))
    pick = {v: np.stack([own[int(examples_of(ds, variant=v, item=i)[0])][:, -1].double().numpy() for i in items], axis=1)
            for v in ("sentence", "form", "form-swapped")}                        # (layer, item, d_model)
    x, y, z = pick["sentence"], pick["form"], pick["form-swapped"]
    if center:
        mean = (x.mean(1, keepdims=True) + y.mean(1, keepdims=True) + z.mean(1, keepdims=True)) / 3
        x, y, z = x - mean, y - mean, z - mean
    cos = lambda a, b: (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)  # noqa: E731
    np.testing.assert_allclose(result.score.values, (cos(x, y) - cos(x, z)).mean(axis=1), atol=1e-6)
    assert result.n_items == len(items)
    with pytest.raises(ActstoreError, match="must differ"):
        variant_baseline_similarity(ds, "sentence", "form", "form")


def test_cli_grid_commands(setup, tmp_path, cli, parallel_jsonl):
    _, store, name, _ = setup
    if "gemma3" in name:
        pytest.skip("the CLI shell is the same for every model; run once (llama) to keep the suite fast")
    common = ["--store", store, "--model", name, "--dataset", "semantics", "--out", str(tmp_path)]
    done = cli("analyze", "target", *common, "--lens", "raw", "--bootstrap", "100")
    assert done.returncode == 0, done.stderr
    assert "raw lens" in done.stdout and (tmp_path / "target-margin-all-raw.csv").exists()
    assert matplotlib.image.imread(tmp_path / "target-margin-all-raw.png").ndim == 3
    saved = load_from_store(store, name, "semantics", "target-margin-all-raw")
    assert saved.attrs["lens"] == "raw" and saved.sizes["layer"] == saved.margin.size
    done = cli("analyze", "roles", *common)
    assert done.returncode == 0 and "role confusion (normed lens)" in done.stdout, done.stderr
    assert matplotlib.image.imread(tmp_path / "roles-all-normed.png").ndim == 3
    done = cli("analyze", "similarity", *common, "--variants", "sentence,form", "--baseline", "form-swapped")
    assert done.returncode == 0, done.stderr
    assert "minus baseline form-swapped" in done.stdout
    assert matplotlib.image.imread(tmp_path / "similarity-last-centered-baseline-form-swapped.png").ndim == 3
    done = cli("analyze", "trajectories", *common, "--variant", "sentence", "--anchors", ",".join(DIGITS))
    assert done.returncode == 0 and "trajectories" in done.stdout, done.stderr
    assert matplotlib.image.imread(tmp_path / "trajectories-sentence.png").ndim == 3
    done = cli("analyze", "logit-lens", *common, "--lens", "raw", "--example", "0")
    assert done.returncode == 0 and (tmp_path / "logit-lens-example-0-raw.csv").exists(), done.stderr
    # bad inputs: one-line errors, exit 2
    done = cli("analyze", "trajectories", *common, "--variant", "sentence", "--anchors", "no-such-token")
    assert done.returncode == 2 and done.stderr.startswith("actstore: error: the vocabulary has no token"), done.stderr
    done = cli("analyze", "target", *common, "--lens", "sideways")
    assert done.returncode == 2 and "sideways" in done.stderr
    done = cli("analyze", "similarity", *common, "--variants", "sentence", "--baseline", "form-swapped")
    assert done.returncode == 2 and "exactly two variants" in done.stderr, done.stderr
    plain = str(tmp_path / "plain.zarr")
    actstore.extract(model=str(setup[0].name_or_path), dataset=str(parallel_jsonl), store=plain, dtype="float32",
                     progress=False)
    done = cli("analyze", "target", "--store", plain, "--model", name, "--dataset", "pairs", "--out", str(tmp_path))
    assert done.returncode == 2 and "no per-token targets" in done.stderr and len(done.stderr.strip().splitlines()) == 1
