"""The PyTorch loader over a store: exactly once per epoch, deterministic shuffling, bounded memory, S3.

Stores are real: a tiny random Llama extracted with small chunks, and for the
memory test a larger run written chunk by chunk with the store's own writer."""
from __future__ import annotations

import os
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import torch

import actstore
from activation_store.errors import ActstoreError
from activation_store.store import Store, layout
from activation_store.store.transfer import copy_store
from activation_store.store.write import NewRun, create_run
from test_s3 import new_bucket, s3  # noqa: F401  (the S3 server fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs: two torch threads fight on two cores

LAYERS, VARIANTS = [0, 2], ["en", "zh"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    import json

    rows = [{"id": f"i{k}", "en": f"number {k} is here " * (1 + k % 3), "zh": f"第{k}号" * (1 + k % 2),
             "fr": f"le numéro {k}"} for k in range(12)]
    data = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    path = tmp_path_factory.mktemp("loader") / "acts.zarr"
    actstore.extract(model=str(tiny_model_dir("llama")), dataset=str(data), store=str(path), chunk_tokens=16,
                     batch_size=4, progress=False)
    return str(path), tiny_model_dir("llama").name


def rows_of(loader) -> list[tuple[int, int, int]]:
    """(example, position, layer) of every row of one epoch, in order."""
    out = []
    for batch in loader:
        out += list(zip(batch.example.tolist(), batch.position.tolist(), batch.layer.tolist()))
    return out


def expected_rows(url, model, layers=LAYERS, variants=VARIANTS, last=False) -> Counter:
    ds = actstore.open_run(url, model, "pairs")
    keep = np.isin(ds.variant.values, variants)
    ex, pos = ds.token_example.values, ds.position.values
    picked = keep[ex] & ((pos == ds.token_count.values[ex] - 1) if last else True)
    return Counter((int(e), int(p), layer) for e, p in zip(ex[picked], pos[picked]) for layer in layers)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_token_once_per_epoch_with_its_stored_state(store, workers):
    url, model = store
    loader = actstore.torch.loader(url, model, "pairs", layers=LAYERS, variants=VARIANTS, batch_size=7,
                                   buffer_tokens=40, num_workers=workers, seed=3)
    ds = actstore.open_run(url, model, "pairs")
    token_of = {(int(e), int(p)): t for t, (e, p) in enumerate(zip(ds.token_example.values, ds.position.values))}
    hidden, token_id = ds.hidden.values, ds.token_id.values
    seen, sizes = [], []
    for batch in loader:
        assert batch.hidden.dtype.is_floating_point and batch.hidden.shape == (len(batch.layer), ds.sizes["d_model"])
        sizes.append(len(batch.layer))
        rows = list(zip(batch.example.tolist(), batch.position.tolist(), batch.layer.tolist()))
        tokens = [token_of[(e, p)] for e, p, _ in rows]
        np.testing.assert_array_equal(batch.hidden.numpy(), hidden[batch.layer.numpy(), tokens])  # the stored states
        np.testing.assert_array_equal(batch.token_id.numpy(), token_id[tokens])
        seen += rows
    assert Counter(seen) == expected_rows(url, model)
    assert max(sizes) == 7 and sum(s < 7 for s in sizes) <= max(1, workers)  # only each shard's last batch is short


def test_ranks_split_the_epoch_disjointly(store):
    url, model = store
    parts = [rows_of(actstore.torch.loader(url, model, "pairs", layers=LAYERS, variants=VARIANTS, batch_size=5,
                                           buffer_tokens=32, rank=rank, world_size=2, num_workers=workers))
             for rank, workers in ((0, 2), (1, 1))]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert Counter(parts[0] + parts[1]) == expected_rows(url, model)


def test_order_is_fixed_by_seed_and_epoch(store):
    url, model = store

    def make(seed=0, workers=0):
        return actstore.torch.loader(url, model, "pairs", layers=LAYERS, variants=VARIANTS, batch_size=8,
                                     buffer_tokens=48, seed=seed, num_workers=workers)

    loader = make()
    first, second = rows_of(loader), rows_of(loader)       # iterating again is the next epoch
    assert Counter(first) == Counter(second) and first != second
    assert rows_of(make()) == first                        # same seed, same order
    assert rows_of(make(workers=2)) == rows_of(make(workers=2))
    assert rows_of(make(seed=1)) != first
    again = make()
    again.set_epoch(1)
    assert rows_of(again) == second
    # the buffer mixes chunks: the first batch is not one run of consecutive tokens
    examples = {e for e, _, _ in first[:8]}
    assert len(examples) > 1
    in_order = rows_of(actstore.torch.loader(url, model, "pairs", layers=LAYERS, variants=VARIANTS, shuffle=False,
                                             batch_size=8))
    assert Counter(in_order) == Counter(first) and in_order == sorted(in_order, key=lambda r: (r[2], r[0], r[1]))


@pytest.mark.parametrize("workers", [0, 2])
def test_bfloat16_batches_are_the_stored_bits(store, workers):
    """``dtype=bfloat16`` hands a bfloat16 run's states out undecoded: the same rows, in the same order,
    as the float32 batches, and exactly their values (bfloat16 → float32 is exact)."""
    url, model = store
    kwargs = dict(layers=LAYERS, variants=VARIANTS, batch_size=7, buffer_tokens=40, seed=2, num_workers=workers)
    wide = list(actstore.torch.loader(url, model, "pairs", **kwargs))
    narrow = list(actstore.torch.loader(url, model, "pairs", dtype="bfloat16", **kwargs))
    assert len(wide) == len(narrow)
    for a, b in zip(wide, narrow):
        assert b.hidden.dtype == torch.bfloat16 and a.hidden.dtype == torch.float32
        assert torch.equal(b.hidden.float(), a.hidden) and torch.equal(b.example, a.example)


def test_last_positions_and_items(store):
    url, model = store
    got = rows_of(actstore.torch.loader(url, model, "pairs", layers=[-1], variants=VARIANTS, positions="last",
                                        batch_size=4))
    assert Counter(got) == expected_rows(url, model, layers=[actstore.open_run(url, model, "pairs").sizes["layer"] - 1], last=True)
    ds = actstore.open_run(url, model, "pairs")
    got = rows_of(actstore.torch.loader(url, model, "pairs", items=["i3"], positions=[0, -1], batch_size=4))
    wanted = {int(e) for e in np.flatnonzero(ds["item"].values == "i3")}
    assert {e for e, _, _ in got} == wanted and {p for _, p, _ in got} >= {0}
    assert len(got) == len(wanted) * 2 * ds.sizes["layer"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(items=["i1"], variants=["en"], positions=[500]), "matches no tokens"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(layers=[7]), "layer 7 is out of range"),
    (dict(variants=["xx"]), "variant 'xx' is not in this run"),
    (dict(items=["nope"]), "item 'nope' is not in this run"),
    (dict(positions="first"), "unknown positions"),
    (dict(buffer_tokens=10, batch_size=8), "buffer_tokens 10 is too small"),
    (dict(buffer_bytes=1000), "buffer_bytes 1,000 is too small"),
    (dict(rank=2, world_size=2), "rank 2 is not in 0..1"),
    (dict(num_workers=-1), "num_workers must be 0 or more"),
    (dict(dtype="float16"), "dtype must be float32 or bfloat16"),
])
def test_bad_selection_is_one_line(store, kwargs, message):
    url, model = store
    with pytest.raises(ActstoreError) as caught:
        actstore.torch.loader(url, model, "pairs", **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_run_is_one_line(store):
    url, model = store
    with pytest.raises(ActstoreError, match="is not in"):
        actstore.torch.loader(url, model, "other")


def synthetic_run(path, n_layers=3, n_tokens=40_000, d_model=64, chunk=500, per_example=50) -> str:
    """A run bigger than the buffer, written block by block with the store's writer (bfloat16 bits)."""
    store = Store.open(str(path), mode="a")
    n_examples = n_tokens // per_example
    offsets = np.arange(n_examples) * per_example
    writer = create_run(store, layout.run_path("synthetic", "big"), NewRun(
        n_layers=n_layers, d_model=d_model, dtype="bfloat16",
        chunk_tokens=chunk,
        token_coords={"token_id": np.arange(n_tokens, dtype=np.int32) % 1000,
                      "token_example": np.repeat(np.arange(n_examples, dtype=np.int32), per_example),
                      "position": np.tile(np.arange(per_example, dtype=np.int32), n_examples),
                      "modality": np.zeros(n_tokens, dtype=np.int8)},
        example_coords={"item": np.array([f"i{k}" for k in range(n_examples)]), "variant": np.array(["en"] * n_examples),
                        "text": np.array(["x"] * n_examples), "token_offset": offsets,
                        "token_count": np.full(n_examples, per_example)},
        final_norm_applied=np.zeros(n_layers, dtype=bool), attrs={"config_hash": "synthetic"}))
    rng = np.random.default_rng(0)
    for start in range(0, n_tokens, chunk):
        block = rng.standard_normal((n_layers, chunk, d_model), dtype=np.float32)
        writer.write_block(start, (block.view(np.uint32) >> 16).astype(np.uint16))
    store.consolidate()
    return str(path)


def test_memory_is_bounded_by_the_buffer_not_the_store(tmp_path):
    url = synthetic_run(tmp_path / "big.zarr")
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path / "big.zarr") for f in fs)
    budget = 1 << 20
    assert stored > 12 * budget                                    # the store is far bigger than the buffer
    loader = actstore.torch.loader(url, "synthetic", "big", batch_size=256, buffer_bytes=budget, seed=0)
    assert loader.dataset.buffer_bytes > 0.9 * budget                # and the budget is really used
    rows = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for batch in loader:
            rows += len(batch.layer)
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 3 * 40_000                                      # every row once
    assert peak < 1.5 * budget, f"peak {peak:,} bytes for a buffer of {budget:,}"


