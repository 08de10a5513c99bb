"""Datasets whose variants are images or audio clips, and the built-in media sets.

A variant named ``image`` or ``audio`` (or ``image-…``/``audio-…``, ``image_…``/``audio_…``) holds media
references: paths relative to the dataset file, or any fsspec URL. Every file is
read and decoded when the dataset loads, so a missing or corrupt one is named
(with its line) before any model or store is touched, and each file's SHA-256
goes into the dataset checksum: a changed image invalidates a run like a
changed text.

Built in: ``colors`` (solid-colour images made here, paired with the colour
words), ``colors-split`` (left half one colour, right half another: the
intervention set) and ``spoken-words`` (words in several languages spoken by
Debian's espeak-ng into WAV files, paired with their text)."""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ...cache import cache_root
from ...errors import ActstoreError
from .base import Dataset

MEDIA_KINDS = ("image", "audio")
AUDIO_RATE = 16_000  # what audio is resampled to when the model's feature extractor does not say

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20), "green": (20, 160, 40), "blue": (30, 60, 220), "black": (0, 0, 0),
    "white": (255, 255, 255), "yellow": (245, 220, 0), "orange": (250, 140, 0), "purple": (130, 40, 160),
}
SPLIT_PAIRS = [("red", "blue"), ("blue", "red"), ("green", "yellow"), ("yellow", "green"), ("black", "white"),
               ("white", "black")]
# word -> translations spoken in each language (espeak-ng voice names)
SPOKEN = {
    "dog": {"en": "dog", "fr": "chien", "de": "Hund", "es": "perro"},
    "cat": {"en": "cat", "fr": "chat", "de": "Katze", "es": "gato"},
    "water": {"en": "water", "fr": "eau", "de": "Wasser", "es": "agua"},
    "house": {"en": "house", "fr": "maison", "de": "Haus", "es": "casa"},
    "bird": {"en": "bird", "fr": "oiseau", "de": "Vogel", "es": "pájaro"},
    "sun": {"en": "sun", "fr": "soleil", "de": "Sonne", "es": "sol"},
}


def media_kind(variant: str) -> str | None:
    """``"image"``/``"audio"`` for a media variant's name, else None."""
    for kind in MEDIA_KINDS:
        if variant == kind or variant.startswith((f"{kind}-", f"{kind}_")):
            return kind
    return None


def media_variants(dataset: Dataset) -> dict[str, str]:
    """Variant → media kind, for the dataset's media variants."""
    return {v: k for v, k in dataset.meta.get("media", {}).items() if v in dataset.variants}


def read_bytes(reference: str) -> bytes:
    """A media file's bytes from a local path or any fsspec URL."""
    if "://" in reference:
        import fsspec

        with fsspec.open(reference, "rb") as handle:
            return handle.read()
    with open(reference, "rb") as handle:
        return handle.read()


