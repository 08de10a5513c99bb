"""Content hashes used for provenance and cache keys."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_HASHED: dict[tuple[str, int, int, int], str] = {}


def sha256_file_once(path: Path) -> str:
    """``sha256_file``, remembered in this process for a file whose size, mtime and inode are unchanged: a model's
    checksum is needed by the early configuration check and again by the plan, and a large checkpoint takes seconds."""
    status = os.stat(path)
    key = (os.path.realpath(path), status.st_size, status.st_mtime_ns, status.st_ino)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a JSON-able configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
