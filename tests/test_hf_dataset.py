"""Hugging Face ``datasets`` as input (``--dataset hf:NAME[:CONFIG][:SPLIT]``), built in the test, read offline."""
from __future__ import annotations

import json

import pytest

import actstore
from activation_store.errors import ActstoreError
from activation_store.extract.datasets import load_dataset

datasets = pytest.importorskip("datasets")

ROWS = {"id": ["cat", "pw", "sum", "mul"],
        "sentence_en": ["The cat sits on the table.", "Change my password", "five plus three", "twelve times two"],
        "sentence_zh": ["猫坐在桌子上。", "修改我的密码", "五加三", None],
        "label": [0, 1, 0, 1]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DatasetDict written with save_to_disk: the way a user keeps a hub dataset for offline use."""
    path = tmp_path_factory.mktemp("hf") / "sentiment"
    train = datasets.Dataset.from_dict(ROWS)
    test = datasets.Dataset.from_dict({k: v[:2] for k, v in ROWS.items()})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    return path


def test_save_to_disk_split_with_columns(saved):
    data = load_dataset(f"hf:{saved}:train", columns={"en": "sentence_en", "zh": "sentence_zh"})
    assert data.name == "sentiment-train" and data.variants == ("en", "zh")
    assert data.items[0] == ("cat", {"en": "The cat sits on the table.", "zh": "猫坐在桌子上。"})
    assert data.items[3] == ("mul", {"en": "twelve times two"})                  # a missing text is skipped
    fingerprint = datasets.load_from_disk(str(saved))["train"]._fingerprint
    assert data.checksum.startswith(f"hf-fingerprint:{fingerprint};") and "en=sentence_en" in data.checksum
    other = load_dataset(f"hf:{saved}:train", columns={"en": "sentence_zh", "zh": "sentence_en"})
    assert other.checksum != data.checksum                                      # another mapping, another run
    assert load_dataset(f"hf:{saved}:test", columns={"en": "sentence_en"}).checksum != data.checksum
    # default: every string column but the id becomes a variant named after it
    assert load_dataset(f"hf:{saved}:test").variants == ("sentence_en", "sentence_zh")


def test_local_data_files_through_the_datasets_cache(tmp_path, monkeypatch):
    folder = tmp_path / "captions"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"image_id": i, "en": f"a photo of thing {i}",
                                                               "fr": f"une photo de la chose {i}"}) for i in range(5)))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = load_dataset(f"hf:{folder}", id_column="image_id", limit=3)
    assert data.name == "captions" and data.variants == ("en", "fr")
    assert [item for item, _ in data.items] == ["0", "1", "2"]
    assert data.checksum.startswith("hf-fingerprint:") and (tmp_path / "cache").is_dir()


@pytest.mark.parametrize("spec, kwargs, message", [
    ("hf:{saved}", {}, "has splits train, test; name one"),
    ("hf:{saved}:valid", {}, "has no split 'valid'"),
    ("hf:{saved}:a:b", {}, "save_to_disk directory"),
    ("hf:{saved}:train", {"columns": {"en": "sentence_de"}}, "column 'sentence_de' is not in"),
    ("hf:{saved}:train", {"columns": {"en": "label"}}, "column 'label' is int, not text"),
    ("hf:{saved}:train", {"id_column": "uid"}, "--id-column 'uid' is not a column"),
    ("hf:{saved}:train", {"id_column": "label"}, "duplicate id '0'"),
    ("hf:", {}, "expected hf:NAME[:CONFIG][:SPLIT]"),
    ("hf:no-such-org/no-such-set", {}, "cannot load Hugging Face dataset 'no-such-org/no-such-set' offline"),
    ("arithmetic", {"columns": {"en": "x"}}, "apply to Hugging Face datasets"),
])
def test_bad_hf_input_is_one_line(saved, spec, kwargs, message):
    with pytest.raises(ActstoreError) as caught:
        load_dataset(spec.format(saved=saved), **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_extracts_an_hf_dataset(saved, tiny_model_dir, tmp_path, cli):
    model = tiny_model_dir("llama")
    store = tmp_path / "acts.zarr"
    done = cli("extract", "--model", model, "--dataset", f"hf:{saved}:train", "--columns", "en=sentence_en,zh=sentence_zh",
               "--id-column", "id", "--store", store, "--chunk-tokens", "16", "--quiet")
    assert done.returncode == 0, done.stderr
    ds = actstore.open_run(str(store), model.name, "sentiment-train")
    assert sorted(set(ds.variant.values)) == ["en", "zh"] and sorted(set(ds["item"].values)) == ["cat", "mul", "pw", "sum"]
    fingerprint = datasets.load_from_disk(str(saved))["train"]._fingerprint
    assert ds.attrs["config"]["dataset_checksum"].startswith(f"hf-fingerprint:{fingerprint};")
    assert ds.attrs["provenance"]["dataset_version"] == f"hf-fingerprint:{fingerprint}"
    bad = cli("extract", "--model", model, "--dataset", f"hf:{saved}:train", "--columns", "en=nope",
              "--store", tmp_path / "never.zarr", "--quiet")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "column 'nope' is not in" in lines[0], bad.stderr
    assert not (tmp_path / "never.zarr").exists()
