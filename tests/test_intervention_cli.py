"""The intervention commands as a user runs them: define, record (deterministic), analyse, list; bad input refused.

A refused command prints one line, exits non-zero and leaves every file of the store as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import actstore
from activation_store.store.interventions import intervention_path, open_recorded

ROWS = [
    {"id": "good", "en": "The cat sits on the table.", "fr": "Le chat est assis sur la table."},
    {"id": "bad", "en": "Change my password", "fr": "Modifier mon mot de passe"},
    {"id": "sum", "en": "five plus three", "fr": "cinq plus trois"},
    {"id": "mul", "en": "twelve times two", "fr": "douze fois deux"},
]


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*")):
        digest.update(str(file.relative_to(path)).encode())
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def base(tiny_model_dir, tmp_path_factory, _forked_cli):
    """A store with a plain run and two vectors, made through the CLI."""
    model_dir = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("intervene-cli")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    (root / "targets.txt").write_text('"The"\n" table"\nLe\n', encoding="utf-8")
    store = root / "acts.zarr"
    for args in (["extract", "--model", model_dir, "--dataset", data, "--store", store, "--dtype", "float32", "--quiet"],
                 ["steering", "define", "--store", store, "--model", model_dir, "--name", "good-bad", "--layer", "2",
                  "--from-states", "pairs:variant=en:item=good", "--minus", "pairs:variant=en:item=bad"],
                 ["steering", "define", "--store", store, "--model", model_dir, "--name", "the-table", "--layer", "1",
                  "--from-unembedding", "The", "--minus", " table", "--coefficient", "2"]):
        result = _forked_cli(*args)
        assert result.returncode == 0, result.stderr
    return model_dir, root, data, store


def record(cli, model_dir, data, store, *extra):
    return cli("extract", "--model", model_dir, "--dataset", data, "--store", store, "--intervene", "good-bad",
               "--coefficients", "0,5,20", "--generate", "4", "--seed", "0..2", "--target-tokens", data.parent / "targets.txt",
               "--steer-positions", "all", "--record-layers", "1,2", "--batch-size", "3", "--quiet", *extra)


def test_record_is_deterministic_and_analysable(base, cli, tmp_path):
    model_dir, root, data, store = base
    stores = []
    for copy in ("a", "b"):
        target = tmp_path / copy / "acts.zarr"
        shutil.copytree(store, target)
        result = record(cli, model_dir, data, target)
        assert result.returncode == 0, result.stderr
        assert "written" in result.stdout
        stores.append(target)
    path = intervention_path(model_dir.name, "pairs", "good-bad")
    assert tree_hash(stores[0] / path) == tree_hash(stores[1] / path)     # every file of the recorded run, bytes
    again = record(cli, model_dir, data, stores[0])
    assert again.returncode == 0 and "already complete" in again.stdout
    assert tree_hash(stores[0] / path) == tree_hash(stores[1] / path)

    assert actstore.open(str(stores[0])) is not None  # the whole tree still opens
    ds = open_recorded(str(stores[0]), model_dir.name, "pairs", "good-bad")
    assert ds.seed.values.tolist() == [0, 1, 2] and ds.states.sizes["layer"] == 2
    generated = ds.generated_id.values
    assert not (generated[:, 0] == generated[:, 1]).all()     # different seeds, different samples
    listing = cli("ls", stores[0])
    assert listing.returncode == 0 and "steering vectors" in listing.stdout and "good-bad" in listing.stdout
    assert "recorded interventions" in listing.stdout and "0,5,20" in listing.stdout
    checked = cli("verify", stores[0])
    assert checked.returncode == 0 and "not yet written" not in checked.stdout, checked.stdout

    out = tmp_path / "results"
    analysis = cli("analyze", "intervention", "--store", stores[0], "--model", model_dir.name, "--dataset", "pairs",
                   "--vector", "good-bad", "--target-tokens", root / "targets.txt", "--bootstrap", "100", "--out", out)
    assert analysis.returncode == 0, analysis.stderr
    assert "coef  20.00" in analysis.stdout and "outcomes" in analysis.stdout
    for name in ("intervention-good-bad.csv", "intervention-good-bad-per-example.csv",
                 "intervention-good-bad-outcomes.csv", "intervention-good-bad.png"):
        assert (out / name).stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(out / "intervention-good-bad.csv")
    assert set(table.source) == {"measured", "lens-forecast"}
    baseline = table[table.coefficient == 0]
    assert np.allclose(baseline[baseline.metric.isin(["kl", "top1_changed", "delta_logprob"])]["mean"], 0)


BAD = {
    "wrong hidden size": (["steering", "define", "--name", "x", "--layer", "2", "--from-file", "{root}/wide.npy"],
                          "hidden size"),
    "layer out of range": (["steering", "define", "--name", "x", "--layer", "9", "--from-unembedding", "The"],
                           "out of range"),
    "layer 0": (["steering", "define", "--name", "x", "--layer", "0", "--from-unembedding", "The"], "out of range"),
    "token not in vocabulary": (["steering", "define", "--name", "x", "--layer", "1", "--from-unembedding", "zebra"],
                                "no token"),
    "unknown selector key": (["steering", "define", "--name", "x", "--layer", "1", "--from-states", "pairs:lang=en"],
                             "key=value"),
    "existing name": (["steering", "define", "--name", "good-bad", "--layer", "1", "--from-unembedding", "The"],
                      "already exists"),
    "unknown vector": (["extract", "--intervene", "nope", "--coefficients", "1"], "no steering vector"),
    "coefficients not numbers": (["extract", "--intervene", "good-bad", "--coefficients", "1,two"], "not a number"),
    "coefficients not finite": (["extract", "--intervene", "good-bad", "--coefficients", "1,nan"], "finite"),
    "targets the vocabulary lacks": (["extract", "--intervene", "good-bad", "--coefficients", "1", "--target-tokens",
                                      "{root}/missing.txt"], "no token"),
    "bad positions": (["extract", "--intervene", "good-bad", "--coefficients", "1", "--steer-positions", "first"], "--steer-positions"),
    "empty positions": (["extract", "--intervene", "good-bad", "--coefficients", "1", "--steer-positions", "50:60"],
                        "selects no token"),
    "seed without generate": (["extract", "--intervene", "good-bad", "--coefficients", "1", "--seed", "0..3"],
                              "--generate"),
    "not recorded": (["analyze", "intervention", "--vector", "the-table"], "no recorded intervention"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_leaves_the_store(base, cli, case):
    model_dir, root, data, store = base
    np.save(root / "wide.npy", np.ones(33, dtype=np.float32))
    (root / "missing.txt").write_text("zebra-token\n", encoding="utf-8")
    args, expected = BAD[case]
    args = [a.format(root=root) for a in args]
    where = {"steering": ["--store", store, "--model", model_dir],
             "extract": ["--store", store, "--model", model_dir, "--dataset", data, "--quiet"],
             "analyze": ["--store", store, "--model", model_dir.name, "--dataset", "pairs", "--out", root / "res"]}[args[0]]
    before = tree_hash(store)
    result = cli(*args, *where)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1 and lines[0].startswith("actstore: error:"), result.stderr
    assert expected in lines[0], lines[0]
    assert tree_hash(store) == before
