"""Safety: no unpickling, no remote code unless asked, no path escapes, no secrets in output or stores."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

import actstore
from activation_store.errors import ActstoreError
from activation_store.store.inventory import list_runs
from activation_store.store.layout import decode_name, encode_name


class _Bomb:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


def model_copy(model_dir: Path, target: Path, weights: bool) -> Path:
    target.mkdir()
    for file in model_dir.iterdir():
        if weights or file.suffix != ".safetensors":
            shutil.copy(file, target / file.name)
    return target


def test_pickled_weights_are_never_loaded(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    marker = tmp_path / "unpickled.txt"
    bomb = pickle.dumps(_Bomb(str(marker)))
    only_pickle = model_copy(tiny_model_dir("llama"), tmp_path / "only-pickle", weights=False)
    (only_pickle / "pytorch_model.bin").write_bytes(bomb)
    result = cli("extract", "--model", only_pickle, "--dataset", parallel_jsonl, "--store", tmp_path / "a.zarr", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"actstore: error: {only_pickle} holds no .safetensors weights (pickled weights are never loaded)")
    both = model_copy(tiny_model_dir("llama"), tmp_path / "both", weights=True)
    (both / "pytorch_model.bin").write_bytes(bomb)  # safetensors beside it: those are what is loaded
    result = cli("extract", "--model", both, "--dataset", parallel_jsonl, "--store", tmp_path / "b.zarr", "--quiet")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def remote_code_model(tiny_model_dir, target: Path, model_type: str) -> Path:
    """The tiny Llama with an ``auto_map`` to the checkpoint's own Python, which leaves a marker when run."""
    model = model_copy(tiny_model_dir("llama"), target, weights=True)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                   "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_evil.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['EVIL_MARKER']).write_text('remote code ran')\n"
        "from transformers import LlamaConfig\n\n\n"
        f"class EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n")
    (model / "modeling_evil.py").write_text(
        "from transformers import LlamaForCausalLM\n"
        "from .configuration_evil import EvilConfig\n\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    return model


def test_remote_code_runs_only_with_trust_remote_code(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    marker = tmp_path / "ran.txt"
    env = {"EVIL_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    # a known architecture with an auto_map: the built-in code is used, the checkpoint's is never run
    known = remote_code_model(tiny_model_dir, tmp_path / "known", "llama")
    result = cli("extract", "--model", known, "--dataset", parallel_jsonl, "--store", tmp_path / "a.zarr", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    # an architecture only the checkpoint's code knows: refused in one line, unless asked for
    custom = remote_code_model(tiny_model_dir, tmp_path / "custom", "evil-llama")
    refused = cli("extract", "--model", custom, "--dataset", parallel_jsonl, "--store", tmp_path / "b.zarr", "--quiet", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"actstore: error: cannot load model from {custom}") and "--trust-remote-code" in line, line
    assert not marker.exists()
    allowed = cli("extract", "--model", custom, "--dataset", parallel_jsonl, "--store", tmp_path / "c.zarr", "--quiet",
                  "--trust-remote-code", env=env)
    assert "Traceback" not in allowed.stderr
    assert marker.exists(), allowed.stderr  # the flag reaches transformers: the checkpoint's own code ran


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "%2F..", "../../etc/passwd", "/abs", "...", ".hidden",
                                  "a\\..\\b", "x/../../y", "~", "con", "模型/名字"])
def test_names_map_to_one_safe_segment_and_back(name, tmp_path):
    segment = encode_name(name)
    assert "/" not in segment and "\\" not in segment and segment not in (".", "..") and not segment.startswith(".")
    assert decode_name(segment) == name
    assert (tmp_path / segment).resolve().parent == tmp_path.resolve()


def test_names_that_cannot_be_a_path_are_refused():
    for name in ("", "   ", "x" * 300):
        with pytest.raises(ActstoreError):
            encode_name(name)


def files_outside(root: Path, store: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file() and store not in p.parents}


def test_dataset_file_names_cannot_escape_the_store(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    row = json.dumps({"id": "a", "en": "hello there"}) + "\n"
    names = {"..jsonl": ".", "...jsonl": "..", "%2F...jsonl": "%2F..", "..%2F..%2Fx.jsonl": "..%2F..%2Fx"}
    for file in names:
        (data / file).write_text(row)
    store = tmp_path / "deep" / "acts.zarr"
    model = tiny_model_dir("llama")
    before = files_outside(tmp_path, store)
    for file in names:
        actstore.extract(model=str(model), dataset=str(data / file), store=str(store), progress=False)
    assert files_outside(tmp_path, store) == before  # everything written lies inside the store
    assert sorted(run.dataset for run in list_runs(str(store))) == sorted(names.values())
    for dataset in names.values():
        assert actstore.open_run(str(store), model.name, dataset).sizes["example"] == 1


def test_secrets_never_reach_output_or_the_store(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    secrets = {"AWS_SECRET_ACCESS_KEY": "SEKRIT-aws-4711", "AWS_SESSION_TOKEN": "SEKRIT-session-4712",
               "HF_TOKEN": "SEKRIT-hf-4713", "MY_API_KEY": "SEKRIT-api-4714"}
    store = tmp_path / "acts.zarr"
    results = [cli("extract", "--model", tiny_model_dir("llama"), "--dataset", parallel_jsonl, "--store", store, env=secrets)]
    results += [cli(command, store, env=secrets) for command in ("ls", "verify")]
    results.append(cli("info", store, "--model", tiny_model_dir("llama").name, "--dataset", "pairs", env=secrets))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    for result in results:
        assert "SEKRIT" not in result.stdout + result.stderr
    for file in store.rglob("*"):
        if file.is_file():
            assert b"SEKRIT" not in file.read_bytes(), file
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != "SEKRIT-aws-4711"
