"""GGUF files converted once to safetensors, so a second run loads in seconds.

transformers dequantizes a GGUF on every load (about a minute for Gemma 3 270M
on two cores) and refuses ``save_pretrained`` on the result, so the weights are
moved into a fresh model built from the config and saved from there. The cache
key is the GGUF's SHA-256, which is also the model checksum in provenance.
Conversion happens under a file lock, once per machine, even when several
worker processes of a campaign ask for the same model at the same moment; each
conversion appends a line to ``models/conversions.jsonl`` in the cache (which
GGUF, which process, when), so a machine's conversions can be counted."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..cache import cache_root
from ..checksums import sha256_file_once
from ..errors import ActstoreError

MARKER = "actstore-source.json"
LOG = "conversions.jsonl"


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ActstoreError(f"GGUF file not found: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ActstoreError(f"{path} is not a GGUF file (bad magic bytes)")


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold this machine's lock on one cache entry, so worker processes starting at once build it once."""
    from filelock import FileLock

    directory = cache_root() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / f"{name}.lock")):
        yield


def gguf_checksum(gguf: Path) -> str:
    """The SHA-256 of a GGUF file, checked to be one: its model checksum (hashed once per process)."""
    _check_gguf(Path(gguf))
    return sha256_file_once(Path(gguf))


def converted(gguf: Path, name: str) -> tuple[Path, str]:
    """A safetensors directory for ``gguf`` (converting on first use) and the GGUF's SHA-256."""
    gguf = Path(gguf)
    checksum = gguf_checksum(gguf)
    target = cache_root() / "models" / f"{name}-{checksum[:16]}"
    if (target / MARKER).exists():
        return target, checksum
    with cache_lock(target.name):  # the others wait, then find the marker
        if not (target / MARKER).exists():
            started = time.time()
            _convert(gguf, target, checksum)
            record = {"gguf": str(gguf), "sha256": checksum, "target": target.name, "pid": os.getpid(),
                      "host": socket.gethostname(), "started": started, "finished": time.time()}
            with open(target.parent / LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
    return target, checksum


def _convert(gguf: Path, target: Path, checksum: str) -> None:
    """Dequantize ``gguf`` into a fresh model and save it as safetensors at ``target``, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # gguf raises many types for a damaged file
        raise ActstoreError(f"cannot load GGUF {gguf}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": checksum}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-written cache entry is never used
    finally:
        shutil.rmtree(staging, ignore_errors=True)
