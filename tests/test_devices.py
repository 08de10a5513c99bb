"""Where and in which dtype extraction runs: compute dtypes, device maps, float16 overflow, auto batches, --dry-run.

No GPU here: the CUDA/MPS paths run only on machines that have them; these tests cover the CPU side
of every option (a bfloat16 compute, an accelerate placement split between the CPU and disk)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import zarr

import actstore
from activation_store.errors import ActstoreError, ConfigConflictError
from activation_store.extract.capture import pad_batch
from activation_store.extract.estimate import ModelShape, auto_batch_size, model_shape

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                 tie_word_embeddings=False)


def hidden(store: str, model: str, dataset: str) -> np.ndarray:
    return np.asarray(actstore.open_run(store, model, dataset)["hidden"].values, dtype=np.float32)


def run_group(store, model: str, dataset: str) -> zarr.Group:
    return zarr.open_group(str(store), mode="r", use_consolidated=False)[f"{model}/{dataset}"]


def altered(tiny_model_dir, tmp_path, name: str, change) -> str:
    """A copy of the tiny Llama whose weights ``change`` edits in place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = tiny_model_dir("llama")
    net = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        change(net, tokenizer)
    target = tmp_path / name
    net.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return str(target)


def test_bfloat16_compute_equals_the_models_own_bfloat16_states(tiny_model_dir, parallel_jsonl, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_dir("gemma3")
    store = str(tmp_path / "bf16.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, dtype="float32",
                     compute_dtype="bfloat16", device="cpu", batch_size=4, progress=False)
    stored = hidden(store, model_dir.name, "pairs")
    run = actstore.open_run(store, model_dir.name, "pairs")

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = {}
    for dtype in (torch.bfloat16, torch.float32):
        net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        rows = []
        for text in run["text"].values:  # each example alone: no padding, the model's own forward
            ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(str(text), add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                states = net.model(input_ids=ids, output_hidden_states=True).hidden_states
            rows.append(torch.stack(states)[:, 0].float())
        reference[dtype] = torch.cat(rows, dim=1).numpy()
    scale = np.abs(reference[torch.bfloat16]).max(axis=(1, 2), keepdims=True)
    # bfloat16 keeps 8 significant bits: batching and padding may move a state by a few of its ulps
    np.testing.assert_allclose(stored, reference[torch.bfloat16], rtol=2 ** -5, atol=float(scale.max()) * 2 ** -7)
    assert np.abs(stored - reference[torch.float32]).max() > 0  # it really ran in bfloat16, not float32
    compute = dict(run_group(store, model_dir.name, "pairs").attrs)["provenance"]["compute"]
    assert compute["device"] == "cpu" and compute["compute_dtype"] == "bfloat16"
    assert compute["attention"] in ("sdpa", "eager")


def test_resume_with_another_compute_dtype_is_refused(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "acts.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cpu", progress=False)
    attrs = dict(run_group(store, model_dir.name, "pairs").attrs)
    # float32 (the CPU default) is no key, so runs made before --compute-dtype existed keep their hash and resume
    assert "compute_dtype" not in attrs["config"]
    assert attrs["provenance"]["compute"] == {"device": "cpu", "compute_dtype": "float32", "batch_size": "given",
                                              "attention": "sdpa", "device_map": None}
    before = hidden(store, model_dir.name, "pairs")
    with pytest.raises(ConfigConflictError, match=r"compute_dtype differ"):
        actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cpu",
                         compute_dtype="bfloat16", progress=False)
    np.testing.assert_array_equal(hidden(store, model_dir.name, "pairs"), before)


def test_device_map_split_between_cpu_and_disk_equals_the_unsplit_run(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    whole, split = str(tmp_path / "whole.zarr"), str(tmp_path / "split.zarr")
    common = dict(model=str(model_dir), dataset=str(parallel_jsonl), dtype="float32", device="cpu", batch_size=4,
                  progress=False)
    actstore.extract(store=whole, **common)
    weights = sum(os.path.getsize(p) for p in model_dir.glob("*.safetensors"))
    actstore.extract(store=split, device_map="auto", max_memory={"cpu": weights // 2}, **common)
    placement = dict(run_group(split, model_dir.name, "pairs").attrs)["provenance"]["compute"]["device_map"]
    assert "disk" in placement.values() and "cpu" in placement.values(), placement
    np.testing.assert_array_equal(hidden(split, model_dir.name, "pairs"), hidden(whole, model_dir.name, "pairs"))


def test_float16_overflow_is_refused_naming_the_layer_and_nothing_is_written(tiny_model_dir, parallel_jsonl, tmp_path,
                                                                              cli):
    def blow_up_block_1(net, _tokenizer):  # |h| after block 1 ≈ 1.2e5 > 65504, the weights themselves still fit
        net.model.layers[1].mlp.down_proj.weight.mul_(6e5)
        net.model.layers[1].mlp.up_proj.weight.mul_(60)

    model = altered(tiny_model_dir, tmp_path, "overflowing", blow_up_block_1)
    store = tmp_path / "f16.zarr"
    result = cli("extract", "--model", model, "--dataset", parallel_jsonl, "--store", store, "--device", "cpu",
                 "--compute-dtype", "float16", "--quiet")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert result.stderr.count("actstore: error:") == 1 and last.startswith("actstore: error: "), result.stderr
    assert "inf/NaN hidden states at layer 2 in float16 compute (float16 overflows past 65504" in last
    assert not store.exists()
    # the same model in float32 is fine: it is the compute dtype that overflows
    actstore.extract(model=model, dataset=str(parallel_jsonl), store=str(store), device="cpu", progress=False)
    assert np.abs(hidden(str(store), "overflowing", "pairs")).max() > 65504


def test_overflow_late_in_a_run_stores_none_of_the_bad_states(tiny_model_dir, tmp_path):
    data = tmp_path / "late.jsonl"
    rows = [{"id": f"r{i}", "en": "The cat sits on the table."} for i in range(6)] + [{"id": "bad", "en": "who?"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def huge_question_mark(net, tokenizer):  # beyond float16's range: inf as soon as it is cast
        net.model.embed_tokens.weight[tokenizer.convert_tokens_to_ids("?")] = 1e5

    model = altered(tiny_model_dir, tmp_path, "late", huge_question_mark)
    store = str(tmp_path / "late.zarr")
    with pytest.raises(ActstoreError, match=r"inf/NaN hidden states at layer 0 in float16 compute"):
        actstore.extract(model=model, dataset=str(data), store=store, device="cpu", compute_dtype="float16",
                         dtype="float32", batch_size=1, chunk_tokens=8, progress=False)
    group = run_group(store, "late", "late")
    done = group.attrs["progress"]["tokens_done"]
    assert 0 < done < group["hidden"].shape[1] and not group.attrs["progress"]["complete"]
    assert np.isfinite(group["hidden"][:, :done]).all()


def test_auto_batch_size_is_recorded_and_kept_on_resume(tiny_model_dir, parallel_jsonl, tmp_path):
    model_dir = tiny_model_dir("llama")
    store = str(tmp_path / "auto.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cpu", batch_size="auto",
                     progress=False)
    attrs = dict(run_group(store, model_dir.name, "pairs").attrs)
    assert attrs["config"]["batch_size"] == 16  # 15 examples: the power of two that holds them all
    assert attrs["provenance"]["compute"]["batch_size"].startswith("auto: ")
    again = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cpu",
                             batch_size="auto", progress=False)
    assert again.status == "already complete"


def test_auto_batch_size_is_the_largest_power_of_two_that_fits():
    shape = ModelShape(n_layers=3, d_model=8, intermediate=16, n_heads=2, n_kv_heads=1, head_dim=4, vocab=10,
                       parameters=100)
    one = shape.activation_bytes(1, 20, "float32")
    widths = [20, 5] * 500
    assert auto_batch_size(shape, widths, "float32", int(one * 37 / 0.8)) == 32
    assert auto_batch_size(shape, widths, "float32", int(one * 5000 / 0.8)) == 1024  # the cap
    assert auto_batch_size(shape, [20, 5, 7], "float32", int(one * 5000 / 0.8)) == 4  # no more than the examples
    with pytest.raises(ActstoreError, match="not even one example of 20 tokens fits"):
        auto_batch_size(shape, widths, "float32", one // 2)
    assert shape.activation_bytes(4, 20, "bfloat16") * 2 == shape.activation_bytes(4, 20, "float32")


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "--device cuda: CUDA is not available here"),
    (["--device", "tpu"], "unknown device 'tpu'; choose one of auto, cpu, cuda, cuda:N, mps"),
    (["--compute-dtype", "float8"], "unknown compute dtype 'float8'; choose one of float32, bfloat16, float16"),
    (["--batch-size", "0"], "--batch-size must be at least 1 or 'auto', got 0"),
    (["--batch-size", "many"], "expected a number or 'auto', got 'many'"),
])
def test_bad_device_options_are_one_line_and_write_nothing(tiny_model_dir, parallel_jsonl, tmp_path, cli, args,
                                                           message):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    store = tmp_path / "never.zarr"
    result = cli("extract", "--model", tiny_model_dir("llama"), "--dataset", parallel_jsonl, "--store", store, *args)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert result.stderr.count("actstore: error:") == 1 and last.startswith("actstore: error: ") and message in last
    assert not store.exists()


def test_dry_run_for_a_llama3_8b_config_alone(tmp_path, parallel_jsonl, cli):
    from transformers import LlamaConfig

    config_dir = tmp_path / "llama3-config"
    LlamaConfig(**LLAMA3_8B).save_pretrained(config_dir)  # config.json only: no weights, no tokenizer
    assert model_shape(LlamaConfig(**LLAMA3_8B)).parameters == 8_030_261_248  # Meta-Llama-3-8B's published count
    store = tmp_path / "plan.zarr"
    result = cli("extract", "--model", config_dir, "--dataset", parallel_jsonl, "--store", store, "--dry-run",
                 "--device", "cpu", "--compute-dtype", "bfloat16", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "8,030,261,248 parameters; 33 layers (embeddings + 32 blocks) × d_model 4,096" in out
    assert "weights         16.06 GB at bfloat16" in out
    assert "examples        15; tokens" in out and "estimated at 4 bytes per token" in out
    tokens = int(out.split("tokens ")[1].split(" ")[0].replace(",", ""))
    per_layer = tokens * 4096 * 2  # one exactly-sized chunk: a run smaller than one default chunk
    assert f"on disk         {per_layer / 1e3:,.2f} kB per layer, {33 * per_layer / 1e6:,.2f} MB for hidden" in out
    block = 33 * per_layer  # the run is one chunk long: a block is every layer's chunk of it
    assert (f"write buffers   {3 * block / 1e6:,.2f} MB of host memory: 3 blocks of {block / 1e6:,.2f} MB, one "
            f"filling while 2 are written") in out
    assert "free at target" in out and not store.exists()


def test_dry_run_with_a_tokenizer_counts_real_tokens(tiny_model_dir, parallel_jsonl, tmp_path):
    from activation_store.extract.dry_run import dry_run
    from activation_store.extract.spec import RunSpec

    model_dir = tiny_model_dir("llama")
    plan = dry_run(RunSpec(model=str(model_dir), dataset=str(parallel_jsonl), store=str(tmp_path / "s.zarr"),
                           device="cpu", dtype="float32", batch_size="auto"))
    store = str(tmp_path / "real.zarr")
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, device="cpu", dtype="float32",
                     progress=False)
    stored = run_group(store, model_dir.name, "pairs")["hidden"]
    assert not plan.tokens_estimated and (plan.examples, plan.tokens) == (15, stored.shape[1])
    assert plan.hidden_bytes == stored.nbytes and plan.layer_bytes * stored.shape[0] == plan.hidden_bytes
    group = run_group(store, model_dir.name, "pairs")
    views = ("hidden_last", "hidden_mean", "stat_mean", "stat_second_moment", "stat_abs_max")
    assert plan.views_bytes == sum(group[name].nbytes for name in views)
    assert plan.total_bytes == plan.hidden_bytes + plan.views_bytes
    assert plan.batch_size == 16 and plan.fits_device and plan.fits_disk
    net_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    assert plan.shape.parameters == net_params


def test_dry_run_refuses_a_target_without_the_space(tmp_path, parallel_jsonl, cli):
    from transformers import LlamaConfig

    free = shutil.disk_usage(tmp_path).free
    d_model = 1 << 24  # 32 MB per token per layer in bfloat16; the dataset has more than 15 tokens
    layers = int(2 * free // (15 * d_model * 2)) + 1
    config_dir = tmp_path / "giant"
    LlamaConfig(vocab_size=300, hidden_size=d_model, intermediate_size=16, num_hidden_layers=layers,
                num_attention_heads=1, num_key_value_heads=1).save_pretrained(config_dir)
    store = tmp_path / "giant.zarr"
    result = cli("extract", "--model", config_dir, "--dataset", parallel_jsonl, "--store", store, "--dry-run",
                 "--device", "cpu")
    assert result.returncode == 2
    assert "NOT ENOUGH" in result.stdout
    assert result.stderr.startswith(f"actstore: error: {store} lacks the space: the run needs ")
    assert not store.exists()
