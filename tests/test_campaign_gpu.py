"""Campaigns on a GPU (marker ``gpu``; skipped where CUDA is absent): ``pytest -m gpu`` on a GPU machine.

A local cluster of one GPU worker (it declares ``GPU=1``, every task holds it) runs a tiny random model
with ``--device cuda``; its states must match the CPU float32 run within float32 tolerance (bfloat16
compute: within bfloat16's). Self-contained: the models are built in the test, nothing is downloaded."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import actstore
from activation_store.extract.campaign import run_campaign
from activation_store.extract.spec import RunSpec

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

OPTS = dict(chunk_tokens=16, batch_size=4, progress=False, dtype="float32")


def hidden(store: str, model, dataset: str = "items") -> np.ndarray:
    return zarr.open_group(store, mode="r", use_consolidated=False)[f"{model.name}/{dataset}/hidden"][...]


def write_items(directory, name: str = "items", n: int = 30) -> str:
    rows = [{"id": f"i{i}", "en": f"The cat {i} sits on table {i * 7}.", "fr": f"Le chat {i} est sur la table."}
            for i in range(n)]
    path = directory / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> str:
    return write_items(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cpu_reference(tiny_model_dir, items, tmp_path_factory):
    model = tiny_model_dir("llama")
    store = str(tmp_path_factory.mktemp("cpu") / "acts.zarr")
    actstore.extract(model=str(model), dataset=items, store=store, device="cpu", **OPTS)
    return model, hidden(store, model)


@pytest.mark.parametrize("compute_dtype, tolerance", [("float32", 1e-4), ("bfloat16", 6e-2)])
def test_one_gpu_worker_campaign_matches_cpu_float32(cpu_reference, items, tmp_path, compute_dtype, tolerance):
    model, want = cpu_reference
    store = str(tmp_path / "acts.zarr")
    result = run_campaign([RunSpec(str(model), items, store, device="cuda", compute_dtype=compute_dtype, **OPTS)],
                          workers=1, threads_per_worker=1, progress=False, batches_per_task=3)
    assert result.resources == {"GPU": 1} and result.workers == 1 and result.tasks >= 3
    assert set(result.devices.values()) == {"cuda:0"}, result.devices
    assert set(result.loads.values()) == {1}, result.loads
    got = hidden(store, model)
    scale = np.abs(want).max()
    worst = float(np.abs(got - want).max() / scale)
    print(f"\n{compute_dtype} on cuda vs float32 on cpu: largest difference {worst:.2e} of the largest state")
    assert got.shape == want.shape and worst < tolerance
    attrs = zarr.open_group(store, mode="r", use_consolidated=False)[f"{model.name}/items"].attrs
    assert attrs["provenance"]["compute"]["device"].startswith("cuda: ")
    assert attrs["provenance"]["compute"]["compute_dtype"] == compute_dtype


def test_in_process_campaign_on_cuda_equals_single_cuda_run(tiny_model_dir, items, tmp_path):
    """Two datasets without workers: the campaign's tasks run here on cuda:0, like a single run."""
    model = tiny_model_dir("gemma3")
    single, campaign = str(tmp_path / "single.zarr"), str(tmp_path / "campaign.zarr")
    actstore.extract(model=str(model), dataset=items, store=single, device="cuda", compute_dtype="float32", **OPTS)
    specs = [RunSpec(str(model), d, campaign, device="cuda", compute_dtype="float32", **OPTS)
             for d in (items, write_items(tmp_path, "more", 12))]
    result = run_campaign(specs, progress=False)
    assert result.resources is None and set(result.devices.values()) == {"cuda:0"}
    np.testing.assert_allclose(hidden(campaign, model), hidden(single, model), rtol=0, atol=1e-5)


def test_more_gpu_workers_than_gpus_or_a_pinned_gpu_is_refused(tiny_model_dir, items, tmp_path):
    from activation_store.errors import ActstoreError

    model, store = tiny_model_dir("llama"), str(tmp_path / "acts.zarr")
    too_many = torch.cuda.device_count() + 1
    with pytest.raises(ActstoreError, match=f"--workers {too_many} --device cuda: one model per GPU"):
        run_campaign([RunSpec(str(model), items, store, device="cuda", **OPTS)], workers=too_many, progress=False)
    with pytest.raises(ActstoreError, match="would put every worker on one GPU"):
        run_campaign([RunSpec(str(model), items, store, device="cuda:0", **OPTS)], workers=1, progress=False)
    assert not (tmp_path / "acts.zarr").exists()
