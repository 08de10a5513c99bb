"""Figures render Chinese and Japanese with the bundled Noto Sans CJK font, not as missing-glyph boxes.

Matplotlib draws a glyph no font has as its Last Resort font's box for the character's
Unicode block, the same box for every character of the block. So two different characters
of one block (two ideographs, two hiragana) drawn alone must give different pixels. Drawn
with matplotlib's default font only they give the same box, so the check can fail."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from activation_store.plot.fonts import CJK, cjk_font_path, cjk_fonts

# two characters of one Unicode block each: CJK Unified Ideographs (one simplified-only), Hiragana
PAIRS = {"zh": ("猫", "这"), "ja": ("の", "ぬ")}


def pixels(char: str) -> np.ndarray:
    fig = Figure(figsize=(0.6, 0.6), dpi=100)
    fig.text(0.5, 0.5, char, fontsize=30, ha="center", va="center")
    canvas = FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "Glyph … missing from font(s)", for the default-font drawing
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0].copy()


def test_the_bundled_font_has_the_glyphs():
    face = FT2Font(cjk_font_path())
    assert face.family_name.startswith("Noto Sans CJK")
    for pair in PAIRS.values():
        for char in pair:
            assert ord(char) in face.get_charmap(), char


@pytest.mark.parametrize("language", sorted(PAIRS))
def test_cjk_characters_render_as_glyphs_not_boxes(language):
    first, second = PAIRS[language]
    with rc_context({"font.family": ["DejaVu Sans"]}):
        assert np.array_equal(pixels(first), pixels(second))      # without the CJK font: one block's box
    with cjk_fonts():
        drawn = pixels(first), pixels(second)
    assert (drawn[0] < 128).any() and (drawn[1] < 128).any()
    assert not np.array_equal(*drawn), f"{first!r} and {second!r} rendered as the same missing-glyph box"


def test_the_figure_font_list_names_the_cjk_face_and_leaves_the_caller_settings_alone():
    from matplotlib import rcParams

    before = list(rcParams["font.family"])
    with cjk_fonts():
        assert CJK in rcParams["font.family"]
    assert list(rcParams["font.family"]) == before


def test_a_logit_lens_figure_draws_chinese_tokens_as_glyphs(tmp_path):
    import matplotlib.image
    import xarray as xr

    from activation_store.plot import logit_lens_plot

    def figure(token: str):
        result = xr.Dataset({"top_prob": (("layer", "token", "rank"), np.full((2, 1, 1), 0.3)),
                             "top_token": (("layer", "token", "rank"), np.full((2, 1, 1), token, dtype=object))},
                            coords={"layer": [0, 1]}, attrs={"input_tokens": [token]})
        return matplotlib.image.imread(logit_lens_plot(result, tmp_path / f"{ord(token)}.png", title=token))

    assert not np.array_equal(figure("猫"), figure("这"))
