"""Integrity: ``actstore verify`` reads every chunk back and names each damaged one; reading a damaged
chunk raises instead of returning wrong numbers. Run with ``-s`` to see the figures."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import actstore


@pytest.fixture(scope="module")
def clean_store(tiny_model_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("verify")
    data = tmp / "pairs.jsonl"
    rows = [{"id": str(i), "en": f"The cat number {i} sits on the table.", "zh": f"第{i}只猫坐在桌子上。"} for i in range(12)]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    store = tmp / "clean.zarr"
    actstore.extract(model=str(tiny_model_dir("llama")), dataset=str(data), store=str(store), chunk_tokens=16,
                     progress=False)
    return store


def copy(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "acts.zarr"
    shutil.copytree(store, target)
    return target


def flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def run_dir(store: Path) -> Path:
    (model,) = [p for p in store.iterdir() if p.is_dir()]
    return model / "pairs"


def test_clean_store_verifies(clean_store, cli):
    result = cli("verify", clean_store)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ") and "0 bad or missing" in result.stdout


DAMAGE = {
    "flipped byte in a hidden chunk": ("hidden/c/2/1/0", "bad", lambda p: flip_byte(p)),
    "flipped byte in its checksum": ("hidden/c/0/0/0", "bad", lambda p: flip_byte(p, -2)),
    "flipped byte in token ids": ("token_id/c/0", "bad", lambda p: flip_byte(p)),
    "flipped byte in example texts": ("text/c/0", "bad", lambda p: flip_byte(p, 20)),
    "truncated hidden chunk": ("hidden/c/1/3/0", "bad", lambda p: p.write_bytes(p.read_bytes()[:50])),
    "empty hidden chunk": ("hidden/c/3/0/0", "bad", lambda p: p.write_bytes(b"")),
    "lost hidden chunk": ("hidden/c/1/2/0", "missing", lambda p: p.unlink()),
    "lost coordinate chunk": ("token_offset/c/0", "missing", lambda p: p.unlink()),
}


def test_each_damaged_chunk_is_named(clean_store, tmp_path, cli):
    detected = 0
    for number, (what, (key, kind, damage)) in enumerate(DAMAGE.items()):
        store = copy(clean_store, tmp_path / str(number))
        damage(run_dir(store) / key)
        result = cli("verify", store)
        model = run_dir(store).parent.name
        expected = f"{kind:<8} {model}/pairs/{key}"
        named = [line for line in result.stdout.splitlines() if line.startswith(expected)]
        assert result.returncode == 2 and "Traceback" not in result.stderr, (what, result.stderr)
        assert re.fullmatch(rf"actstore: error: {re.escape(str(store))}: \d+ arrays, [\d,]+ chunks good, 1 bad or missing",
                            result.stderr.strip()), result.stderr
        assert len(named) == 1 and len(result.stdout.splitlines()) == 1, (what, result.stdout)
        detected += 1
    print(f"\ncorruptions detected {detected} / {len(DAMAGE)}")


def test_flipped_byte_on_disk_is_named_and_reading_it_raises(clean_store, tmp_path, cli):
    store = copy(clean_store, tmp_path)
    chunk = run_dir(store) / "hidden" / "c" / "2" / "1" / "0"
    flip_byte(chunk)
    result = cli("verify", store, "--model", run_dir(store).parent.name, "--dataset", "pairs")
    assert result.returncode == 2
    assert "hidden/c/2/1/0  (checksum mismatch)" in result.stdout
    ds = actstore.open_run(str(store), run_dir(store).parent.name, "pairs")
    with pytest.raises(ValueError, match="checksum"):
        ds.hidden.values
    with pytest.raises(ValueError, match="checksum"):
        ds.hidden.isel(layer=2, token=slice(16, 32)).values
    assert np.isfinite(ds.hidden.isel(layer=0).values).all()  # the undamaged layers still read


def test_lost_chunk_reads_as_nan_never_as_zeros(clean_store, tmp_path):
    store = copy(clean_store, tmp_path)
    (run_dir(store) / "hidden" / "c" / "1" / "2" / "0").unlink()
    values = actstore.open_run(str(store), run_dir(store).parent.name, "pairs").hidden.isel(layer=1).values
    assert np.isnan(values[32:48]).all() and np.isfinite(values[:32]).all()


def test_unfinished_run_is_not_yet_written_not_bad(tiny_model_dir, clean_store, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    data = tmp_path / "pairs.jsonl"
    shutil.copy(Path(json.loads((run_dir(clean_store) / "zarr.json").read_text())["attributes"]["provenance"]
                     ["dataset_source"]), data)
    killed = cli("extract", "--model", tiny_model_dir("llama"), "--dataset", data, "--store", store, "--chunk-tokens", "16",
                 "--quiet", env={"ACTSTORE_FAULT_AFTER_BLOCKS": "3"})
    assert killed.returncode == -9
    result = cli("verify", store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not yet written" in result.stdout and "hidden: " in result.stdout
    assert "(32 of " in result.stdout  # two blocks of 16 committed; the third written, never committed
    uncommitted = run_dir(store) / "hidden" / "c" / "0" / "2" / "0"  # the third block: written, never committed
    assert uncommitted.exists()
    flip_byte(uncommitted)
    assert cli("verify", store).returncode == 0  # past the committed point: not judged
