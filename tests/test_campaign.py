"""Extraction campaigns on a real distributed.LocalCluster (worker processes) with tiny random models.

Every store written here on workers must hold ``hidden`` arrays bit-identical to
a single-process run's with the same torch threads per process (one), whatever
the number of workers, the order tasks finish in, or a worker SIGKILLed mid-run.
Small chunks and small tasks make many tasks out of a few hundred tokens."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

import actstore
from activation_store.errors import ActstoreError
from activation_store.extract.spec import RunSpec
from activation_store.extract.campaign import run_campaign
from activation_store.store import commits

CHUNK, BATCH, TASK_BATCHES = 16, 4, 3
OPTS = dict(chunk_tokens=CHUNK, batch_size=BATCH, progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # single-process references: one thread, as each worker


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, Client(lc) as client:
        yield lc, client


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return [tiny_model_dir("llama"), tiny_model_dir("gemma3")]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    rows = [{"id": f"i{i}", "en": f"The cat {i} sits on the table number {i * 7}.", "zh": f"猫{i}坐在桌子上。",
             "fr": f"Le chat {i} est assis sur la table {i}."} for i in range(12)]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def spec(model: Path, dataset: str | Path, store: str, **kw) -> RunSpec:
    limit = 40 if str(dataset) == "arithmetic" else None
    return RunSpec(str(model), str(dataset), store, limit=limit, **{**OPTS, **kw})


def hidden(store: str, model: Path, dataset: str) -> np.ndarray:
    return zarr.open_group(store, mode="r", use_consolidated=False)[f"{model.name}/{dataset}/hidden"][...]


def all_arrays(store: str, model: Path, dataset: str) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r", use_consolidated=False)[f"{model.name}/{dataset}"]
    return {name: node[...] for name, node in group.members() if isinstance(node, zarr.Array)}


@pytest.fixture(scope="module")
def reference(models, pairs, tmp_path_factory) -> str:
    """Single-process runs of both models over both datasets (one torch thread)."""
    store = str(tmp_path_factory.mktemp("ref") / "acts.zarr")
    for model in models:
        for dataset in ("arithmetic", pairs):
            actstore.extract(model=str(model), dataset=str(dataset), store=store,
                             limit=40 if dataset == "arithmetic" else None, **OPTS)
    return store


def assert_identical(store: str, reference: str, model: Path, dataset: str) -> None:
    got, want = all_arrays(store, model, dataset), all_arrays(reference, model, dataset)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), f"{name} differs"
    attrs = zarr.open_group(store, mode="r", use_consolidated=False)[f"{model.name}/{dataset}"].attrs
    assert attrs["progress"]["complete"] and "chunks" not in attrs["progress"]


def test_two_workers_one_run_bit_identical(cluster, models, reference, tmp_path):
    _, client = cluster
    store = str(tmp_path / "acts.zarr")
    result = run_campaign([spec(models[0], "arithmetic", store)], scheduler=client.scheduler.address,
                          threads_per_worker=1, progress=False, batches_per_task=TASK_BATCHES)
    assert result.tasks >= 5 and result.workers == 2
    assert_identical(store, reference, models[0], "arithmetic")
    assert len({pid for _, pid in result.loads}) == 2, "both workers took tasks"
    assert set(result.loads.values()) == {1}, result.loads  # one load per worker per model
    assert result.recompute_fraction < 0.5
    print(f"\n{result.summary()}")


def test_two_by_two_campaign_bit_identical(cluster, models, pairs, reference, tmp_path):
    _, client = cluster
    store = str(tmp_path / "acts.zarr")
    specs = [spec(m, d, store) for m in models for d in ("arithmetic", pairs)]
    result = run_campaign(specs, scheduler=client.scheduler.address, threads_per_worker=1, progress=False,
                          batches_per_task=TASK_BATCHES)
    assert [r.status for r in result.runs] == ["written"] * 4
    for model in models:
        for dataset in ("arithmetic", "pairs"):
            assert_identical(store, reference, model, dataset)
    assert set(result.loads.values()) == {1}, result.loads
    # the lens head, written once per model by a prepare task, equals the single-process one
    for model in models:
        got = zarr.open_group(store, mode="r")[model.name]["unembedding"][...]
        assert np.array_equal(got, zarr.open_group(reference, mode="r")[model.name]["unembedding"][...])
    again = run_campaign(specs, scheduler=client.scheduler.address, threads_per_worker=1, progress=False)
    assert [r.status for r in again.runs] == ["already complete"] * 4 and again.tasks == 0


def _committed(store: str, model: Path, dataset: str) -> commits.Ranges:
    try:
        attrs = json.loads((Path(store) / model.name / dataset / "zarr.json").read_text())["attributes"]
        hidden_meta = json.loads((Path(store) / model.name / dataset / "hidden" / "zarr.json").read_text())
    except (FileNotFoundError, KeyError, ValueError):
        return []
    n_tokens, chunk = hidden_meta["shape"][1], hidden_meta["chunk_grid"]["configuration"]["chunk_shape"][1]
    return commits.committed(attrs.get("progress"), n_tokens, chunk)


def _wait(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.01)


def test_worker_sigkilled_mid_run_still_identical(cluster, models, reference, tmp_path):
    lc, client = cluster
    store = str(tmp_path / "acts.zarr")
    pids = list(client.run(os.getpid).values())
    outcome: dict = {}

    def campaign():
        try:
            outcome["result"] = run_campaign([spec(models[0], "arithmetic", store)],
                                             scheduler=client.scheduler.address, threads_per_worker=1, progress=False,
                                             batches_per_task=1)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=campaign)
    thread.start()
    _wait(lambda: _committed(store, models[0], "arithmetic") or not thread.is_alive())
    before = _committed(store, models[0], "arithmetic")
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    n_chunks = commits.n_chunks(result.runs[0].tokens, CHUNK)
    assert before and before != [(0, n_chunks)], "the kill landed mid-run"
    assert_identical(store, reference, models[0], "arithmetic")
    assert not list(Path(store).rglob("*.partial"))
    _wait(lambda: len(client.scheduler_info()["workers"]) == 2, 60)  # the nanny restarted it, for later tests


def test_killed_client_resumes_and_recomputes_only_uncommitted(models, reference, tmp_path, cli):
    store = str(tmp_path / "acts.zarr")
    command = ["extract", "--model", str(models[0]), "--dataset", "arithmetic",
               "--limit", "40", "--store", store, "--chunk-tokens", str(CHUNK), "--batch-size", str(BATCH), "--quiet",
               "--workers", "2", "--threads-per-worker", "1", "--task-batches", "1"]
    env = {"OMP_NUM_THREADS": "1"}
    proc = cli.start(*command, env=env, new_session=True)
    _wait(lambda: _committed(store, models[0], "arithmetic") or proc.poll() is not None, 180)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and the cluster it started: the command's own process group
    _, err = proc.communicate()
    committed = _committed(store, models[0], "arithmetic")
    total = all_arrays(reference, models[0], "arithmetic")["token_id"].size
    done = commits.tokens_in(committed, total, CHUNK)
    assert proc.returncode == -signal.SIGKILL and 0 < done < total, (proc.returncode, done, err)

    again = cli(*command, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("resumed:"), again.stdout
    assert f"wrote {total - done:,} tokens" in again.stdout  # only what was not committed
    assert_identical(store, reference, models[0], "arithmetic")
    print(f"\nclient killed with {done} of {total} tokens committed ({len(committed)} ranges); resumed wrote {total - done}")


def test_unknown_names_anywhere_refused_before_anything(models, pairs, tmp_path):
    store = tmp_path / "acts.zarr"
    with pytest.raises(ActstoreError, match="unknown model 'nope'"):
        run_campaign([spec(models[0], pairs, str(store)), spec(Path("nope"), pairs, str(store))])
    with pytest.raises(ActstoreError, match="nope"):
        run_campaign([spec(models[0], pairs, str(store)), spec(models[0], "nope", str(store))])
    assert not store.exists()


def test_unreachable_scheduler_is_one_line(models, pairs, tmp_path):
    from s3_server import closed_port

    with pytest.raises(ActstoreError, match="cannot reach the dask scheduler") as info:
        run_campaign([spec(models[0], pairs, str(tmp_path / "acts.zarr"))],
                     scheduler=f"tcp://127.0.0.1:{closed_port()}")
    assert "\n" not in str(info.value)


def test_locked_run_is_skipped_and_named_all_locked_refused(models, pairs, reference, tmp_path):
    from activation_store.store import layout
    from activation_store.store.lock import run_lock

    store = str(tmp_path / "acts.zarr")
    specs = [spec(models[0], pairs, store), spec(models[0], "arithmetic", store)]
    with run_lock(store, layout.run_path(models[0].name, "pairs")):
        result = run_campaign(specs, progress=False)
        assert [r.dataset for r in result.runs] == ["arithmetic"]
        assert len(result.skipped) == 1 and "pairs is being written by pid" in result.skipped[0]
        with pytest.raises(ActstoreError, match="is being written by"):
            run_campaign(specs[:1], progress=False)
    assert_identical(store, reference, models[0], "arithmetic")


def test_campaign_on_s3_with_two_workers_identical_to_local(models, reference, tmp_path, monkeypatch):
    """Two local worker processes write one run into a bucket of the real S3 test server (tests/s3_server.py)."""
    from s3_server import MotoServer

    from activation_store.store.location import zarr_store

    server = MotoServer().start()
    try:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(key, raising=False)
        for key, value in {**server.env(), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
            monkeypatch.setenv(key, value)  # the worker processes inherit these when the campaign starts them
        server.client().create_bucket(Bucket="campaign")
        url, options = "s3://campaign/acts.zarr", {"endpoint_url": server.endpoint}
        result = run_campaign([spec(models[0], "arithmetic", url, storage_options=options)], workers=2,
                              threads_per_worker=1, progress=False, batches_per_task=TASK_BATCHES)
        assert result.workers == 2 and result.tasks >= 5 and set(result.loads.values()) == {1}
        group = zarr.open_group(zarr_store(url, options, read_only=True), mode="r", use_consolidated=False)
        run = group[f"{models[0].name}/arithmetic"]
        got = {name: node[...] for name, node in run.members() if isinstance(node, zarr.Array)}
        want = all_arrays(reference, models[0], "arithmetic")
        assert sorted(got) == sorted(want)
        for name in want:
            assert np.array_equal(got[name], want[name]), f"{name} differs"
        assert run.attrs["progress"] == {"tokens_done": int(want["token_id"].size), "complete": True}
        with dask.config.set(scheduler="threads"):  # not the module's cluster, started before these credentials
            ds = actstore.open_run(url, models[0].name, "arithmetic", storage_options=options)
        assert ds.sizes["token"] == want["token_id"].size
    finally:
        server.stop()


def test_bfloat16_compute_on_two_workers_equals_single_process_bfloat16(cluster, models, tmp_path):
    """--compute-dtype travels in each task's model reference; the worker cache keys loads by it."""
    _, client = cluster
    single, campaign = str(tmp_path / "single.zarr"), str(tmp_path / "campaign.zarr")
    bf16 = dict(device="cpu", compute_dtype="bfloat16")
    actstore.extract(model=str(models[1]), dataset="arithmetic", store=single, limit=40, **OPTS, **bf16)
    result = run_campaign([spec(models[1], "arithmetic", campaign, **bf16)], scheduler=client.scheduler.address,
                          threads_per_worker=1, progress=False, batches_per_task=TASK_BATCHES)
    assert result.resources is None and set(result.devices.values()) == {"cpu"}
    assert set(result.loads.values()) == {1}, result.loads  # a bfloat16 load of its own, once per worker
    assert_identical(campaign, single, models[1], "arithmetic")
    attrs = zarr.open_group(campaign, mode="r", use_consolidated=False)[f"{models[1].name}/arithmetic"].attrs
    assert attrs["config"]["compute_dtype"] == "bfloat16"
    assert attrs["provenance"]["compute"]["compute_dtype"] == "bfloat16"