def test_rows_moved_within_the_ring_keep_their_states(tmp_path):
    """A buffer of ten chunks over 120: the ring comes round five times, moving the rows still buffered in each
    block it reads into again; every row still comes out once, with the state the store holds for it."""
    url = synthetic_run(tmp_path / "big.zarr", n_tokens=20_000)
    ds = actstore.open_run(url, "synthetic", "big")
    hidden = ds.hidden.values
    loader = actstore.torch.loader(url, "synthetic", "big", batch_size=64, buffer_tokens=5000, seed=1)
    seen = np.zeros(hidden.shape[:2], dtype=np.int64)
    for batch in loader:
        tokens = ds.token_offset.values[batch.example.numpy()] + batch.position.numpy()
        np.testing.assert_array_equal(batch.hidden.numpy(), hidden[batch.layer.numpy(), tokens])
        np.add.at(seen, (batch.layer.numpy(), tokens), 1)
    assert (seen == 1).all()
    assert loader.dataset.rows_moved > 1000                        # the moves really happened


def test_loader_over_s3_matches_local(s3, store):  # noqa: F811
    url, model = store
    bucket = new_bucket(s3)
    remote = f"s3://{bucket}/acts.zarr"
    options = {"endpoint_url": s3.endpoint}
    copy_store(url, remote, destination_options=options, progress=False)
    kwargs = dict(layers=LAYERS, variants=VARIANTS, batch_size=6, buffer_tokens=30, seed=5, num_workers=2)
    there = list(actstore.torch.loader(remote, model, "pairs", storage_options=options, **kwargs))
    here = list(actstore.torch.loader(url, model, "pairs", **kwargs))
    assert len(there) == len(here)
    for a, b in zip(there, here):
        for x, y in zip(a, b):
            assert (x == y).all()
