"""A CJK-capable font for every figure: Noto Sans CJK from the ``noto-cjk-sans-otc`` package.

Matplotlib's default DejaVu Sans has no CJK glyphs, so Chinese and Japanese tokens
would render as boxes. The package installs the Noto Sans CJK collection (SC, TC,
JP, KR faces in one file); it is registered with ``matplotlib.font_manager`` once
and used as a fallback after DejaVu Sans (matplotlib ≥ 3.6 falls back per glyph)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from matplotlib import font_manager, rc_context

PRIMARY = "DejaVu Sans"
CJK = "Noto Sans CJK SC"          # the Simplified Chinese face: Chinese first, and it covers kana too
# used when present on the system, for scripts Noto Sans CJK lacks
OTHERS = ("Noto Sans Devanagari", "Noto Sans Arabic")


@functools.cache
def cjk_font_path() -> str:
    """The bundled Noto Sans CJK collection, registered with matplotlib's font manager (once per process)."""
    from noto_cjk_sans_otc import FONT_PATH

    path = str(FONT_PATH)
    font_manager.fontManager.addfont(path)
    return path


def families() -> list[str]:
    """The font family list every figure uses: DejaVu Sans, then the CJK font, then other installed scripts."""
    cjk_font_path()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [PRIMARY, CJK, *(name for name in OTHERS if name in installed)]


@contextlib.contextmanager
def cjk_fonts() -> Iterator[None]:
    """Figures made inside use the fallback family list (leaves the caller's settings alone afterwards)."""
    with rc_context({"font.family": families()}):
        yield
