"""A store larger than a dask worker's memory limit, analysed on a real LocalCluster with that limit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

import actstore
from activation_store.analyze.pair_similarity import variant_similarity
from activation_store.store.precision import encode
from activation_store.store import Store
from activation_store.store.write import NewRun, create_run

LAYERS, D_MODEL, N_ITEMS, TOKENS_PER_EXAMPLE, CHUNK = 6, 512, 2000, 48, 16384


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """~590 MB of bfloat16 states (6 layers × 192,000 tokens × 512) written through the store's own writer."""
    store = str(tmp_path_factory.mktemp("big") / "big.zarr")
    n_examples = 2 * N_ITEMS
    counts = np.full(n_examples, TOKENS_PER_EXAMPLE, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_tokens = int(counts.sum())
    token_coords = {"token_id": np.zeros(n_tokens, np.int32),
                    "token_example": np.repeat(np.arange(n_examples, dtype=np.int32), counts),
                    "position": np.tile(np.arange(TOKENS_PER_EXAMPLE, dtype=np.int32), n_examples),
                    "modality": np.array(["text"] * n_tokens, dtype=object)}
    items = np.array([f"item{i}" for i in range(N_ITEMS)] * 2, dtype=object)
    example_coords = {"item": items, "variant": np.array(["a"] * N_ITEMS + ["b"] * N_ITEMS, dtype=object),
                      "text": items, "token_offset": offsets, "token_count": counts}
    target = Store.open(store, mode="a")
    writer = create_run(target, "synthetic/pairs", NewRun(
        n_layers=LAYERS, d_model=D_MODEL, dtype="bfloat16", chunk_tokens=CHUNK,
        token_coords=token_coords, example_coords=example_coords,
        final_norm_applied=np.zeros(LAYERS, bool), attrs={"config": {"bos": False}}))
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(N_ITEMS, D_MODEL, generator=generator)       # what pairs items across variants
    for start in range(0, n_tokens, CHUNK):
        stop = min(start + CHUNK, n_tokens)
        block = torch.randn(LAYERS, stop - start, D_MODEL, generator=generator) * 4
        examples = np.arange(start, stop) // TOKENS_PER_EXAMPLE
        block += shared[torch.as_tensor(examples % N_ITEMS)] * torch.linspace(0, 3, LAYERS)[:, None, None]
        writer.write_block(start, encode(block, "bfloat16"))
    target.consolidate()
    return store


def test_cluster_result_equals_in_process(big_store):
    ds = actstore.open_run(big_store, "synthetic", "pairs")
    assert ds.hidden.nbytes // 2 > 1.4 * 400e6   # bf16 bytes on disk vs the limit
    local = variant_similarity(ds, ["a", "b"], pool="mean", n_boot=100)
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="400MB", processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        distributed = variant_similarity(actstore.open_run(big_store, "synthetic", "pairs"), ["a", "b"], pool="mean", n_boot=100)
    np.testing.assert_allclose(distributed.score.values, local.score.values, rtol=1e-10, atol=1e-12)
    assert local.score.values[0, -1] > local.score.values[0, 0] + 0.1      # the planted pairing shows up
