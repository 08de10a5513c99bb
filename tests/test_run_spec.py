"""The run specification: validated once, one config/provenance path, and a finished run answered from
tokenizer and config alone (the weights are never loaded to say "already complete")."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from activation_store.errors import ActstoreError
from activation_store.extract.interventions import InterventionSpec
from activation_store.extract.progress import LOG_INTERVAL, progress_bar
from activation_store.extract.spec import RunSpec


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "float16"}, r"unknown dtype 'float16'; choose one of"),
    ({"batch_size": 0}, r"--batch-size must be at least 1 or 'auto', got 0"),
    ({"batch_size": "many"}, r"--batch-size must be at least 1 or 'auto', got 'many'"),
    ({"chunk_tokens": -3}, r"--chunk-tokens must be at least 1, got -3"),
    ({"compute_dtype": "float8"}, r"unknown compute dtype 'float8'; choose one of float32, bfloat16, float16"),
    ({"device": "tpu"}, r"unknown device 'tpu'; choose one of"),
    ({"device_map": "balanced"}, r"unknown device map 'balanced'; the only placement offered is 'auto'"),
    ({"max_memory": {"cpu": 1 << 20}}, r"max_memory only applies with --device-map auto"),
])
def test_run_spec_refuses_bad_options(kwargs, message):
    with pytest.raises(ActstoreError, match=message):
        RunSpec(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"coefficients": "1,x"}, r"--coefficients: 'x' is not a number"),
    ({"coefficients": "1", "generate": -1}, r"--generate must be 0 or more tokens, got -1"),
    ({"coefficients": "1", "seeds": "0..2"}, r"--seed samples continuations; give --generate N too"),
    ({"coefficients": "1", "top_k": 0}, r"--top-k must be at least 1, got 0"),
    ({"coefficients": "1", "positions": "first"}, r"--steer-positions must be all, last, START:END .*got .first."),
])
def test_intervention_spec_refuses_bad_options(kwargs, message):
    with pytest.raises(ActstoreError, match=message):
        InterventionSpec("v", **kwargs)


def test_compute_dtype_enters_the_config_only_when_not_float32(tiny_model_dir, parallel_jsonl):
    """Runs made before --compute-dtype existed (float32 on the CPU) keep their config, hence hash, and resume."""
    from activation_store.extract.models import plan_model

    model = plan_model(str(tiny_model_dir("llama")))
    plain = RunSpec(str(tiny_model_dir("llama")), str(parallel_jsonl), device="cpu")
    data = plain.load_data()
    before = plain.config(data, model)
    assert "compute_dtype" not in before
    assert RunSpec(plain.model, plain.dataset, device="cpu", compute_dtype="float32").config(data, model) == before
    half = RunSpec(plain.model, plain.dataset, device="cpu", compute_dtype="bfloat16").config(data, model)
    assert half == {**before, "compute_dtype": "bfloat16"}
    auto = RunSpec(plain.model, plain.dataset, device="cpu", batch_size="auto")
    assert auto.config(data, model, batch_size=8)["batch_size"] == 8
    assert plain.provenance(data, model, "LlamaForCausalLM")["compute"] == {
        "device": "cpu", "compute_dtype": "float32", "batch_size": "given"}


def test_interventions_refuse_a_placement_they_do_not_run_on(tmp_path):
    from activation_store.extract.interventions import record_interventions

    with pytest.raises(ActstoreError, match="--device-map is for plain extraction; --intervene runs on the CPU"):
        record_interventions(RunSpec(store=str(tmp_path / "s.zarr"), device_map="auto"), InterventionSpec("v", "1"))
    assert not (tmp_path / "s.zarr").exists()


def test_specs_have_one_canonical_form():
    assert RunSpec(variants=["en", "zh"], suffixes=None) == RunSpec(variants=("en", "zh"), suffixes={})
    steering = InterventionSpec("v", "2, 1", seeds="0..2", generate=3, record_layers=[2, 1, 2])
    assert steering == InterventionSpec("v", [0, 2, 1], seeds=[0, 1, 2], generate=3, record_layers=(1, 2))
    assert steering.coefficients == (0.0, 2.0, 1.0) and steering.samples == [0, 1, 2]


def test_templates_join_the_config_only_when_given():
    """Media templates are part of a run's identity, but text runs keep the config (and hash) they had before."""
    from pathlib import Path

    from activation_store.checksums import config_hash
    from activation_store.extract.datasets import load_dataset
    from activation_store.extract.models import ModelPlan

    data, model = load_dataset("arithmetic", limit=2), ModelPlan("m", Path("."), "m", "0" * 64, None, None)
    plain = RunSpec(templates={}).config(data, model)
    assert RunSpec(templates={}) == RunSpec() and "templates" not in plain
    framed = RunSpec(templates={"image": "USER: <image> ASSISTANT:"}).config(data, model)
    assert framed.pop("templates") == {"image": "USER: <image> ASSISTANT:"} and config_hash(framed) == config_hash(plain)


def test_progress_bar_into_a_log_writes_rarely():
    with progress_bar(10, desc="extract", unit="tok", enabled=True) as bar:  # pytest's stderr is not a terminal
        assert bar.mininterval == LOG_INTERVAL


FINISHED = """
import json, sys
import actstore
from activation_store.extract.run import extract_run
from activation_store.extract.spec import RunSpec
spec = RunSpec(sys.argv[1], sys.argv[2], sys.argv[3], dtype="float32", batch_size=2, progress=False)
result = extract_run(spec) if sys.argv[4] == "spec" else actstore.extract(sys.argv[1], sys.argv[2], sys.argv[3],
                                                                        dtype="float32", batch_size=2, progress=False)
print(json.dumps({"status": result.status, "weights_loaded": any(m.endswith("modeling_llama") for m in sys.modules)}))
"""


def test_finished_run_is_complete_without_loading_the_weights(tiny_model_dir, parallel_jsonl, tmp_path):
    """Keyword API and RunSpec write the same run; the second call plans from tokenizer and config only."""
    store = tmp_path / "acts.zarr"

    def run(how: str) -> dict:
        done = subprocess.run([sys.executable, "-c", FINISHED, str(tiny_model_dir("llama")), str(parallel_jsonl),
                               str(store), how], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    assert run("keywords") == {"status": "written", "weights_loaded": True}
    assert run("spec") == {"status": "already complete", "weights_loaded": False}


def test_quiet_extract_prints_one_line(tiny_model_dir, parallel_jsonl, tmp_path, cli):
    result = cli("extract", "--model", tiny_model_dir("llama"), "--dataset", parallel_jsonl, "--store",
                 tmp_path / "acts.zarr", "--limit", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("written: ")
