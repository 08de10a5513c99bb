"""Every analysis command that saves a result, then the whole store opens as one tree (issue 9).

Results live under /results/<model>/<dataset>/<name>, apart from the runs: a result's own
dimensions (a ``token`` of another length, ``pair``, ``condition``) used to sit under the run and
made ``actstore.open`` fail with "not aligned with its parents"."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import actstore
from activation_store.store import layout
from activation_store.workflows.results import load_from_store

ROWS = [
    {"id": "cat", "en": "The cat sits on the table.", "zh": "猫坐在桌子上。"},
    {"id": "pw", "en": "Change my password", "zh": "修改我的密码"},
    {"id": "sum", "en": "five plus three", "zh": "五加三"},
    {"id": "mul", "en": "twelve times two", "zh": "十二乘以二"},
]


@pytest.fixture(scope="module")
def analysed(tiny_model_dir, tmp_path_factory):
    """A tiny store after extraction, a steering vector, a recorded intervention and every saving analysis
    (the real commands, run in this process by click's runner: no interpreter start-up per command)."""
    from click.testing import CliRunner

    from activation_store.cli import cli

    model_dir = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("results-tree")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS), encoding="utf-8")
    (root / "targets.txt").write_text('"The"\n" table"\n', encoding="utf-8")
    store, out, model = root / "acts.zarr", root / "out", model_dir.name
    actstore.extract(model=str(model_dir), dataset=str(data), store=str(store), dtype="float32", progress=False)
    common = ["--store", store, "--model", model, "--dataset", "pairs", "--out", out]
    commands = [
        ["steering", "define", "--store", store, "--model", model_dir, "--name", "cat-pw", "--layer", "2",
         "--from-states", "pairs:variant=en:item=cat", "--minus", "pairs:variant=en:item=pw"],
        ["extract", "--model", model_dir, "--dataset", data, "--store", store, "--intervene", "cat-pw",
         "--coefficients", "0,4", "--target-tokens", root / "targets.txt", "--quiet"],
        ["analyze", "similarity", *common, "--variants", "en,zh", "--bootstrap", "50"],
        ["analyze", "logit-lens", *common, "--example", "1"],
        ["analyze", "languages", *common, "--variant", "zh", "--languages", "en,zh"],
        ["analyze", "intervention", *common, "--vector", "cat-pw", "--target-tokens", root / "targets.txt",
         "--bootstrap", "50"],
    ]
    for args in commands:
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, (args[:2], result.output)
    return str(store), model


def test_every_saved_result_lives_in_the_results_tree_and_the_store_opens(analysed):
    store, model = analysed
    tree = actstore.open(store)                      # raised "not aligned with its parents" before
    saved = tree[f"{layout.RESULTS}/{layout.run_path(model, 'pairs')}"]
    names = sorted(saved.children)
    assert names == ["intervention-cat-pw", "languages-zh", "logit-lens-example-1", "similarity-last-centered"], names
    run = tree[layout.run_path(model, "pairs")]
    assert "hidden" in run.dataset and not set(run.children) & set(names)   # nothing saved under the run any more
    similarity = saved["similarity-last-centered"].dataset
    assert similarity.sizes["pair"] == 1 and similarity.sizes["layer"] == run.dataset.sizes["layer"]
    lens = saved["logit-lens-example-1"].dataset
    assert lens.sizes["token"] < run.dataset.sizes["token"]      # its own token dimension, apart from the run's
    assert "measured_kl" in saved["intervention-cat-pw"].dataset
    again = load_from_store(store, model, "pairs", "languages-zh")
    assert list(again.language.values) == ["en", "zh"] and again.attrs["variant"] == "zh"


def test_results_is_a_reserved_model_name(analysed, tiny_model_dir, tmp_path):
    store, _ = analysed
    model = tmp_path / "results"                         # a model directory whose name would land on /results
    shutil.copytree(tiny_model_dir("llama"), model)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(ROWS[0]), encoding="utf-8")
    before = sorted((p.relative_to(store), p.read_bytes()) for p in Path(store).rglob("*") if p.is_file())
    with pytest.raises(actstore.ActstoreError, match="may not be named 'results'"):
        actstore.extract(model=str(model), dataset=str(data), store=store, progress=False)
    assert sorted((p.relative_to(store), p.read_bytes()) for p in Path(store).rglob("*") if p.is_file()) == before
    assert layout.results_path("org/model", "d", "x y").startswith("results/org%2Fmodel/d/")


def test_the_readme_notebook_snippet_runs(analysed):
    """The README's notebook lines, on this store: the short ``actstore.analyze`` names as documented."""
    store, model = analysed
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("## In a notebook", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = snippet.replace('"acts.zarr"', repr(store)).replace('"gemma3-270m"', repr(model)).replace('"django-ui"', '"pairs"')
    code = code.replace("layer=12", "layer=1")                           # the tiny model has fewer layers
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["last"].dims == ("layer", "example", "d_model")
    assert list(namespace["zh"]) == [4, 5, 6, 7]
