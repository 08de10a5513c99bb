"""The paper's arithmetic set: "5+3" next to "five plus three", and the paper's prompt form "8=5+".

For b = 1..9: a+b for a = 1..99−b, and a×b for every a ≥ 1 with a×b < 100:
846 + 277 = 1,123 items. Number words come from num2words. Variant
``result-first`` writes the result first and ends before b ("8=5+"); its last
token is annotated with target b as a digit ("3") and alternative b as a word
(" three"): the paper's digit-vs-word logit lens."""
from __future__ import annotations

from num2words import num2words

from .base import Annotation, Dataset

OPERATIONS = {"+": ("plus", lambda a, b: a + b), "*": ("times", lambda a, b: a * b)}


def arithmetic() -> Dataset:
    pairs = [(a, "+", b) for b in range(1, 10) for a in range(1, 100 - b)]
    pairs += [(a, "*", b) for b in range(1, 10) for a in range(1, 100) if a * b < 100]
    items = [_item(*pair) for pair in pairs]
    annotations = {}
    for (item_id, texts), (a, op, b) in zip(items, pairs):
        prompt = texts["result-first"]
        annotations[(item_id, "result-first")] = (Annotation(len(prompt) - 1, str(b), (f" {num2words(b)}",)),)
    return Dataset(
        name="arithmetic",
        version="2",
        variants=("digits", "words", "result-first"),
        items=items,
        source="generated (Wu et al. 2024, §arithmetic); number words by num2words",
        annotations=annotations,
    )


def _item(a: int, op: str, b: int) -> tuple[str, dict[str, str]]:
    word, compute = OPERATIONS[op]
    return f"{a}{op}{b}", {"digits": f"{a}{op}{b}", "words": f"{num2words(a)} {word} {num2words(b)}",
                           "result-first": f"{compute(a, b)}={a}{op}"}
