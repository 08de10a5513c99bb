"""Model names: what a user types (a packaged model, an alias of a checkpoint the paper used, a hub id, a local
directory or ``.gguf`` file) resolved to a store name and a local checkpoint (see ``models``)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..checksums import sha256_file_once
from ..errors import ActstoreError
from .gguf_cache import converted, gguf_checksum
from .packaged import PACKAGED


# The text models of Wu et al. (2024); their weights are never packaged here.
ALIASES: dict[str, str] = {
    "llama3": "meta-llama/Meta-Llama-3-8B",
    "llama2": "meta-llama/Llama-2-7b-hf",
    "baichuan2": "baichuan-inc/Baichuan2-7B-Base",
    # vision- and audio-language models: their language model's states are stored (extract/media.py)
    "llava": "llava-hf/llava-1.5-7b-hf",
    "chameleon": "facebook/chameleon-7b",
    "qwen2-audio": "Qwen/Qwen2-Audio-7B-Instruct",
}

DEFAULT_MODEL = "gemma3-270m"


def known_models() -> list[str]:
    return [*PACKAGED, *ALIASES]


def _checkpoint_checksum(directory: Path) -> str:
    """SHA-256 over the weight files (full contents below 4 GB, else their safetensors headers)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ActstoreError(f"{directory} holds no .safetensors weights (pickled weights are never loaded)")
    total = sum(f.stat().st_size for f in files)
    digest = hashlib.sha256()
    for f in files:
        if total < 4 << 30:
            digest.update(sha256_file_once(f).encode())
        else:
            with open(f, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                digest.update(handle.read(size))
            digest.update(str(f.stat().st_size).encode())
    return digest.hexdigest()


WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
CONFIG_PATTERNS = ["*.json", "*.model", "*.txt"]  # config and tokenizer: what --dry-run needs


def _hub_snapshot(repo_id: str, alias: str, patterns: list[str] = WEIGHT_PATTERNS) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        offline = True
    else:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception:
            offline = True
    raise ActstoreError(
        f"model {alias!r} ({repo_id}) is not available offline: pass --model /path/to/its/checkpoint, "
        f"or download it first where the hub is reachable (huggingface-cli download {repo_id})"
        + (" [HF_HUB_OFFLINE is set]" if offline and os.environ.get("HF_HUB_OFFLINE") else "")
    )


def store_name(model: str) -> str:
    """The name a model has in a store, from what a user typed; ``resolve`` names models by this one rule.

    Registry names, aliases and hub ids stay as typed; a ``.gguf`` file is named by its stem and a
    model directory by its own name, so the same checkpoint gets the same name from any working directory."""
    if model in PACKAGED or model in ALIASES:
        return model
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return model


def locate(model: str, weights: bool = True) -> tuple[str, Path, bool]:
    """``(store name, checkpoint directory or GGUF file, whether it is a GGUF)``: every check of the name (unknown,
    package not installed, not available offline), with no conversion and no transformers, so a bad name is
    refused in a second.

    ``weights=False`` fetches only an alias's config and tokenizer (for estimates)."""
    name = store_name(model)
    if model in PACKAGED:
        return name, PACKAGED[model].gguf(), True
    if model in ALIASES:
        return name, _hub_snapshot(ALIASES[model], model, WEIGHT_PATTERNS if weights else CONFIG_PATTERNS), False
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        return name, path, True
    if path.is_dir():
        return name, path, False
    if "/" in model and not path.exists() and not model.startswith((".", "/", "~")):
        return name, _hub_snapshot(model, model, WEIGHT_PATTERNS if weights else CONFIG_PATTERNS), False
    raise ActstoreError(f"unknown model {model!r}; known names: {', '.join(known_models())}, or a model directory or .gguf file")


def resolve(model: str, weights: bool = True) -> tuple[str, Path, str | None]:
    """``(store name, local path, gguf checksum or None)`` for a model name or path (a GGUF converted on first use).

    ``weights=False`` fetches only an alias's config and tokenizer (for estimates)."""
    name, path, gguf = locate(model, weights)
    if gguf:
        directory, checksum = converted(path, name)
        return name, directory, checksum
    return name, path, None


def model_checksum(model: str) -> tuple[str, str]:
    """``(store name, checksum)`` as ``plan_model`` records them (the GGUF's SHA-256, else the weights'), without
    converting a GGUF or importing transformers: what checking a stored run's configuration needs of the model."""
    name, path, gguf = locate(model)
    return name, (gguf_checksum(path) if gguf else _checkpoint_checksum(path))
