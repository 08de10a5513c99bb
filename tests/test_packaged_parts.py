"""A GGUF shipped in several PyPI packages is joined once into the cache, and checked against the
SHA-256 its package publishes before anything loads it."""
from __future__ import annotations

import hashlib

import pytest

from activation_store.errors import ActstoreError
from activation_store.extract.packaged import _joined


@pytest.fixture
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTSTORE_CACHE", str(tmp_path / "cache"))
    paths = []
    for k, payload in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]):
        path = tmp_path / f"part{k}"
        path.write_bytes(payload)
        paths.append(path)
    return paths


def test_parts_are_joined_once_and_checked_against_the_published_digest(parts, tmp_path):
    whole = b"".join(p.read_bytes() for p in parts)
    target = tmp_path / "cache" / "gguf" / "model.gguf"
    assert _joined(parts, target, hashlib.sha256(whole).hexdigest(), "pip install x") == target
    assert target.read_bytes() == whole
    stamp = target.stat().st_mtime_ns
    _joined(parts, target, hashlib.sha256(whole).hexdigest())
    assert target.stat().st_mtime_ns == stamp  # found, not joined again


def test_a_join_that_does_not_match_the_published_digest_is_refused_and_leaves_nothing(parts, tmp_path):
    target = tmp_path / "cache" / "gguf" / "model.gguf"
    with pytest.raises(ActstoreError, match=r"does not have the SHA-256 its package publishes; reinstall the parts: "
                                            r"pip install x"):
        _joined(parts, target, "0" * 64, "pip install x")
    assert not target.exists() and not target.with_suffix(".partial").exists()
