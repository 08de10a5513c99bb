"""The numeric kernels against plain numpy on random data, without a model or a store (fast).

projection's per-block top-k and its merge across vocabulary chunks, KL on a recorded
support, and the bootstrap of analyze/stats."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from activation_store.analyze.intervention import kl_on_support
from activation_store.analyze.projection import _block, _Head, _merge, _top_k
from activation_store.analyze.stats import grouped_mean_ci, mean_ci
from activation_store.errors import ActstoreError


@pytest.mark.parametrize("width", [1, 3, 40])
def test_top_k_matches_a_sort(width):
    rng = np.random.default_rng(width)
    scores = rng.normal(size=(2, 6, width))
    k = 5
    values, index = _top_k(scores.copy(), k)
    order = np.argsort(-scores, axis=-1)[..., :k]
    n = min(k, width)
    np.testing.assert_array_equal(index[..., :n], order[..., :n])
    np.testing.assert_array_equal(values[..., :n], np.take_along_axis(scores, order, -1)[..., :n])
    assert np.isneginf(values[..., n:]).all()            # a chunk narrower than k pads with -inf


@pytest.mark.parametrize("chunk", [7, 16, 50])
def test_merge_of_vocab_chunks_equals_the_full_softmax(chunk):
    rng = np.random.default_rng(chunk)
    n_states, d, vocab, k, n_lang = 9, 8, 50, 4, 3
    h = rng.normal(size=(n_states, d)) * 2
    w = rng.normal(size=(vocab, d))
    bias = rng.normal(size=vocab)
    table = rng.random((vocab, n_lang))
    target_id = rng.integers(0, vocab, size=n_states)
    scores = 30 * np.tanh((h @ w.T + bias) / 30)                          # soft-capped logits
    target_logit = scores[np.arange(n_states), target_id]
    parts = []
    for start in range(0, vocab, chunk):
        ids = np.arange(start, min(start + chunk, vocab))
        parts.append(_block(h, w[ids], ids, target_logit, target_id, table[ids], head=_Head(k, 30.0, bias, None)))
    merged = _merge(np.concatenate(parts, axis=-2), k=k, n_lang=n_lang)

    log_z = np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)) + scores.max(-1)
    np.testing.assert_allclose(merged[:, 0], log_z, rtol=1e-12)
    rank = ((scores > target_logit[:, None]) & (np.arange(vocab) != target_id[:, None])).sum(-1)
    np.testing.assert_array_equal(merged[:, 1], rank)
    order = np.argsort(-scores, axis=-1)[:, :k]
    np.testing.assert_allclose(merged[:, 2:2 + k], np.take_along_axis(scores, order, -1), rtol=1e-12)
    np.testing.assert_array_equal(merged[:, 2 + k:2 + 2 * k], order)
    probs = np.exp(scores - log_z[:, None])
    np.testing.assert_allclose(merged[:, 2 + 2 * k:], probs @ table, rtol=1e-10)


def test_kl_on_support_is_exact_on_the_full_vocabulary_and_a_lower_bound_on_part_of_it():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 30)) * 2                              # (condition, example, vocab)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    full = (np.exp(logp[0]) * (logp[0] - logp)).sum(-1)
    np.testing.assert_allclose(kl_on_support(logp, 0), full, atol=1e-9)
    support = logp[..., :10]
    partial = kl_on_support(support, 0)
    rest = np.log1p(-np.exp(support).sum(-1))                             # the one bucket for all other tokens
    p, q = np.concatenate([support[0], rest[0][..., None]], -1), np.concatenate([support, rest[..., None]], -1)
    np.testing.assert_allclose(partial, (np.exp(p) * (p - q)).sum(-1), rtol=1e-12)
    assert (partial <= full + 1e-12).all() and (partial[1:] > 0).all()    # merging tokens never adds divergence
    np.testing.assert_allclose(partial[0], 0, atol=1e-12)                 # the baseline against itself


def test_bootstrap_matches_a_plain_loop_with_the_same_draws():
    rng = np.random.default_rng(3)
    values = xr.DataArray(rng.normal(size=(4, 25)), dims=("layer", "item"), coords={"layer": np.arange(4)})
    out = mean_ci(values, "item", n_boot=200, seed=7)
    draws = np.random.default_rng(7).integers(0, 25, size=(200, 25))
    for layer in range(4):
        boot = [values.values[layer, d].mean() for d in draws]
        np.testing.assert_allclose([out.ci_low[layer], out.ci_high[layer]], np.percentile(boot, [2.5, 97.5]), rtol=1e-12)
    np.testing.assert_allclose(out["mean"], values.mean("item"), rtol=1e-12)
    assert out.ci_low.dims == ("layer",) and (out.ci_low < out["mean"]).all() and (out["mean"] < out.ci_high).all()
    assert out.attrs["n_samples"] == 25


def test_grouped_bootstrap_averages_each_group_first_and_resamples_groups():
    values = xr.DataArray([[1.0, 3.0, 10.0, 10.0, 10.0, 10.0]], dims=("condition", "example"),
                          coords={"item": ("example", ["a", "a", "b", "b", "b", "b"])})
    out = grouped_mean_ci(values, "example", "item", n_boot=500, seed=0)
    assert float(out["mean"][0]) == pytest.approx(6.0)                   # (2 + 10) / 2, not the example mean 9
    assert out.attrs["n_samples"] == 2
    assert float(out.ci_low[0]) == pytest.approx(2.0) and float(out.ci_high[0]) == pytest.approx(10.0)


def test_entry_weighted_bootstrap_is_the_entry_mean_resampled_by_group():
    """weigh="entry": the mean over all entries, its interval from resampling whole groups (a cluster bootstrap)."""
    rng = np.random.default_rng(5)
    groups = np.repeat(["a", "b", "c", "d", "e"], [1, 4, 2, 6, 3])
    values = xr.DataArray(rng.normal(size=(2, len(groups))), dims=("layer", "token"),
                          coords={"token_example": ("token", groups)})
    out = grouped_mean_ci(values, "token", "token_example", n_boot=300, seed=4, weigh="entry")
    np.testing.assert_allclose(out["mean"], values.mean("token"), rtol=1e-12)   # 9 entries of d count 9 times
    labels = np.unique(groups)
    draws = np.random.default_rng(4).integers(0, len(labels), size=(300, len(labels)))
    for layer in range(2):
        boot = [np.concatenate([values.values[layer][groups == labels[g]] for g in d]).mean() for d in draws]
        np.testing.assert_allclose([out.ci_low[layer], out.ci_high[layer]], np.percentile(boot, [2.5, 97.5]),
                                   rtol=1e-12)
    with pytest.raises(ActstoreError, match="weigh must be"):
        grouped_mean_ci(values, "token", "token_example", weigh="token")


def test_bootstrap_refuses_no_resamples_or_no_samples():
    with pytest.raises(ActstoreError, match="at least 1 resample"):
        mean_ci(xr.DataArray(np.ones(3), dims="item"), "item", n_boot=0)
    with pytest.raises(ActstoreError, match="no samples"):
        mean_ci(xr.DataArray(np.ones((2, 0)), dims=("layer", "item")), "item")
