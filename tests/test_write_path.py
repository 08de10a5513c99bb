"""The parallel write path: chunks written many at once equal one writer's, and the finish needs no read of ``hidden``.

Views and statistics come from the pieces each block leaves (store/pieces.py); here they are checked bit for bit
against the same reductions over ``hidden`` (the readers' fallback), and the kernels against their plain-numpy
definitions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import actstore
from activation_store import pooling
from activation_store.store import layout, pieces
from activation_store.store.chunk_writer import BlockWriter
from activation_store.store.handle import Store
from activation_store.store.views import _from_hidden, _ViewArrays, finish_run
from activation_store.store.write import PROGRESS_ATTR

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the kernel: the writers' and readers' sums are the plain float64 sums, bit for bit ----

def plain_moments(block: np.ndarray) -> np.ndarray:
    values = block.astype(np.float64)
    absmax = np.abs(values).max(axis=1) if values.shape[1] else np.zeros((values.shape[0], values.shape[2]))
    return np.concatenate([values.sum(axis=1), (values * values).sum(axis=1), absmax.max(axis=1, keepdims=True)],
                          axis=1)[:, None, :]


@pytest.mark.parametrize("d", [1, 2, 7, 64, 200])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 300])
def test_compiled_sums_equal_plain_float64_sums(d, n):
    import torch

    rng = np.random.default_rng(d * 1000 + n)
    block = (rng.standard_normal((2, n, d)) * rng.choice([1.0, 300.0, 3e4])).astype(np.float32)
    assert np.array_equal(pooling.block_moments(block), plain_moments(block))
    if not n:
        return
    owner = np.repeat(np.arange(40), rng.integers(1, 90, size=40))[:n]
    owner = np.r_[owner, np.full(n - len(owner), -1)]
    owner[rng.random(n) < 0.1] = -1
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    bits = torch.from_numpy(block).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    for layer in range(2):
        for stored, bf16 in ((block[layer], False), (bits[layer], True)):
            values = (bits[layer].astype(np.uint32) << 16).view(np.float32) if bf16 else block[layer]
            moments, runs = pooling.chunk_partials(stored, starts, bf16)
            assert np.array_equal(moments, plain_moments(values[None])[0, 0])
            assert np.array_equal(runs, np.add.reduceat(values.astype(np.float64), starts, axis=0))
        assert np.array_equal(pooling.run_sums(block[layer], starts),
                              np.add.reduceat(block[layer].astype(np.float64), starts, axis=0))


# ---- extraction: pieces, parallel writers ----

@pytest.fixture
def long_jsonl(tmp_path) -> Path:
    """Examples of very different lengths, some far longer than a chunk (their sums span many chunks)."""
    rng = np.random.default_rng(3)
    words = "the cat sat on a mat while five plus three made eight and twelve times two".split()
    path = tmp_path / "long.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            n = int(rng.choice([1, 2, 5, 30, 120]))
            f.write(json.dumps({"id": f"x{i}", "variant": "en", "text": " ".join(rng.choice(words, n))}) + "\n")
    return path


def run_group(store: str, model_dir: Path, dataset: str) -> zarr.Group:
    return zarr.open_group(store, mode="r", use_consolidated=False)[layout.run_path(model_dir.name, dataset)]


def files(store: str) -> dict[str, bytes]:
    root = Path(store)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "zarr.json" not in p.name and not p.name.startswith(".")}


def recomputed(store: str, model_dir: Path, dataset: str) -> dict[str, np.ndarray]:
    """Views and statistics as the readers' fallback computes them from ``hidden`` (into a scratch group)."""
    handle = Store.open(store, mode="r+")
    group = handle.live_group(layout.run_path(model_dir.name, dataset))
    scratch = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    for name in ("token_offset", "token_count", "position", "token_example"):
        scratch.create_array(name, data=group[name][...])
    out = _ViewArrays(scratch, group[layout.HIDDEN], bool(group.attrs["config"].get("bos", False)))
    stats = _from_hidden(group[layout.HIDDEN], out)
    return {"hidden_last": out.last[...], "hidden_mean": out.mean[...],
            **{name: stats[key] for name, key in zip(layout.STATS, ("mean", "second_moment", "abs_max"))}}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_views_and_statistics_from_pieces_equal_those_from_hidden(tiny_model_dir, long_jsonl, tmp_path, dtype,
                                                                   monkeypatch):
    from activation_store.store import views

    def no_reading_back(*args):
        raise AssertionError("extraction read hidden back")

    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "acts.zarr")
    with monkeypatch.context() as patch:  # the finish works from the pieces alone
        patch.setattr(views, "_from_hidden", no_reading_back)
        actstore.extract(model=str(model_dir), dataset=str(long_jsonl), store=store, dtype=dtype, batch_size=4,
                         chunk_tokens=16, progress=False)
    group = run_group(store, model_dir, "long")
    assert group[layout.HIDDEN].shape[1] > 40 * 16  # many chunks, examples across up to ~10 of them
    assert not (Path(store) / group.path / pieces.PREFIX).exists()  # used, then removed
    expected = recomputed(store, model_dir, "long")
    for name, values in expected.items():
        assert np.array_equal(group[name][...], values, equal_nan=True), name
    assert group.attrs[layout.VIEWS_ATTR]["stat_count"] == group[layout.HIDDEN].shape[1]


