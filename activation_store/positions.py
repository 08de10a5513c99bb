"""Position selections: the one grammar for which tokens a run keeps, a loader reads and a vector steers.

One vocabulary, parsed here: the words ``all``, ``last`` and ``mean``; a Python slice
``START:END``; a modality ``image``/``audio``/``text`` (also spelt ``modality:image``) or
one half of each image's grid, ``image:top|bottom|left|right``; and, from Python, a list
of integers (negative ones count from each example's end). Each place takes the part of
it that makes sense there and names its own option when refusing the rest:

- extraction's ``--positions`` (what a run stores): ``all``, ``last``, ``mean`` — ``parse_kept``;
- the loader's ``positions=`` (which stored tokens it reads): ``all``/None, ``last``, integers — ``parse_read``;
- ``--steer-positions`` (which prompt tokens get a vector): ``all``, ``last``, a slice, a modality or an
  image half — ``parse_steered``.

Plain Python and ``re`` only: store-free code (the CLI, the campaign planner) parses selections without
importing torch or numpy."""
from __future__ import annotations

import re
from typing import Any

from .errors import ActstoreError

KEPT = ("all", "last", "mean")  # what extraction can store per example
WORDS = KEPT
MODALITIES = ("image", "audio", "text")
HALVES = {"top": "media_row", "bottom": "media_row", "left": "media_col", "right": "media_col"}  # → the grid coord
STEER_OPTION = "--steer-positions"  # the CLI option holding a steered selection, named in messages

Selection = str | slice | tuple[int, ...]  # a word or modality in canonical spelling, a slice, or integers
_MEDIA = re.compile(rf"(?:modality:)?({'|'.join(MODALITIES)})(?::(\w+))?")
_SLICE = re.compile(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*")


def parse(value: Any) -> Selection | None:
    """``value`` in its canonical form (``modality:image`` → ``image``), or None when it is no selection at all.

    Text is taken as written (callers decide about surrounding spaces); anything else must be integers."""
    if isinstance(value, str):
        if value in WORDS:
            return value
        media = _MEDIA.fullmatch(value)
        if media and (media[2] is None or (media[1] == "image" and media[2] in HALVES)):
            return f"{media[1]}:{media[2]}" if media[2] else media[1]
        match = _SLICE.fullmatch(value)
        if match:
            return slice(int(match[1]) if match[1] else None, int(match[2]) if match[2] else None)
        return None
    try:
        return tuple(int(p) for p in ([value] if isinstance(value, int) else value))
    except (TypeError, ValueError):
        return None


def kind(selection: Selection | None) -> str | None:
    """What sort of selection it is: a word (``all``, ``last``, ``mean``), ``slice``, ``modality`` or ``indices``."""
    if selection is None:
        return None
    if isinstance(selection, slice):
        return "slice"
    if isinstance(selection, tuple):
        return "indices"
    return selection if selection in WORDS else "modality"


def parse_kept(value: Any) -> str:
    """Extraction's ``--positions``: every token's states, or one per example (the last token's, or the mean)."""
    chosen = parse(value) if isinstance(value, str) else None
    if kind(chosen) not in KEPT:
        raise ActstoreError(f"--positions must be all, last or mean, got {value!r}")
    return chosen


def parse_read(value: Any) -> tuple[int, ...] | None:
    """The loader's ``positions``: None for every token, else the positions read (``last`` is ``(-1,)``)."""
    if value is None:
        return None
    chosen = parse(value)
    if isinstance(value, str):
        if kind(chosen) not in ("all", "last"):
            raise ActstoreError(f"unknown positions {value!r}; use 'all', 'last' or a list of positions")
        return None if chosen == "all" else (-1,)
    if kind(chosen) != "indices":
        raise ActstoreError(f"positions must be 'all', 'last' or a list of integers, got {value!r}")
    return chosen


def parse_steered(value: Any) -> str | slice:
    """``--steer-positions``: ``all``, ``last``, a slice, a modality or an image half, spaces around it ignored."""
    text = (value or "").strip()
    chosen = parse(text)
    if kind(chosen) not in ("all", "last", "slice", "modality"):
        raise ActstoreError(f"{STEER_OPTION} must be all, last, START:END (a Python slice), image, audio, text "
                            f"or image:top|bottom|left|right, got {text!r}")
    return chosen
