"""The one grammar of position selections (activation_store/positions.py) and the three places that take it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from activation_store import positions
from activation_store.errors import ActstoreError


@pytest.mark.parametrize("text, canonical", [
    ("all", "all"), ("last", "last"), ("mean", "mean"), ("image", "image"), ("modality:audio", "audio"),
    ("modality:image:top", "image:top"), ("image:right", "image:right"), ("2:", slice(2, None)),
    (" -3 : -1 ", slice(-3, -1)), (":", slice(None, None)), ([0, -1], (0, -1)), (4, (4,)),
])
def test_canonical_forms(text, canonical):
    assert positions.parse(text) == canonical


@pytest.mark.parametrize("text", ["first", "", "audio:top", "text:left", "image:middle", "Image", " last", "0:5:2"])
def test_not_a_selection(text):
    assert positions.parse(text) is None


def test_each_place_takes_its_part():
    assert [positions.parse_kept(p) for p in ("all", "last", "mean")] == ["all", "last", "mean"]
    assert positions.parse_read(None) is None and positions.parse_read("all") is None
    assert positions.parse_read("last") == (-1,) and positions.parse_read([0, "2", -1]) == (0, 2, -1)
    assert positions.parse_steered(" modality:image ") == "image"
    assert positions.parse_steered("1:3") == slice(1, 3)


@pytest.mark.parametrize("parse, value, message", [
    (positions.parse_kept, "first", "--positions must be all, last or mean, got 'first'"),
    (positions.parse_kept, "0:4", "--positions must be all, last or mean, got '0:4'"),
    (positions.parse_kept, " last", "--positions must be all, last or mean, got ' last'"),
    (positions.parse_read, "mean", "unknown positions 'mean'; use 'all', 'last' or a list of positions"),
    (positions.parse_read, ["a"], "positions must be 'all', 'last' or a list of integers, got ['a']"),
    (positions.parse_steered, "mean", "--steer-positions must be all, last, START:END (a Python slice), image, "
                                      "audio, text or image:top|bottom|left|right, got 'mean'"),
    (positions.parse_steered, " audio:top ", "got 'audio:top'"),
])
def test_refusals_name_their_option(parse, value, message):
    with pytest.raises(ActstoreError) as caught:
        parse(value)
    assert message in str(caught.value)


def test_the_three_places_use_it():
    from activation_store.extract import interventions, keep

    assert keep.POSITIONS == positions.KEPT and keep.check_positions("mean") == "mean"
    assert interventions.parse_positions("modality:text") == "text"
    assert interventions.HALVES is positions.HALVES and interventions.POSITIONS_OPTION == "--steer-positions"


def test_parsing_needs_no_torch():
    code = "import sys, activation_store.positions as p; p.parse_steered('image:top'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
