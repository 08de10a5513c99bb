"""Image and audio inputs for vision- and audio-language models: templates, processors, splicing.

A media example is its variant's prompt template with the media spliced in at
the placeholder (``<image>`` or ``<audio>``, or the processor's own token). The
model's processor expands the placeholder into the media tokens the language
model reads, so the stored positions are exactly the model's: LLaVA's patch
tokens (row × column of the vision grid, which need not be square: see
``image_grid``), Chameleon's VQ codes (which are
vocabulary ids: they are stored as the token ids, and fed as such), and
Qwen2-Audio's audio slots (one per 40 ms). Tensors the model needs beside the
ids (pixels, mel features) are made again per batch from the files, checked
against the ids computed up front, so memory stays bounded by a batch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import isqrt
from typing import Any

import numpy as np

from ..errors import ActstoreError
from .datasets import Dataset, Example
from .datasets.media import AUDIO_RATE, load_media, media_variants
from .models import ModelPlan
from .tokens import TokenLayout, tokenize

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>"}


def model_media(config: Any) -> tuple[str, ...]:
    """The media kinds a model reads, from its config: vision tower or VQ model → image; audio tower → audio."""
    kinds = []
    if getattr(config, "vision_config", None) is not None or getattr(config, "vq_config", None) is not None:
        kinds.append("image")
    if getattr(config, "audio_config", None) is not None:
        kinds.append("audio")
    return tuple(kinds)


def media_code_ids(model: Any) -> np.ndarray | None:
    """Vocabulary ids that are media codes (Chameleon's VQ image tokens), or None for models without them."""
    mapping = getattr(getattr(model, "base_model", None), "vocabulary_mapping", None)
    codes = getattr(mapping, "image_tokens", None)
    return np.asarray(sorted(codes), dtype=np.int64) if codes else None


def _native_token(processor: Any, kind: str) -> tuple[str, int]:
    """The processor's placeholder string and its id (``<image>``, ``<|AUDIO|>``…)."""
    token = getattr(processor, f"{kind}_token", None)
    token_id = getattr(processor, f"{kind}_token_id", None)
    if token is None:
        raise ActstoreError(f"the model's processor ({type(processor).__name__}) has no {kind} token")
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(token)
    return str(token), int(token_id)


def render(template: str, kind: str, processor: Any, variant: str) -> str:
    """The template with the generic placeholder replaced by what the processor expands (once, exactly)."""
    native, _ = _native_token(processor, kind)
    generic = PLACEHOLDERS[kind]
    count = template.count(generic) + (template.count(native) if native != generic else 0)
    if count != 1:
        raise ActstoreError(f"the template of variant {variant!r} must hold the {kind} placeholder {generic} exactly once "
                            f"(found {count}): {template!r}")
    if kind == "audio" and native not in template:
        bos, eos = getattr(processor, "audio_bos_token", None), getattr(processor, "audio_eos_token", None)
        native = f"{bos or ''}{native}{eos or ''}"
    return template.replace(generic, native) if generic in template else template


def preprocessing(processor: Any, kinds: tuple[str, ...]) -> dict[str, Any]:
    """What the processor does to media before the model sees it (image size, crop; audio rate, window, stride)."""
    out: dict[str, Any] = {"processor": type(processor).__name__}
    image = getattr(processor, "image_processor", None)
    if "image" in kinds and image is not None:
        for name in ("size", "crop_size", "do_resize", "do_center_crop", "resample", "image_mean", "image_std", "do_normalize"):
            value = getattr(image, name, None)
            if value is not None:
                out[f"image_{name}"] = value if isinstance(value, (int, float, str, bool, list, dict)) else str(value)
        out["image_seq_length"] = getattr(processor, "image_seq_length", None)
    features = getattr(processor, "feature_extractor", None)
    if "audio" in kinds and features is not None:
        for name in ("sampling_rate", "hop_length", "n_fft", "chunk_length", "feature_size"):
            value = getattr(features, name, None)
            if value is not None:
                out[f"audio_{name}"] = value
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in out.items()}


