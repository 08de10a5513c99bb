"""What a dataset is: items, each with one text per variant (language or data type)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One input to the model: the text of one variant of one item."""

    item: str
    variant: str
    text: str


@dataclass
class Dataset:
    """Items paired across variants; ``items[i][variant]`` is a text (absent variants are skipped)."""

    name: str
    version: str
    variants: tuple[str, ...]
    items: list[tuple[str, dict[str, str]]]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def examples(self) -> list[Example]:
        """Variant-major order, so one variant's examples are one contiguous slice of the store."""
        return [
            Example(item_id, variant, texts[variant])
            for variant in self.variants
            for item_id, texts in self.items
            if variant in texts
        ]

    @property
    def checksum(self) -> str:
        parts = [self.name, self.version, list(self.variants), self.items]
        hashes = self.meta.get("media_sha256")
        if hashes:  # media contents, not just their paths: a changed image changes the checksum
            parts.append([hashes.get(f"{i}\t{v}") for i, texts in self.items for v in self.variants if v in texts])
        payload = json.dumps(parts, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()
