"""What a dataset is: items, each with one text per variant (language or data type),
optionally with reading positions (annotations) inside some texts."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Annotation:
    """A position to read the logit lens at, and what it should predict there.

    The token that ends right after character ``char`` of the text gets ``target``
    (a word such as " and"; its first token is what the lens reads) and
    ``alternatives`` to compare against. With ``token`` set, the token must be exactly
    that text (whitespace aside), so e.g. a comma merged into "]," is skipped."""

    char: int
    target: str
    alternatives: tuple[str, ...] = ()
    token: str | None = None


@dataclass(frozen=True)
class Example:
    """One input to the model: the text of one variant of one item."""

    item: str
    variant: str
    text: str
    annotations: tuple[Annotation, ...] = ()


@dataclass
class Dataset:
    """Items paired across variants; ``items[i][variant]`` is a text (absent variants are skipped)."""

    name: str
    version: str
    variants: tuple[str, ...]
    items: list[tuple[str, dict[str, str]]]
    source: str = ""
    meta: dict = field(default_factory=dict)
    checksum_of_source: str = ""  # the source's own content identity (a Hugging Face fingerprint), when it has one
    annotations: dict[tuple[str, str], tuple[Annotation, ...]] = field(default_factory=dict)  # (item, variant) -> …

    def examples(self) -> list[Example]:
        """Variant-major order, so one variant's examples are one contiguous slice of the store."""
        return [
            Example(item_id, variant, texts[variant], self.annotations.get((item_id, variant), ()))
            for variant in self.variants
            for item_id, texts in self.items
            if variant in texts
        ]

    @property
    def checksum(self) -> str:
        if self.checksum_of_source:
            return self.checksum_of_source
        parts: list = [self.name, self.version, list(self.variants), self.items]
        if self.annotations:  # only annotated sets carry them, so older sets keep their checksums
            parts.append(sorted([list(key), [[a.char, a.target, list(a.alternatives), a.token] for a in value]]
                                for key, value in self.annotations.items()))
        hashes = self.meta.get("media_sha256")
        if hashes:  # media contents, not just their paths: a changed image changes the checksum
            parts.append([hashes.get(f"{i}\t{v}") for i, texts in self.items for v in self.variants if v in texts])
        payload = json.dumps(parts, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()
