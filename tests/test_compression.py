"""Lossless compression of ``hidden`` (``--compression``): a compressed run reads bit for bit as an uncompressed
one through every reader (xarray, the loader, plain zarr), ``verify`` still names a flipped byte, and a killed
compressed run resumes identical. Compression is not part of a run's configuration: a resume keeps the codecs
its ``hidden`` was created with, whatever ``--compression`` says then."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import actstore
from activation_store.store.chunk_file import direct_reader
from activation_store.store.write import COMPRESSIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs: two torch threads fight on two cores

COMPRESSED = [name for name in COMPRESSIONS if name != "none"]
CHUNK = 16
ENV = {"OMP_NUM_THREADS": "1"}  # forked runs compute as the in-process ones do


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rows = [{"id": str(i), "en": f"The cat number {i} sits on the table.", "zh": f"第{i}只猫坐在桌子上。",
             "fr": "Le chat est assis sur la table."} for i in range(8)]
    path = tmp_path_factory.mktemp("compression-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("llama")


@pytest.fixture(scope="module")
def stores(model_dir, data, tmp_path_factory):
    """``stores(compression, dtype, positions)`` → a run extracted in this process (made once each)."""
    made: dict[tuple[str, str, str], str] = {}

    def make(compression: str = "none", dtype: str = "bfloat16", positions: str = "all") -> str:
        key = (compression, dtype, positions)
        if key not in made:
            store = tmp_path_factory.mktemp(f"{compression}-{dtype}-{positions}") / "acts.zarr"
            result = actstore.extract(model=str(model_dir), dataset=str(data), store=str(store), dtype=dtype,
                                      positions=positions, batch_size=5, chunk_tokens=CHUNK, progress=False,
                                      compression=compression)
            assert result.status == "written"
            made[key] = str(store)
        return made[key]

    return make


def run_dir(store: str | Path, model_dir: Path) -> Path:
    return Path(store) / model_dir.name / "pairs"


def hidden_codecs(store: str | Path, model_dir: Path) -> list[dict]:
    return json.loads((run_dir(store, model_dir) / "hidden" / "zarr.json").read_text())["codecs"]


def assert_bits_equal(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, name
    if got.dtype.kind in "biufc":
        assert got.tobytes() == want.tobytes(), f"{name} differs"
    else:
        assert got.tolist() == want.tolist(), f"{name} differs"


@pytest.mark.parametrize("compression", COMPRESSED)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_compressed_run_reads_as_uncompressed_through_xarray_and_zarr(stores, model_dir, compression, dtype):
    plain, packed = stores("none", dtype), stores(compression, dtype)
    codecs = hidden_codecs(packed, model_dir)
    assert [c["name"] for c in codecs] == ["bytes", COMPRESSIONS[compression].to_dict()["name"], "crc32c"]
    if codecs[1]["name"] == "blosc":  # typesize from the stored item size: 2 for bfloat16 bits
        assert codecs[1]["configuration"]["typesize"] == (2 if dtype == "bfloat16" else 4)
    assert [c["name"] for c in hidden_codecs(plain, model_dir)] == ["bytes", "crc32c"]
    a, b = actstore.open_run(plain, model_dir.name, "pairs"), actstore.open_run(packed, model_dir.name, "pairs")
    # compression is no part of the run's identity, and provenance says which was used
    assert a.attrs["config_hash"] == b.attrs["config_hash"]
    assert a.attrs["provenance"]["compression"] == "none" and b.attrs["provenance"]["compression"] == compression
    assert sorted(a.variables) == sorted(b.variables)
    assert {"hidden", "hidden_last", "hidden_mean", "stat_mean", "stat_second_moment", "stat_abs_max"} <= set(a.variables)
    for name in a.variables:  # hidden decoded, pooled views, statistics, coordinates
        assert_bits_equal(b[name].values, a[name].values, name)
    assert_bits_equal(actstore.analyze.last_tokens(b).values, actstore.analyze.last_tokens(a).values, "last_tokens")
    # any Zarr client: the stored values (bfloat16 bit patterns) with zarr alone
    raw_a = zarr.open_array(str(run_dir(plain, model_dir) / "hidden"), mode="r")
    raw_b = zarr.open_array(str(run_dir(packed, model_dir) / "hidden"), mode="r")
    assert_bits_equal(raw_b[...], raw_a[...], "hidden (zarr)")
    assert_bits_equal(raw_b[1, 3:40, :], raw_a[1, 3:40, :], "hidden slice (zarr)")
    # the loader's direct chunk reader refuses the compressed array; it is read through zarr
    assert direct_reader(raw_a) is not None and direct_reader(raw_b) is None
    # and the stored chunks really are compressed
    size = lambda store: sum(p.stat().st_size for p in (run_dir(store, model_dir) / "hidden" / "c").rglob("*"))
    assert size(packed) < size(plain)


@pytest.mark.parametrize("compression", COMPRESSED)
@pytest.mark.parametrize("loader_dtype", ["float32", "bfloat16"])
def test_loader_gives_the_same_batches(stores, model_dir, compression, loader_dtype):
    plain, packed = stores("none"), stores(compression)

    def batches(store, **kwargs):
        loader = actstore.torch.loader(store, model_dir.name, "pairs", batch_size=7, buffer_tokens=40,
                                       dtype=loader_dtype, **kwargs)
        bits = (lambda h: h) if loader_dtype == "float32" else (lambda h: h.view(torch.int16))  # bfloat16: its bits
        return [(bits(b.hidden).numpy().tobytes(), b.layer.tolist(), b.example.tolist(), b.position.tolist(),
                 b.token_id.tolist()) for b in loader]

    for kwargs in ({"shuffle": False}, {"shuffle": True, "seed": 3}, {"shuffle": True, "seed": 3, "positions": "last",
                                                                      "layers": [0, 2]}):
        want, got = batches(plain, **kwargs), batches(packed, **kwargs)
        assert want and got == want, kwargs


def test_pooled_run_compressed(stores, model_dir):
    """``--positions mean`` stores float32 per example: compressed, it reads the same."""
    a = actstore.open_run(stores("none", positions="mean"), model_dir.name, "pairs")
    b = actstore.open_run(stores("zstd", positions="mean"), model_dir.name, "pairs")
    for name in a.variables:
        assert_bits_equal(b[name].values, a[name].values, name)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["zstd", "blosc-zstd"])
@pytest.mark.parametrize("where", ["compressed bytes", "checksum"])
def test_verify_names_a_flipped_byte_in_a_compressed_chunk(stores, model_dir, tmp_path, cli, compression, where):
    store = tmp_path / "acts.zarr"
    shutil.copytree(stores(compression), store)
    assert cli("verify", store).returncode == 0
    chunk = run_dir(store, model_dir) / "hidden" / "c" / "2" / "1" / "0"
    flip_byte(chunk, chunk.stat().st_size // 2 if where == "compressed bytes" else -2)
    result = cli("verify", store)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "hidden/c/2/1/0  (checksum mismatch)" in result.stdout
    ds = actstore.open_run(str(store), model_dir.name, "pairs")
    with pytest.raises(ValueError, match="checksum"):
        ds.hidden.isel(layer=2, token=slice(CHUNK, 2 * CHUNK)).values
    assert np.isfinite(ds.hidden.isel(layer=0).values).all()  # the undamaged layers still read


def cli_extract(cli, model_dir: Path, data: Path, store: Path, *extra: str, env: dict | None = None):
    return cli("extract", "--model", str(model_dir), "--dataset", str(data), "--store", str(store), "--chunk-tokens",
               str(CHUNK), "--batch-size", "5", "--quiet", *extra, env={**ENV, **(env or {})})


def stored_files(store: Path, model_dir: Path) -> dict[str, bytes]:
    """Every file of the run group but its zarr.json (the provenance holds a time) and lock files."""
    base = run_dir(store, model_dir)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p != base / "zarr.json"}


def test_killed_compressed_run_resumes_identical_and_keeps_its_codecs(model_dir, data, tmp_path, cli):
    reference = tmp_path / "reference.zarr"
    done = cli_extract(cli, model_dir, data, reference, "--compression", "zstd")
    assert done.returncode == 0 and done.stdout.startswith("written:"), done.stderr
    store = tmp_path / "acts.zarr"
    killed = cli_extract(cli, model_dir, data, store, "--compression", "zstd", env={"ACTSTORE_FAULT_AFTER_BLOCKS": "3"})
    assert killed.returncode != 0
    attrs = json.loads((run_dir(store, model_dir) / "zarr.json").read_text())["attributes"]
    assert 0 < attrs["progress"]["tokens_done"] < json.loads(
        (run_dir(reference, model_dir) / "zarr.json").read_text())["attributes"]["progress"]["tokens_done"]
    # resumed with another --compression: the array's own codecs win (compression is not in the config hash)
    resumed = cli_extract(cli, model_dir, data, store, "--compression", "blosc-lz4")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed:"), resumed.stdout + resumed.stderr
    assert [c["name"] for c in hidden_codecs(store, model_dir)] == ["bytes", "zstd", "crc32c"]
    got, want = stored_files(store, model_dir), stored_files(reference, model_dir)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []  # chunk files byte for byte, zarr.json included
    ds = actstore.open_run(str(store), model_dir.name, "pairs")
    assert ds.attrs["provenance"]["compression"] == "zstd"  # written when the run was created: what hidden holds
    assert cli("verify", store).returncode == 0
    before = ds.hidden.values  # read now: ``ds`` holds this array's metadata, which --overwrite replaces
    # --overwrite makes it afresh with the compression asked for; the numbers stay the same
    again = cli_extract(cli, model_dir, data, store, "--compression", "blosc-lz4", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert [c["name"] for c in hidden_codecs(store, model_dir)] == ["bytes", "blosc", "crc32c"]
    fresh = actstore.open_run(str(store), model_dir.name, "pairs")
    assert fresh.attrs["provenance"]["compression"] == "blosc-lz4"
    assert_bits_equal(fresh.hidden.values, before, "hidden")


def test_dry_run_says_the_compression(model_dir, data, tmp_path, cli):
    for compression, says in (("none", "none (hidden stored raw"), ("blosc-zstd", "blosc-zstd (lossless, hidden only)")):
        result = cli_extract(cli, model_dir, data, tmp_path / "acts.zarr", "--dry-run", "--compression", compression)
        assert result.returncode == 0, result.stderr
        assert f"compression     {says}" in result.stdout
    assert not (tmp_path / "acts.zarr").exists()


def test_cli_lists_every_compression():
    from activation_store.cli.extract import extract

    (option,) = [p for p in extract.params if p.name == "compression"]
    assert option.metavar == "|".join(COMPRESSIONS) and option.default == "none"


def test_unknown_compression_is_refused_before_anything_runs(model_dir, data, tmp_path):
    with pytest.raises(actstore.ActstoreError, match=r"unknown compression 'lzma'; choose one of none, zstd, "):
        actstore.extract(model=str(model_dir), dataset=str(data), store=str(tmp_path / "x.zarr"), compression="lzma")
    assert not (tmp_path / "x.zarr").exists()