def test_finish_without_pieces_reads_hidden_and_gives_the_same(tiny_model_dir, long_jsonl, tmp_path):
    """A run whose pieces are gone (written before they existed) is finished from ``hidden``: same bytes."""
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(long_jsonl), store=store, batch_size=4, chunk_tokens=16,
                     progress=False)
    before = files(store)
    handle = Store.open(store, mode="r+")
    path = layout.run_path(model_dir.name, "long")
    group = handle.live_group(path)
    group.attrs[layout.VIEWS_ATTR] = {}
    for name in (*layout.VIEWS.values(), *layout.STATS):
        del group[name]
    assert finish_run(handle, path)
    assert files(store) == before


def test_parallel_writers_give_the_bytes_of_one_writer(tiny_model_dir, long_jsonl, tmp_path, monkeypatch):
    """Sixteen writer threads and one, and the zarr path (no direct file writes): byte-identical stores."""
    from activation_store.store import chunk_writer

    model_dir = tiny_model_dir("gemma3")
    stores = {}
    for name, threads, direct in (("many", 16, True), ("one", 1, True), ("zarr", 4, False)):
        monkeypatch.setattr(chunk_writer, "default_threads", lambda t=threads: t)
        if not direct:
            monkeypatch.setattr(chunk_writer, "raw_with_checksum", lambda array: False)
        stores[name] = str(tmp_path / f"{name}.zarr")
        actstore.extract(model=str(model_dir), dataset=str(long_jsonl), store=stores[name], batch_size=5,
                         chunk_tokens=16, progress=False)
    many = files(stores["many"])
    assert any("/hidden/c/" in key for key in many)
    assert many == files(stores["one"]) == files(stores["zarr"])


def test_a_failed_block_is_never_committed_nor_any_after_it(tmp_path):
    """A chunk write that fails leaves its block and every later one uncommitted, and the error reaches the caller."""
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    hidden = root.create_array("hidden", shape=(3, 40, 8), chunks=(1, 8, 8), dtype="uint16", fill_value=0x7FC0,
                               compressors=[zarr.codecs.Crc32cCodec()])
    committed = []
    calls = {"n": 0}

    class Boom(OSError):
        pass

    writer = BlockWriter({"hidden": hidden}, on_written=lambda a, b, piece: committed.append((a, b)), threads=4)
    real = writer._write_file

    def flaky(path, chunk):
        calls["n"] += 1
        if path.as_posix().endswith("hidden/c/1/2/0"):
            raise Boom(28, "No space left on device")
        real(path, chunk)

    writer._write_file = flaky
    with pytest.raises(Boom):
        with writer:
            for start in range(0, 40, 8):
                buffers = writer.buffer()
                buffers["hidden"][...] = start
                writer.submit(start, buffers)
    assert committed == [(0, 8), (8, 16)]
    assert not list(Path(tmp_path / "s.zarr").rglob("*.partial"))


def test_progress_record_unchanged_by_the_new_writer(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, batch_size=3, chunk_tokens=16,
                     progress=False)
    group = run_group(store, model_dir, "pairs")
    assert group.attrs[PROGRESS_ATTR] == {"tokens_done": group[layout.HIDDEN].shape[1], "complete": True}


def test_without_numba_the_sums_are_the_same(monkeypatch):
    """Where numba cannot be installed the definition itself runs (numpy on a float64 copy): the same bits."""
    rng = np.random.default_rng(5)
    block = (rng.standard_normal((500, 96)) * 100).astype(np.float32)
    starts = np.array([0, 3, 4, 90, 333])
    compiled = pooling.chunk_partials(block, starts, False)
    monkeypatch.setattr(pooling, "_kernels", lambda: None)
    plain = pooling.chunk_partials(block, starts, False)
    assert np.array_equal(compiled[0], plain[0]) and np.array_equal(compiled[1], plain[1])
