"""The analyze commands end to end: CSV, PNG and results under the store; bad input leaves the store as it was."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import matplotlib.image
import pytest

import actstore
from activation_store.workflows.results import load_from_store


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-analysis")
    rows = [{"id": f"i{k}", "en": f"the number {k}", "zh": f"第{k}", "fr": f"numéro {k}"} for k in range(8)]
    rows.append({"id": "lonely", "en": "only english here"})
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    store = root / "acts.zarr"
    model_dir = tiny_model_dir("llama")
    actstore.extract(model=str(model_dir), dataset=str(data), store=str(store), progress=False)
    return store, model_dir.name, root


def test_similarity_command(run, cli, tmp_path):
    store, model, _ = run
    result = cli("analyze", "similarity", "--store", store, "--model", model, "--dataset", "pairs",
                 "--variants", "en,zh,fr", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "en-zh" in result.stdout and "zh-fr" in result.stdout
    image = matplotlib.image.imread(tmp_path / "similarity-last-centered.png")
    assert image.shape[0] > 200 and image.shape[1] > 300
    csv = (tmp_path / "similarity-last-centered.csv").read_text().splitlines()
    assert csv[0].startswith("pair,layer,score,ci_low,ci_high") and len(csv) == 1 + 3 * 4
    saved = load_from_store(str(store), model, "pairs", "similarity-last-centered")
    assert set(saved.pair.values) == {"en-zh", "en-fr", "zh-fr"}


def test_logit_lens_and_languages_commands(run, cli, tmp_path):
    store, model, _ = run
    targets = tmp_path / "targets.jsonl"
    targets.write_text(json.dumps({"item": "i1", "variant": "en", "target": "<s>"}) + "\n")
    result = cli("analyze", "logit-lens", "--store", store, "--model", model, "--dataset", "pairs", "--example", "0",
                 "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "top-1 token per layer" in result.stdout
    assert matplotlib.image.imread(tmp_path / "logit-lens-example-0.png").ndim == 3
    result = cli("analyze", "logit-lens", "--store", store, "--model", model, "--dataset", "pairs", "--variant", "en",
                 "--targets", targets, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "logit-lens-en-targets.png").exists()
    result = cli("analyze", "languages", "--store", store, "--model", model, "--dataset", "pairs", "--variant", "zh",
                 "--languages", "en,zh,fr", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert matplotlib.image.imread(tmp_path / "languages-zh.png").ndim == 3


BAD = [
    (["similarity", "--model", "nope"], "model 'nope'"),
    (["similarity", "--dataset", "nope"], "dataset 'nope'"),
    (["similarity", "--variants", "en,xx"], "variant 'xx'"),
    (["similarity", "--variants", "en"], "at least two variants"),
    (["similarity", "--variants", "en,en"], "two different variants"),
    (["similarity", "--layers", "99"], "layer 99 is out of range"),
    (["similarity", "--layers", "a,b"], "comma-separated integers"),
    (["similarity", "--bootstrap", "0"], "bootstrap needs at least 1 resample"),
    (["logit-lens", "--example", "999"], "example 999 is out of range"),
    (["logit-lens", "--variant", "xx"], "variant 'xx'"),
    (["logit-lens", "--targets", "TARGETS"], "no token 'definitely-not-a-token'"),
    (["logit-lens", "--targets", "missing.jsonl"], "targets file not found"),
    (["logit-lens", "--targets", "bogus-rule"], "targets file not found"),
    (["logit-lens", "--top-k", "0"], "top-k must be at least 1"),
    (["languages", "--languages", "en,xx"], "no frequency list for xx"),
    (["similarity", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the dask scheduler"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_analysis_input(run, cli, tmp_path, args, message):
    store, model, _ = run
    targets = tmp_path / "targets.jsonl"
    targets.write_text(json.dumps({"example": 0, "target": "definitely-not-a-token"}) + "\n")
    command, *rest = args
    options = {"--model": model, "--dataset": "pairs"}
    for key, value in zip(rest[::2], rest[1::2]):
        options[key] = str(targets) if value == "TARGETS" else value
    flat = [x for pair in options.items() for x in pair]
    before = tree_digest(store)
    result = cli("analyze", command, "--store", store, "--out", tmp_path / "out", *flat)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(store) == before
