"""What a notebook user types first, on a store written by the first landing (tests/data, made at commit 91874d5):
it opens whole (its results saved in the old place are left out of the tree), small coordinates are in memory,
plain-xarray selection works, ``ds.actstore`` selects, and the analyses give what the first landing computed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import actstore
from activation_store.analyze.pair_similarity import variant_similarity

DATA = Path(__file__).parent / "data"


@pytest.fixture
def legacy_store(tmp_path) -> str:
    store = tmp_path / "first-landing.zarr"
    shutil.copytree(DATA / "first-landing.zarr", store)
    return str(store)


def test_first_landing_store_opens_whole(legacy_store):
    tree = actstore.open(legacy_store)
    assert isinstance(tree, xr.DataTree)
    assert "hidden" in tree["tiny-llama/pairs"].dataset
    assert not [node.path for node in tree.subtree if "results" in node.path.split("/")[3:4]]


def test_plain_xarray_queries(legacy_store):
    ds = actstore.open_run(legacy_store, "tiny-llama", "pairs")
    for name in ("token_example", "position", "variant", "item", "token_variant", "token_item"):
        assert isinstance(ds[name].data, np.ndarray), name       # in memory, not dask
    assert ds.hidden.chunks is not None                          # only the states stay lazy
    first_two = ds.hidden.where(ds.token_example.isin([0, 1]), drop=True)
    assert first_two.sizes["token"] == int(ds.token_count[:2].sum())
    means = ds.hidden.sel(layer=2).groupby(ds.token_example).mean()
    assert means.shape == (ds.sizes["example"], ds.sizes["d_model"])
    zh = ds.hidden.where(ds.token_variant == "zh", drop=True)
    assert zh.sizes["token"] == int(ds.token_count.where(ds.variant == "zh").sum())


def test_accessor_selections(legacy_store):
    ds = actstore.open_run(legacy_store, "tiny-llama", "pairs")
    zh = ds.actstore.examples(variant="zh")
    assert set(zh.variant.values) == {"zh"} and zh.sizes["token"] == int(zh.token_count.sum())
    np.testing.assert_array_equal(zh.hidden.values, ds.actstore.tokens(variant="zh").values)
    last = ds.actstore.last_tokens(variant="zh")
    ends = ds.token_offset.values + ds.token_count.values - 1
    np.testing.assert_array_equal(last.values, ds.hidden.values[:, ends[ds.variant.values == "zh"]])
    # a selection is itself a run: the same pooling on it gives the same states
    np.testing.assert_allclose(zh.actstore.mean_tokens().values, ds.actstore.mean_tokens(variant="zh").values)


def test_analyses_equal_the_first_landing(legacy_store):
    expected = json.loads((DATA / "first-landing-expected.json").read_text())
    ds = actstore.open_run(legacy_store, "tiny-llama", "pairs")
    result = variant_similarity(ds, ["en", "zh"], pool="last", center=True).compute()
    for name, values in expected.items():
        np.testing.assert_allclose(result[name].values, np.asarray(values), rtol=1e-6, err_msg=name)