def test_gpu_resource_missing_on_the_cluster_is_one_line(cluster):
    """A campaign whose tasks need a GPU is refused, not left waiting, on a cluster with no GPU workers."""
    from activation_store.extract.runner import OnCluster

    _, client = cluster
    with pytest.raises(ActstoreError, match=r"no worker of the dask cluster at tcp://.* declares the resource GPU=1")\
            as info:
        OnCluster(client).check_resources({"GPU": 1}, client.scheduler.address)
    assert "\n" not in str(info.value)
    OnCluster(client).check_resources(None, client.scheduler.address)  # CPU tasks need nothing declared


def test_campaign_device_refusals_are_one_line_and_write_nothing(models, pairs, tmp_path):
    """Checked before any cluster starts (no subprocess here: the CLI prints these lines as every ActstoreError)."""
    import torch

    store = tmp_path / "acts.zarr"
    refusals = [(dict(device_map="auto", device="cpu"), "--device-map places one model over several devices")]
    if not torch.cuda.is_available():
        refusals.append((dict(device="cuda"), "--device cuda: CUDA is not available here"))
    for options, message in refusals:
        with pytest.raises(ActstoreError, match=message) as info:
            run_campaign([spec(models[0], pairs, str(store), **options)], workers=2, progress=False)
        assert "\n" not in str(info.value)
    assert not store.exists()


def test_plain_extract_is_a_one_run_campaign_in_this_process(models, pairs, reference, tmp_path):
    """``extract`` runs the campaign's tasks here: one load of the weights, let go when it returns, and the bytes
    of a campaign of the same run."""
    from activation_store.extract import model_cache
    from activation_store.extract.models import plan_model

    checksum = plan_model(str(models[1])).checksum
    before = model_cache.loads(str(models[1]), False, checksum)
    store = str(tmp_path / "acts.zarr")
    result = actstore.extract(model=str(models[1]), dataset=str(pairs), store=store, device="cpu", **OPTS)
    assert result.status == "written" and result.tokens_written == result.tokens and result.fill_seconds > 0
    assert model_cache.loads(str(models[1]), False, checksum) == before + 1  # prepare and fill share one load
    assert not any(key[0] == str(models[1]) for key in model_cache._models)  # not held after it returned
    assert_identical(store, reference, models[1], "pairs")
