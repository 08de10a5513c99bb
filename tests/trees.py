"""A digest of every file under a folder: what "the store was left as it was" compares."""
from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(path).rglob("*")):
        digest.update(str(file.relative_to(path)).encode())
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()