def image_grid(processor: Any, out: dict[str, Any], count: int) -> tuple[int, int] | None:
    """Rows × columns of an image's ``count`` tokens, in raster order, as the processor laid them out: Qwen2-VL's
    ``image_grid_thw`` (patches merged ``merge_size``² into a token), Pixtral's ``image_sizes`` in pixels, LLaVA's
    pixel height and width over ``patch_size``, else a square. None when no reading gives ``count`` tokens
    (LLaVA-Next's tiles with newline tokens): those tokens get no grid cell."""
    image_processor = getattr(processor, "image_processor", None)
    patch = getattr(processor, "patch_size", None)
    patch = patch if isinstance(patch, int) else None
    merge = int(getattr(processor, "spatial_merge_size", None) or 1)
    readings = []
    thw = out.get("image_grid_thw")
    if thw is not None:
        _, h, w = (int(v) for v in thw[0])
        token_merge = int(getattr(image_processor, "merge_size", None) or 1)
        readings.append((h // token_merge, w // token_merge))
    sizes, pixels = out.get("image_sizes"), out.get("pixel_values")
    if sizes is not None and patch:
        h, w = (int(v) for v in sizes[0])
        readings.append((h // (patch * merge), w // (patch * merge)))
    if pixels is not None and patch and getattr(pixels, "ndim", 0) == 4:
        readings.append((int(pixels.shape[-2]) // (patch * merge), int(pixels.shape[-1]) // (patch * merge)))
    side = isqrt(count)
    readings.append((side, side))
    return next(((rows, cols) for rows, cols in readings if rows * cols == count), None)


@dataclass
class _Encoded:
    ids: list[int]
    media_positions: np.ndarray
    inputs: dict[str, Any]
    grid: tuple[int, int] | None = None  # an image's rows × columns of tokens


@dataclass
class MediaLayout(TokenLayout):
    """A token layout where some examples are images or audio clips spliced into a template."""

    kinds: list[str] = field(default_factory=list)            # per example: "text", "image" or "audio"
    references: list[str] = field(default_factory=list)       # per example: media path/URL ("" for text)
    hashes: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    media_positions: list[np.ndarray] = field(default_factory=list)
    grids: list[tuple[int, int] | None] = field(default_factory=list)  # per example: an image's rows × columns
    renderer: Any = None                                      # re-encodes a batch's media for the model
    provenance: dict[str, Any] = field(default_factory=dict)  # templates and preprocessing, for the run's attrs

    def token_coords(self) -> dict[str, np.ndarray]:
        coords = super().token_coords()
        modality, row, col, slot = [], [], [], []
        for ids, kind, where, grid in zip(self.ids, self.kinds, self.media_positions, self.grids):
            n = len(ids)
            m, r, c, s = np.full(n, "text", dtype=object), np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int32)
            if len(where):
                m[where] = kind
                k = np.arange(len(where), dtype=np.int32)
                if kind == "image" and grid is not None:
                    r[where], c[where] = k // grid[1], k % grid[1]
                elif kind == "audio":
                    s[where] = k
            modality.append(m), row.append(r), col.append(c), slot.append(s)
        coords.update(modality=np.concatenate(modality), media_row=np.concatenate(row), media_col=np.concatenate(col),
                      media_slot=np.concatenate(slot))
        return coords

    def example_coords(self) -> dict[str, np.ndarray]:
        coords = super().example_coords()
        coords.update(
            media=np.array(self.references, dtype=object), media_sha256=np.array(self.hashes, dtype=object),
            template=np.array(self.templates, dtype=object),
            media_start=np.array([int(w[0]) if len(w) else -1 for w in self.media_positions], dtype=np.int32),
            media_count=np.array([len(w) for w in self.media_positions], dtype=np.int32),
            media_seconds=np.array(self.seconds, dtype=np.float32),
        )
        return coords

    def model_inputs(self, start: int, stop: int) -> dict[str, Any]:
        """Pixel values / audio features of examples [start, stop), re-made from the files and checked against the ids."""
        return self.renderer(self, start, stop) if self.renderer else {}


class MediaEncoder:
    """Turns media examples into token ids and model inputs with a loaded model's processor."""

    def __init__(self, model: ModelPlan, weights: Callable[[], Any], dataset: Dataset, templates: dict[str, str], bos: bool):
        self.processor, self.weights, self.bos = model.processor, weights, bos
        processor = model.processor
        self.discrete = getattr(model.config, "vq_config", None) is not None  # images become vocabulary ids (Chameleon)
        self.kinds = media_variants(dataset)
        self.lines = dataset.meta.get("lines", {})
        self.hashes = dataset.meta.get("media_sha256", {})
        self.source = dataset.source or dataset.name
        takes = model_media(model.config)
        for variant, kind in self.kinds.items():
            if kind not in takes:
                what = "a text-only model" if not takes else f"a model that reads {' and '.join(takes)} only"
                raise ActstoreError(f"variant {variant!r} holds {kind} but {architecture(model)} is {what}; "
                                    f"choose text variants with --variants, or {'an audio' if kind == 'audio' else 'a vision'}-language model")
        unknown = sorted(set(templates) - set(self.kinds))
        if unknown:
            raise ActstoreError(f"--template given for {unknown[0]!r}, which is not a media variant of this dataset "
                                f"(media variants: {', '.join(self.kinds) or 'none'})")
        self.templates = {v: templates.get(v, PLACEHOLDERS[k]) for v, k in self.kinds.items()}
        self.prompts = {v: render(t, self.kinds[v], processor, v) for v, t in self.templates.items()}
        features = getattr(processor, "feature_extractor", None)
        self.rate = int(getattr(features, "sampling_rate", None) or AUDIO_RATE)

    def _where(self, example: Example) -> str:
        line = self.lines.get(example.item)
        return f"{self.source}:{line}" if line else f"{self.source} item {example.item!r} ({example.variant})"

    def encode(self, example: Example) -> tuple[_Encoded, Any, str]:
        import torch

        kind = self.kinds[example.variant]
        media, digest = load_media(example.text, kind, self._where(example), self.rate)
        expected = self.hashes.get(f"{example.item}\t{example.variant}")
        if expected and digest != expected:
            raise ActstoreError(f"{self._where(example)}: {example.text} changed while the dataset was being read")
        args: dict[str, Any] = {"text": [self.prompts[example.variant]], "return_tensors": "pt", "add_special_tokens": False}
        if kind == "image":
            args["images"] = [media]
        else:
            args.update(audio=[media], sampling_rate=self.rate)
        if type(self.processor).__name__ == "ChameleonProcessor":
            args["return_for_text_completion"] = True  # no separator appended: the prompt is the template, as written
        try:
            out = self.processor(**args)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ActstoreError(f"{self._where(example)}: the processor refused this {kind} "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        ids = out.pop("input_ids")[0].tolist()
        out.pop("attention_mask", None)
        grid_inputs = dict(out)  # Chameleon's pixels give way to codes below; its grid is read from them first
        _, token_id = _native_token(self.processor, kind)
        positions = np.flatnonzero(np.asarray(ids) == token_id)
        if not len(positions):
            raise ActstoreError(f"{self._where(example)}: the processor produced no {kind} tokens")
        if kind == "image" and self.discrete:
            net = self.weights()  # discrete codes: the ids the language model reads, made by the model's own VQ encoder
            with torch.inference_mode():
                codes = net.base_model.get_image_tokens(out["pixel_values"].to(net.device, net.dtype))[0].cpu().tolist()
            if len(codes) != len(positions):
                raise ActstoreError(f"{self._where(example)}: {len(codes)} image codes for {len(positions)} image tokens")
            for position, code in zip(positions, codes):
                ids[position] = int(code)
            out = {}
        prefix = [self.processor.tokenizer.bos_token_id] if self.bos and self.processor.tokenizer.bos_token_id is not None else []
        seconds = len(media) / self.rate if kind == "audio" else 0.0
        grid = image_grid(self.processor, grid_inputs, len(positions)) if kind == "image" else None
        return _Encoded(prefix + ids, positions + len(prefix), dict(out), grid), seconds, digest

    def layout(self, examples: list[Example], suffixes: dict[str, str] | None) -> MediaLayout:
        """Token ids of every example (text through the tokenizer as usual, media through the processor)."""
        text = [e for e in examples if e.variant not in self.kinds]
        plain = tokenize(self.processor.tokenizer, text, bos=self.bos, suffixes=suffixes) if text else None
        by_text = dict(zip(text, zip(plain.ids, plain.inputs))) if plain else {}
        layout = MediaLayout(examples, [], [], renderer=self.batch_inputs, provenance={
            "templates": self.templates, "media_variants": self.kinds,
            "preprocessing": preprocessing(self.processor, tuple(sorted(set(self.kinds.values()))))})
        for example in examples:
            if example in by_text:
                ids, rendered = by_text[example]
                layout.ids.append(ids), layout.inputs.append(rendered)
                layout.kinds.append("text"), layout.references.append(""), layout.hashes.append("")
                layout.templates.append(""), layout.seconds.append(0.0), layout.media_positions.append(np.zeros(0, np.int64))
                layout.grids.append(None)
                continue
            encoded, seconds, digest = self.encode(example)
            layout.ids.append(encoded.ids), layout.inputs.append(self.prompts[example.variant])
            layout.kinds.append(self.kinds[example.variant]), layout.references.append(example.text)
            layout.hashes.append(digest), layout.templates.append(self.templates[example.variant])
            layout.seconds.append(seconds), layout.media_positions.append(encoded.media_positions)
            layout.grids.append(encoded.grid)
        return layout

    def batch_inputs(self, layout: MediaLayout, start: int, stop: int) -> dict[str, Any]:
        import torch

        parts: dict[str, list] = {}
        for index in range(start, min(stop, len(layout.examples))):
            example = layout.examples[index]
            if layout.kinds[index] == "text":
                continue
            encoded, _, _ = self.encode(example)
            if encoded.ids != layout.ids[index]:
                raise ActstoreError(f"{self._where(example)}: {example.text} now gives other tokens than when the run began")
            for name, value in encoded.inputs.items():
                parts.setdefault(name, []).append(value)
        net = self.weights()
        device, dtype = net.device, net.dtype
        return {name: _stack(values).to(device, dtype if values[0].is_floating_point() else values[0].dtype)
                for name, values in parts.items()}


def _stack(values: list[Any]) -> Any:
    """One batch from per-example tensors; ones of different sizes (Pixtral's images of their own height and
    width) are zero-padded at the end of each dimension, as the processors pad a batch."""
    import torch

    if len({tuple(v.shape[1:]) for v in values}) == 1:
        return torch.cat(values)
    size = [max(v.shape[d] for v in values) for d in range(1, values[0].ndim)]
    padded = []
    for v in values:
        pad = [amount for d in reversed(range(1, v.ndim)) for amount in (0, size[d - 1] - v.shape[d])]
        padded.append(torch.nn.functional.pad(v, pad))
    return torch.cat(padded)


def architecture(model: ModelPlan) -> str:
    """The model's class name as its config names it (the weights need not be loaded)."""
    return next(iter(getattr(model.config, "architectures", None) or []), type(model.config).__name__)


def media_layout(model: ModelPlan, dataset: Dataset, examples: list[Example], *, bos: bool,
                 suffixes: dict[str, str] | None, templates: dict[str, str] | None,
                 weights: Callable[[], Any]) -> TokenLayout | None:
    """The token layout of a run: None for text-only datasets (the caller tokenizes as always), else media
    spliced in via the processor. ``weights`` loads the model, only if its own encoder makes the media's ids."""
    kinds = media_variants(dataset)
    if not kinds:
        if templates:
            raise ActstoreError(f"--template is for media variants (image, audio); dataset {dataset.name!r} has none")
        return None  # the caller tokenizes text as always
    if model.processor is None:
        first = next(iter(kinds))
        raise ActstoreError(f"variant {first!r} holds {kinds[first]} but {architecture(model)} is a text-only model; "
                            f"choose text variants with --variants, or {'an audio' if kinds[first] == 'audio' else 'a vision'}-language model")
    return MediaEncoder(model, weights, dataset, templates or {}, bos).layout(examples, suffixes)
