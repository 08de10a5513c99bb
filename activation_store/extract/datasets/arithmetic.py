"""The paper's arithmetic set: "5+3" next to "five plus three".

For b = 1..9: a+b for a = 1..99−b, and a×b for every a ≥ 1 with a×b < 100:
846 + 277 = 1,123 items. Number words come from num2words."""
from __future__ import annotations

from num2words import num2words

from .base import Dataset

OPERATIONS = {"+": ("plus", lambda a, b: a + b), "*": ("times", lambda a, b: a * b)}


def arithmetic() -> Dataset:
    items = []
    for b in range(1, 10):
        for a in range(1, 100 - b):
            items.append(_item(a, "+", b))
    for b in range(1, 10):
        a = 1
        while a * b < 100:
            items.append(_item(a, "*", b))
            a += 1
    return Dataset(
        name="arithmetic",
        version="1",
        variants=("digits", "words"),
        items=items,
        source="generated (Wu et al. 2024, §arithmetic); number words by num2words",
    )


def _item(a: int, op: str, b: int) -> tuple[str, dict[str, str]]:
    word, _ = OPERATIONS[op]
    return f"{a}{op}{b}", {"digits": f"{a}{op}{b}", "words": f"{num2words(a)} {word} {num2words(b)}"}
