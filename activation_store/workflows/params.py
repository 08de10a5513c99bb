"""Options several analyses share, declared once, and the parsers that turn option text into compute values.
Parsers raise ``ValueError``; the CLI reports it against the option (``analysis.Param``)."""
from __future__ import annotations

from .analysis import Param

MODALITIES = ("text", "image", "audio")


def split_items(value: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None stays None; a list of nothing is refused."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError("expected a comma-separated list")
    return items


def one_modality(value: str | None) -> str | None:
    """``image``: one modality for every selected example."""
    if value is not None and "=" in value:
        raise ValueError(f"expected one of {', '.join(MODALITIES)}, got {value!r}")
    return value


def modality_per_variant(value: str | None) -> str | dict[str, str] | None:
    """``image`` (every variant) or ``image=image,en=text`` (per variant)."""
    if value is None or "=" not in value:
        return value
    pairs = {}
    for part in split_items(value) or ():
        variant, _, modality = part.partition("=")
        if not variant.strip() or not modality.strip():
            raise ValueError(f"expected VARIANT=MODALITY, got {part!r}")
        pairs[variant.strip()] = modality.strip()
    return pairs


BOOTSTRAP = Param("--bootstrap", "n_boot", "Bootstrap resamples for the 95% interval.", default=1000, kind=int)
LENS = Param("--lens", "lens_mode", "normed: final norm on every layer (tuned-lens convention); raw: none, as the "
             "paper's code.", default="normed", kind=("normed", "raw"))
ANNOTATED_VARIANT = Param("--variant", "variant", "Only the annotated positions of this variant (default: all).")
