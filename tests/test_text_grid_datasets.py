"""The paper's text-grid datasets: counts, variants, hand-checked annotations, extraction on a tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

import actstore
from activation_store.errors import ActstoreError
from activation_store.extract.datasets import load_dataset
from activation_store.extract.datasets.code import annotate


def test_counts_and_variants():
    expected = {"code": (164, ("code", "doc")), "semantics": (600, ("sentence", "form", "form-swapped")),
                "sentiment-zh": (1000, ("zh",)), "sentiment-es": (200, ("es",)),
                "arithmetic": (1123, ("digits", "words", "result-first"))}
    for name, (count, variants) in expected.items():
        data = load_dataset(name)
        assert (len(data.items), data.variants) == (count, variants), name
    zh = load_dataset("sentiment-zh")
    assert all(t["zh"].startswith("接下来的文字全部是中文的。") for _, t in zh.items)
    assert sum(i.startswith("pos-") for i, _ in zh.items) == 500
    assert all(t["es"].startswith("Todo el texto siguiente está en español. ") for _, t in load_dataset("sentiment-es").items)
    assert load_dataset("semantics").checksum == load_dataset("semantics").checksum  # seeded: deterministic


def test_list_commas_and_call_parameters_by_hand():
    source = "def f(alpha, beta):\n    return [alpha, (beta), 3]\n\nf(1, y)\nf(alpha, b)\nf(*xs)\n"
    marks = {m.char: m for m in annotate(source)}
    list_commas = [i for i, c in enumerate(source) if c == "," and source.rfind("[", 0, i) > source.rfind("\n", 0, i)]
    assert len(list_commas) == 2
    for comma in list_commas:
        assert (marks[comma].target, marks[comma].alternatives, marks[comma].token) == (" and", (" or", " not"), ",")
    call = source.index("f(1, y)")
    first, second = marks[call + 1], marks[call + 3]
    assert (first.target, first.alternatives, first.token) == ("alpha", ("1",), "(")
    assert (second.target, second.alternatives, second.token) == (" beta", (" y",), ",")
    same = source.index("f(alpha, b)")
    assert same + 1 not in marks         # argument spelled like its parameter: skipped
    assert marks[same + 7].target == " beta"
    assert source.index("f(*xs)") + 1 not in marks                    # starred arguments are not positional
    assert set(marks) == {*list_commas, call + 1, call + 3, same + 7}
    assert annotate("def broken(:\n") == ()


def test_builtin_signature_and_humaneval_docstring_split():
    marks = annotate("len(xs)\nenumerate(things)\n")                 # builtins' own signatures
    assert [(m.target, m.alternatives) for m in marks] == [("obj", ("xs",)), ("iterable", ("things",))]
    data = load_dataset("code")
    items = dict(data.items)
    program = items["HumanEval/2"]
    assert "Given a positive floating point number" in program["doc"]
    assert '"""' not in program["code"] and "return number % 1.0" in program["code"]


def test_semantics_forms_and_roles_by_hand():
    data = load_dataset("semantics")
    items = dict(data.items)
    texts = items["s0001"]
    assert texts["sentence"] == "Tom showed Sam the letter ."
    assert texts["form"] == ("* letter ( x _ 4 ) ; show . agent ( x _ 1 , Tom ) AND show . theme ( x _ 1 , x _ 4 ) "
                             "AND show . recipient ( x _ 1 , Sam )")
    assert texts["form-swapped"] == texts["form"].replace("Tom", "#").replace("Sam", "Tom").replace("#", "Sam")
    (mark,) = data.annotations[("s0001", "sentence")]
    assert texts["sentence"][mark.char] == "d" and texts["sentence"][mark.char + 2:].startswith("Sam")
    assert (mark.target, mark.alternatives) == (" recipient", (" agent", " theme"))
    passive = items["s0004"]["sentence"]
    assert passive == "The ball was given to Lucy by Max ."
    assert [m.target for m in data.annotations[("s0004", "sentence")]] == [" recipient", " agent"]
    for item, texts in data.items:  # every form names both names once, and the swap exchanges them
        names = [w for w in texts["sentence"].split() if w[0].isupper() and w != "The"]
        assert len(names) == 2 and all(texts["form"].count(f", {n} )") == 1 for n in names), item


def test_arithmetic_result_first():
    data = load_dataset("arithmetic")
    assert dict(data.items)["3+2"]["result-first"] == "5=3+"
    (mark,) = data.annotations[("3+2", "result-first")]
    assert (mark.char, mark.target, mark.alternatives) == (3, "2", (" two",))


def test_code_path_and_bad_inputs(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text('def area(width, height):\n    """Area of a box."""\n    return width * height\n\n'
                                           'print(area(2, 3))\n', encoding="utf-8")
    data = load_dataset(f"code:{tmp_path / 'pkg'}")
    assert data.name == "code-pkg" and [i for i, _ in data.items] == ["a.py:area:1"]
    assert dict(data.items)["a.py:area:1"] == {"code": "def area(width, height):\n    return width * height",
                                              "doc": "Area of a box."}
    with pytest.raises(ActstoreError, match="not found"):
        load_dataset(f"code:{tmp_path / 'missing'}")
    (tmp_path / "bad.py").write_text("def f(:\n", encoding="utf-8")
    with pytest.raises(ActstoreError, match=r"bad.py:1: not valid Python"):
        load_dataset(f"code:{tmp_path / 'bad.py'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ActstoreError, match="no Python functions"):
        load_dataset(f"code:{tmp_path / 'empty'}")


@pytest.mark.parametrize("name,variants,limit", [
    ("code", None, 3), ("semantics", None, 4), ("sentiment-zh", None, 2), ("sentiment-es", None, 2),
    ("arithmetic", ["result-first", "digits"], 5),
])
def test_extract_tiny(tiny_model_dir, tmp_path, name, variants, limit):
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=name, store=store, variants=variants, limit=limit,
                     dtype="float32", batch_size=4, progress=False)
    data = load_dataset(name, variants, limit)
    ds = actstore.open_run(store, model_dir.name, data.name)
    assert ds.sizes["example"] == len(data.examples())
    assert np.isfinite(ds.hidden.values).all()
    if not data.annotations:
        assert "target" not in ds.coords
        return
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spell = lambda w: tokenizer.decode(tokenizer(w, add_special_tokens=False)["input_ids"][:1])  # noqa: E731
    marked = np.flatnonzero(ds.target.values != "")
    assert len(marked)
    seen = 0
    for example in data.examples():
        for mark in example.annotations:
            ids = tokenizer(example.text, add_special_tokens=False, return_offsets_mapping=True)
            hit = [i for i, (s, e) in enumerate(ids["offset_mapping"]) if s <= mark.char < e]
            index = int(np.flatnonzero((ds["item"].values == example.item) & (ds.variant.values == example.variant))[0])
            token = int(ds.token_offset.values[index]) + 1 + hit[-1]      # +1: BOS
            if ids["offset_mapping"][hit[-1]][1] != mark.char + 1:
                assert ds.target.values[token] == ""                     # merged with what follows: skipped
                continue
            if ds.target.values[token]:
                seen += 1
                assert ds.target.values[token] == spell(mark.target)
                assert set(json.loads(ds.alternatives.values[token])) <= {spell(a) for a in mark.alternatives}
    assert seen == len(marked)