def decode_image(data: bytes, where: str) -> Any:
    """An RGB ``PIL.Image`` from file bytes; a file PIL cannot read is one error naming ``where``."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ActstoreError(f"{where}: not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return image.convert("RGB")


def decode_audio(data: bytes, where: str, rate: int = AUDIO_RATE) -> np.ndarray:
    """Mono float32 samples at ``rate`` Hz (linear resampling) from WAV, FLAC, OGG/Vorbis, MP3 or any other format
    libsndfile reads (through soundfile, whose wheels bundle it); a file it cannot read is one error naming ``where``."""
    import soundfile

    try:
        samples, source_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ActstoreError(f"{where}: not a readable audio file (WAV, FLAC, OGG, MP3…): {reason}") from None
    if not samples.size:
        raise ActstoreError(f"{where}: not a readable audio file (WAV, FLAC, OGG, MP3…): no samples")
    samples = samples.mean(axis=1)
    if source_rate != rate:
        duration = len(samples) / source_rate
        target = np.arange(int(round(duration * rate))) / rate
        samples = np.interp(target, np.arange(len(samples)) / source_rate, samples)
    return samples.astype(np.float32)


def load_media(reference: str, kind: str, where: str, rate: int = AUDIO_RATE) -> tuple[Any, str]:
    """``(decoded media, sha256 of the file)``; a missing or corrupt file is one error naming ``where``."""
    try:
        data = read_bytes(reference)
    except FileNotFoundError:
        raise ActstoreError(f"{where}: {kind} file not found: {reference}") from None
    except OSError as exc:
        raise ActstoreError(f"{where}: cannot read {kind} file {reference} ({exc.strerror or exc})") from None
    decoded = decode_image(data, where) if kind == "image" else decode_audio(data, where, rate)
    return decoded, hashlib.sha256(data).hexdigest()


def attach_media(dataset: Dataset, base: Path | None, lines: dict[str, int] | None = None) -> Dataset:
    """Resolve, read, decode and hash every media reference of ``dataset``; record kinds and hashes in ``meta``."""
    kinds = {v: media_kind(v) for v in dataset.variants if media_kind(v)}
    if not kinds:
        return dataset
    hashes: dict[str, str] = {}
    items = []
    for item_id, values in dataset.items:
        values = dict(values)
        for variant, kind in kinds.items():
            if variant not in values:
                continue
            reference = values[variant].strip()
            if "://" not in reference and base is not None and not Path(reference).is_absolute():
                reference = str((base / reference).resolve())
            where = f"{dataset.source}:{lines[item_id]}" if lines and item_id in lines else f"{dataset.name} item {item_id!r}"
            _, digest = load_media(reference, kind, where)
            values[variant] = reference
            hashes[f"{item_id}\t{variant}"] = digest
        items.append((item_id, values))
    dataset.items = items
    dataset.meta.update(media=kinds, media_sha256=hashes, lines=dict(lines or {}))
    return dataset


def _generated(directory: str) -> Path:
    path = cache_root() / "media" / directory
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_png(image: Any, path: Path) -> None:
    if not path.exists():
        partial = path.with_suffix(".partial")
        image.save(partial, format="PNG")
        partial.replace(path)


def colors() -> Dataset:
    """Solid-colour 336×336 images paired with their colour words (the paper's colour lens)."""
    from PIL import Image

    directory = _generated("colors")
    items = []
    for name, rgb in COLOURS.items():
        path = directory / f"{name}.png"
        _save_png(Image.new("RGB", (336, 336), rgb), path)
        items.append((name, {"image": str(path), "en": name}))
    dataset = Dataset(name="colors", version="1", variants=("image", "en"), items=items,
                      source="generated: solid-colour PNGs (Wu et al. 2024, colour lens)")
    return attach_media(dataset, None)


def colors_split() -> Dataset:
    """Two-colour images, left half one colour and right half another, with both words (the intervention set)."""
    from PIL import Image

    directory = _generated("colors-split")
    items = []
    for left, right in SPLIT_PAIRS:
        path = directory / f"{left}-{right}.png"
        image = Image.new("RGB", (336, 336), COLOURS[left])
        image.paste(Image.new("RGB", (168, 336), COLOURS[right]), (168, 0))
        _save_png(image, path)
        items.append((f"{left}-{right}", {"image": str(path), "en": f"{left} and {right}", "left": left, "right": right}))
    dataset = Dataset(name="colors-split", version="1", variants=("image", "en", "left", "right"), items=items,
                      source="generated: two-colour PNGs, left|right halves (Wu et al. 2024, Chameleon intervention)")
    return attach_media(dataset, None)


def spoken_words() -> Dataset:
    """Words in en/fr/de/es spoken by espeak-ng (one WAV each), paired with their text in every language."""
    if shutil.which("espeak-ng") is None:
        raise ActstoreError("the spoken-words dataset needs espeak-ng to synthesise speech: apt-get install -y espeak-ng")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split()[3:4]
    directory = _generated(f"spoken-words-{version[0] if version else 'unknown'}")
    languages = ("en", "fr", "de", "es")
    items = []
    for word, texts in SPOKEN.items():
        for language in languages:
            path = directory / f"{language}-{word}.wav"
            if not path.exists():
                partial = path.with_suffix(".partial.wav")
                done = subprocess.run(["espeak-ng", "-v", language, "-w", str(partial), texts[language]],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise ActstoreError(f"espeak-ng failed on {texts[language]!r} ({language}): {done.stderr.strip()[:120]}")
                partial.replace(path)
            items.append((f"{word}-{language}", {"audio": str(path), "text": texts[language], "en": texts["en"]}))
    dataset = Dataset(name="spoken-words", version=f"espeak-ng-{version[0] if version else 'unknown'}",
                      variants=("audio", "text", "en"), items=items,
                      source="generated: words spoken by espeak-ng (en, fr, de, es), 22.05 kHz WAV")
    return attach_media(dataset, None)
