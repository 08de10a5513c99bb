"""Stores shared through S3, against a real S3-protocol server on 127.0.0.1 (moto_server, see s3_server.py).

Everything goes through obstore (reads and writes; s3fs where obstore cannot serve, and for a few checks)
exactly as with a real bucket: the endpoint comes from ``--endpoint-url`` (or ``storage_options``),
credentials from the standard AWS environment variables, which the server checks (signatures and access keys).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import s3fs
import xarray as xr
import zarr

import actstore
from activation_store.errors import ActstoreError
from activation_store.store import Store
from activation_store.store.transfer import copy_store
from s3_server import MotoServer, closed_port

ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS",
            "ACTSTORE_S3_CLIENT")
QUIET = {"OMP_NUM_THREADS": "1"}  # torch's threads fight on two cores (see test_crash_resume.py)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The server, with its IAM key exported as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for this process and the
    CLI subprocesses; AWS config files point nowhere, so nothing of the machine's own AWS setup leaks in."""
    server = MotoServer(request_log=str(tmp_path_factory.mktemp("s3log") / "access.log")).start()
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    os.environ.update({**server.env(), "AWS_CONFIG_FILE": str(nowhere), "AWS_SHARED_CREDENTIALS_FILE": str(nowhere)})
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process extractions: one thread, as QUIET gives the subprocesses


_buckets = itertools.count()


def new_bucket(s3, public: bool = False) -> str:
    name = f"acts-{next(_buckets)}-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=name)
    if public:  # the usual public-dataset policy: anyone may list and read
        client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]}]}))
    return name


@pytest.fixture
def bucket(s3) -> str:
    return new_bucket(s3)


def opts(s3, **extra) -> dict:
    return {"endpoint_url": s3.endpoint, **extra}


def extract_local(model_dir: Path, dataset: Path, store: Path, **kwargs) -> Path:
    actstore.extract(model=str(model_dir), dataset=str(dataset), store=str(store), chunk_tokens=16, batch_size=4,
                     progress=False, **kwargs)
    return store


@pytest.fixture(scope="session")
def _built(tmp_path_factory) -> dict[str, Path]:
    return {}


@pytest.fixture
def local_store(_built, tmp_path_factory, tmp_path, tiny_model_dir, parallel_jsonl) -> Path:
    """A fresh copy of one local store (tiny Llama over ``parallel_jsonl``): extracted once per session."""
    if "store" not in _built:
        _built["store"] = extract_local(tiny_model_dir("llama"), parallel_jsonl,
                                        tmp_path_factory.mktemp("built") / "acts.zarr")
    shutil.copytree(_built["store"], tmp_path / "acts.zarr")
    return tmp_path / "acts.zarr"


def s3_objects(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, by key relative to it: read straight from the server with boto3."""
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            found[key[len(prefix.rstrip("/")) + 1:]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return found


def local_files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def cli_all(cli, *calls: tuple[tuple, dict]) -> list:
    """Independent CLI runs side by side (each is mostly interpreter start-up): results in call order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: cli(*call[0], env=call[1]), calls))


def one_line_error(result) -> str:
    """The CLI failed the way users are promised: exit 2, one line on stderr, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("actstore: error: "), result.stderr
    assert result.stdout.strip() == ""
    return lines[0]


@contextmanager
def s3_requests(s3):
    """Every HTTP request the server answers inside the block, from its own access log (whichever client sent
    them: obstore or s3fs)."""
    calls: list[str] = []
    before = len(s3.requests_logged())
    yield calls
    time.sleep(0.3)  # the server logs a request after answering it
    calls += [line.split('"')[1] for line in s3.requests_logged()[before:]]


def same_run(a: xr.Dataset, b: xr.Dataset) -> None:
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert a.attrs["config_hash"] == b.attrs["config_hash"] and a.attrs["progress"] == b.attrs["progress"]


def last_token_means(ds: xr.Dataset) -> np.ndarray:
    last = (ds.token_offset + ds.token_count - 1).values
    return ds.hidden.isel(token=last).mean("token").values


# --- extraction straight into S3 -------------------------------------------------------------------------------

def test_extract_to_s3_opens_like_local(s3, bucket, tiny_model_dir, parallel_jsonl, local_store, tmp_path, cli):
    model_dir, local = tiny_model_dir("llama"), local_store
    remote = f"s3://{bucket}/team/acts.zarr"
    done = cli("extract", "--model", model_dir, "--dataset", parallel_jsonl, "--store", remote, "--chunk-tokens", "16",
               "--batch-size", "4", "--endpoint-url", s3.endpoint, "--quiet", env=QUIET)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("written: ")

    with s3_requests(s3) as calls:
        there = actstore.open_run(remote, model_dir.name, "pairs", storage_options=opts(s3))
    here = actstore.open_run(str(local), model_dir.name, "pairs")
    same_run(there, here)
    np.testing.assert_array_equal(last_token_means(there), last_token_means(here))
    xr.testing.assert_identical(actstore.open_lens(remote, model_dir.name, storage_options=opts(s3)),
                                actstore.open_lens(str(local), model_dir.name))
    tree = actstore.open(remote, storage_options=opts(s3))
    same_run(tree[f"{model_dir.name}/pairs"].to_dataset(), here)
    # opening costs a fixed handful of requests: the root metadata (consolidated, read by the handle and by xarray)
    # and one chunk per coordinate, which are loaded on open so that notebook selections work on them
    coordinate_chunks = sum(1 for name in here.coords if here[name].size)
    assert len(calls) <= 2 + coordinate_chunks, calls
    assert all(call.startswith("GET ") for call in calls), calls  # whole objects: no HEAD, no listing

    # ... however many runs the store holds
    more = tmp_path / "more.jsonl"
    shutil.copy(parallel_jsonl, more)
    actstore.extract(model=str(model_dir), dataset=str(more), store=remote, limit=1, progress=False,
                     storage_options=opts(s3))
    with s3_requests(s3) as again:
        actstore.open_run(remote, model_dir.name, "pairs", storage_options=opts(s3))
    assert len(again) == len(calls)

    listing = cli("ls", remote, "--endpoint-url", s3.endpoint)
    assert listing.returncode == 0 and "pairs" in listing.stdout and "more" in listing.stdout


def test_extract_into_s3_resumes_after_a_kill(s3, bucket, tiny_model_dir, parallel_jsonl, local_store, cli):
    """SIGKILLed between writing a block's chunks and committing it (the writer's fault hook), then resumed:
    the S3 run ends byte-identical to an uninterrupted local one."""
    model_dir, local = tiny_model_dir("llama"), local_store
    remote = f"s3://{bucket}/acts.zarr"
    args = ("extract", "--model", model_dir, "--dataset", parallel_jsonl, "--store", remote, "--chunk-tokens", "16",
            "--batch-size", "4", "--endpoint-url", s3.endpoint, "--quiet")
    killed = cli(*args, env={**QUIET, "ACTSTORE_FAULT_AFTER_BLOCKS": "3"})
    assert killed.returncode < 0, (killed.returncode, killed.stderr)  # died by the signal

    partial = actstore.open_run(remote, model_dir.name, "pairs", storage_options=opts(s3))
    full = actstore.open_run(str(local), model_dir.name, "pairs")
    assert 0 < partial.sizes["token"] < full.sizes["token"]  # only committed, whole examples are shown
    xr.testing.assert_identical(partial.hidden, full.hidden.isel(token=slice(0, partial.sizes["token"])))

    resumed = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=remote, chunk_tokens=16,
                               batch_size=4, progress=False, storage_options=opts(s3))
    assert resumed.status == "resumed" and 0 < resumed.tokens_written < resumed.tokens
    same_run(actstore.open_run(remote, model_dir.name, "pairs", storage_options=opts(s3)), full)
    run = f"{model_dir.name}/pairs/hidden/c/"
    chunks_there = {k: v for k, v in s3_objects(s3, bucket, "acts.zarr").items() if k.startswith(run)}
    chunks_here = {k: v for k, v in local_files(local).items() if k.startswith(run)}
    assert chunks_there and chunks_there == chunks_here


# --- push and pull -----------------------------------------------------------------------------------------------

def test_push_pull_round_trip_is_byte_identical(s3, bucket, local_store, tmp_path, cli):
    remote = f"s3://{bucket}/shared/acts.zarr"
    pushed = cli("push", local_store, remote, "--endpoint-url", s3.endpoint, "--quiet")
    assert pushed.returncode == 0, pushed.stderr
    original = local_files(local_store)
    assert s3_objects(s3, bucket, "shared/acts.zarr") == original  # every object, the root zarr.json included
    assert f"{len(original) - 1} sent" in pushed.stdout

    pulled_path = tmp_path / "pulled.zarr"
    pulled = cli("pull", remote, pulled_path, "--endpoint-url", s3.endpoint, "--quiet")
    assert pulled.returncode == 0, pulled.stderr
    assert local_files(pulled_path) == original

    again = copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)
    assert (again.sent, again.skipped, again.removed) == (0, len(original) - 1, 0)

    # identical means size and MD5: a same-size object with other bytes is sent again; a stray object is removed
    model = next(p.name for p in local_store.iterdir() if p.is_dir())
    chunk = f"{model}/pairs/hidden/c/0/0/0"
    client = s3.client()
    client.put_object(Bucket=bucket, Key=f"shared/acts.zarr/{chunk}", Body=bytes(len(original[chunk])))
    client.put_object(Bucket=bucket, Key=f"shared/acts.zarr/{model}/pairs/hidden/c/9/9/9", Body=b"stray")
    repaired = copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)
    assert (repaired.sent, repaired.removed) == (1, 1)
    assert s3_objects(s3, bucket, "shared/acts.zarr") == original
    (pulled_path / chunk).write_bytes(bytes(len(original[chunk])))
    assert copy_store(remote, str(pulled_path), source_options=opts(s3), progress=False).sent == 1
    assert local_files(pulled_path) == original
    same_run(actstore.open_run(str(pulled_path), model, "pairs"), actstore.open_run(str(local_store), model, "pairs"))


class Interrupted(Exception):
    pass


def interrupt_after(n: int):
    sent: list[str] = []

    def hook(key: str) -> None:
        sent.append(key)
        if len(sent) == n:
            raise Interrupted(key)
    return hook


def test_interrupted_push_and_pull_resume(s3, bucket, local_store, tmp_path, cli):
    remote = f"s3://{bucket}/acts.zarr"
    with pytest.raises(Interrupted):
        copy_store(str(local_store), remote, destination_options=opts(s3), jobs=4, progress=False,
                   after_object=interrupt_after(10))
    landed = s3_objects(s3, bucket, "acts.zarr")
    assert 10 <= len(landed) < len(local_files(local_store)) - 1
    assert "zarr.json" not in landed  # the root comes last: nothing presents this as a store
    with pytest.raises(ActstoreError, match="no actstore store"):
        actstore.open(remote, storage_options=opts(s3))
    one_line_error(cli("ls", remote, "--endpoint-url", s3.endpoint))

    result = copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)
    assert result.skipped == len(landed)  # nothing that had landed was sent again
    assert result.sent == result.objects - len(landed)
    assert s3_objects(s3, bucket, "acts.zarr") == local_files(local_store)

    pulled = tmp_path / "pulled.zarr"
    with pytest.raises(Interrupted):
        copy_store(remote, str(pulled), source_options=opts(s3), jobs=4, progress=False,
                   after_object=interrupt_after(7))
    assert not (pulled / "zarr.json").exists()
    with pytest.raises(ActstoreError, match="no actstore store"):
        actstore.open(str(pulled))
    before = len(local_files(pulled))
    result = copy_store(remote, str(pulled), source_options=opts(s3), progress=False)
    assert result.skipped == before and result.sent == result.objects - before
    assert local_files(pulled) == local_files(local_store)


def test_partial_pull_opens_on_its_own(s3, bucket, tiny_model_dir, parallel_jsonl, local_store, tmp_path, cli):
    model = tiny_model_dir("llama").name
    other = tmp_path / "other.jsonl"
    shutil.copy(parallel_jsonl, other)
    extract_local(tiny_model_dir("llama"), other, local_store, limit=2)
    remote = f"s3://{bucket}/acts.zarr"
    copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)

    part = tmp_path / "part.zarr"
    pulled = cli("pull", remote, part, "--model", model, "--dataset", "pairs", "--endpoint-url", s3.endpoint, "--quiet")
    assert pulled.returncode == 0, pulled.stderr
    whole = local_files(local_store)
    got = local_files(part)
    assert set(got) == {key for key in whole if not key.startswith(f"{model}/other/")}  # the run and its lens head
    assert all(got[key] == whole[key] for key in got if key != "zarr.json")
    same_run(actstore.open_run(str(part), model, "pairs"), actstore.open_run(str(local_store), model, "pairs"))
    xr.testing.assert_identical(actstore.open_lens(str(part), model), actstore.open_lens(str(local_store), model))
    with pytest.raises(ActstoreError, match="not in"):
        actstore.open_run(str(part), model, "other")
    root = json.loads((part / "zarr.json").read_text())
    assert root["attributes"]["actstore_format"] == 1
    assert not any("other" in path for path in root["consolidated_metadata"]["metadata"])
    listing = cli("ls", part)
    assert listing.returncode == 0 and "pairs" in listing.stdout and "other" not in listing.stdout

    # the other run joins it later: both are listed (the consolidated metadata is merged, not replaced)
    copy_store(remote, str(part), model, "other", source_options=opts(s3), progress=False)
    same_run(actstore.open_run(str(part), model, "other"), actstore.open_run(str(local_store), model, "other"))
    same_run(actstore.open_run(str(part), model, "pairs"), actstore.open_run(str(local_store), model, "pairs"))
    assert local_files(part) == local_files(local_store)


def test_push_onto_a_different_store_is_refused(s3, bucket, tiny_model_dir, parallel_jsonl, local_store, tmp_path,
                                                cli):
    other = extract_local(tiny_model_dir("llama"), parallel_jsonl, tmp_path / "f32.zarr", dtype="float32")
    remote = f"s3://{bucket}/acts.zarr"
    copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)
    before = s3_objects(s3, bucket, "acts.zarr")

    refused = one_line_error(cli("push", other, remote, "--endpoint-url", s3.endpoint, "--quiet"))
    assert "different store" in refused and "--overwrite" in refused and "config" in refused
    assert s3_objects(s3, bucket, "acts.zarr") == before  # untouched

    replaced = cli("push", other, remote, "--endpoint-url", s3.endpoint, "--quiet", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced" in replaced.stdout
    assert s3_objects(s3, bucket, "acts.zarr") == local_files(other)
    model = tiny_model_dir("llama").name
    same_run(actstore.open_run(remote, model, "pairs", storage_options=opts(s3)),
             actstore.open_run(str(other), model, "pairs"))


# --- anonymous access --------------------------------------------------------------------------------------------

def test_anonymous_read_of_a_public_bucket(s3, local_store, tmp_path, cli, monkeypatch):
    public, private = new_bucket(s3, public=True), new_bucket(s3)
    for name in (public, private):
        copy_store(str(local_store), f"s3://{name}/acts.zarr", destination_options=opts(s3), progress=False)
    model = next(p.name for p in local_store.iterdir() if p.is_dir())
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")  # no credentials anywhere: anonymous is all there is
    with s3.anonymous():
        listing = cli("ls", f"s3://{public}/acts.zarr", "--anon", "--endpoint-url", s3.endpoint)
        assert listing.returncode == 0, listing.stderr
        assert "pairs" in listing.stdout
        ds = actstore.open_run(f"s3://{public}/acts.zarr", model, "pairs", storage_options=opts(s3, anon=True))
        same_run(ds, actstore.open_run(str(local_store), model, "pairs"))
        pulled = cli("pull", f"s3://{public}/acts.zarr", tmp_path / "pub.zarr", "--anon", "--endpoint-url",
                     s3.endpoint, "--quiet")
        assert pulled.returncode == 0, pulled.stderr
        assert local_files(tmp_path / "pub.zarr") == local_files(local_store)

        denied = one_line_error(cli("ls", f"s3://{private}/acts.zarr", "--anon", "--endpoint-url", s3.endpoint))
        assert "denied" in denied
        with pytest.raises(ActstoreError, match="denied"):
            copy_store(f"s3://{private}/acts.zarr", str(tmp_path / "priv.zarr"), progress=False,
                       source_options=opts(s3, anon=True))
        assert not (tmp_path / "priv.zarr" / "zarr.json").exists()
        with pytest.raises(ActstoreError, match="denied"):
            actstore.open_run(f"s3://{private}/acts.zarr", model, "pairs", storage_options=opts(s3, anon=True))


# --- the S3 client ---------------------------------------------------------------------------------------------

def client_of(handle: Store) -> str:
    """Which client a handle's Zarr store goes through."""
    inner = handle.zarr_store.wrapped
    if isinstance(inner, zarr.storage.ObjectStore):
        return "obstore"
    return "s3fs" if isinstance(inner, zarr.storage.FsspecStore) else type(inner).__name__


def test_reads_and_writes_go_through_obstore_with_the_options_users_pass(s3, bucket, local_store, monkeypatch):
    remote = f"s3://{bucket}/acts.zarr"
    copy_store(str(local_store), remote, destination_options=opts(s3), progress=False)
    model = next(p.name for p in local_store.iterdir() if p.is_dir())
    here = actstore.open_run(str(local_store), model, "pairs")
    for options in (opts(s3), opts(s3, key=s3.key_id, secret=s3.secret),
                    {"client_kwargs": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"}}):
        handle = Store.open(remote, options)
        assert client_of(handle) == "obstore" and not handle.fork_safe, options
        there = actstore.open_run(handle, model, "pairs")
        same_run(there, here)
        np.testing.assert_array_equal(last_token_means(there), last_token_means(here))
        assert client_of(Store.open(remote, options, mode="r+")) == "obstore", options
    # options obstore has no equivalent for, and the switch, keep s3fs, for writes as for reads
    assert client_of(Store.open(remote, opts(s3, default_block_size=1 << 20))) == "s3fs"
    assert client_of(Store.open(remote, opts(s3, default_block_size=1 << 20), mode="r+")) == "s3fs"
    monkeypatch.setenv("ACTSTORE_S3_CLIENT", "s3fs")
    handle = Store.open(remote, opts(s3))
    assert client_of(handle) == "s3fs" and client_of(Store.open(remote, opts(s3), mode="r+")) == "s3fs"
    np.testing.assert_array_equal(last_token_means(actstore.open_run(handle, model, "pairs")), last_token_means(here))
    monkeypatch.setenv("ACTSTORE_S3_CLIENT", "boto")
    with pytest.raises(ActstoreError, match="ACTSTORE_S3_CLIENT must be 'obstore' or 's3fs'"):
        Store.open(remote, opts(s3))


S3FS_WRITES = {"put_object", "delete_object", "delete_objects", "create_multipart_upload", "upload_part",
               "complete_multipart_upload", "copy_object"}


def test_extraction_and_push_write_through_obstore(s3, bucket, tiny_model_dir, parallel_jsonl, local_store, tmp_path,
                                                   monkeypatch):
    """Extracting into S3 (lock, chunks, metadata, consolidation) and pushing send no write through s3fs; with
    ``ACTSTORE_S3_CLIENT=s3fs`` the same writes go through s3fs and end identical."""
    calls: list[str] = []
    call_s3 = s3fs.S3FileSystem._call_s3

    async def recorded(self, method, *args, **kwargs):
        calls.append(method)
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recorded)
    model = tiny_model_dir("llama")
    remote = f"s3://{bucket}/acts.zarr"
    assert client_of(Store.open(f"s3://{bucket}/other.zarr", opts(s3), mode="a")) == "obstore"
    extract_local(model, parallel_jsonl, remote, storage_options=opts(s3))
    pushed = f"s3://{bucket}/pushed.zarr"
    copy_store(str(local_store), pushed, destination_options=opts(s3), progress=False)
    assert not S3FS_WRITES & set(calls), sorted(set(calls))
    same_run(actstore.open_run(remote, model.name, "pairs", storage_options=opts(s3)),
             actstore.open_run(str(local_store), model.name, "pairs"))
    assert s3_objects(s3, bucket, "pushed.zarr") == local_files(local_store)

    monkeypatch.setenv("ACTSTORE_S3_CLIENT", "s3fs")
    calls.clear()
    extract_local(model, parallel_jsonl, f"s3://{bucket}/by-s3fs.zarr", storage_options=opts(s3))
    assert "put_object" in calls
    ours = {k: v for k, v in s3_objects(s3, bucket, "acts.zarr").items() if "/c/" in k}
    assert ours and ours == {k: v for k, v in s3_objects(s3, bucket, "by-s3fs.zarr").items() if "/c/" in k}


def test_write_failures_through_obstore_are_one_line(s3, bucket, local_store, monkeypatch):
    """A bucket gone mid-push, or a server gone under an open writable handle: one line, no traceback."""
    remote = f"s3://{bucket}/acts.zarr"
    client = s3.client()

    def drop_bucket(key: str) -> None:
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)

    with pytest.raises(ActstoreError) as caught:
        copy_store(str(local_store), remote, destination_options=opts(s3), jobs=1, progress=False,
                   after_object=drop_bucket)
    assert str(caught.value) == f"bucket '{bucket}' does not exist ({remote})"

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    server = MotoServer().start(auth=False)
    try:
        server.client().create_bucket(Bucket="gone")
        handle = Store.open("s3://gone/acts.zarr", {"endpoint_url": server.endpoint}, mode="a")
        assert client_of(handle) == "obstore"
    finally:
        server.stop()
    with pytest.raises(ActstoreError) as caught:
        handle.root.create_array("x", shape=(4,), dtype="f4")[:] = 1
    assert str(caught.value).startswith("cannot reach") and "\n" not in str(caught.value)


# --- bad input: one line, non-zero exit, nothing half-written presented as whole -------------------------------

BAD_CASES = ["missing bucket", "wrong credentials", "unreachable endpoint", "unknown scheme"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_in_one_line(case, s3, bucket, local_store, tiny_model_dir, parallel_jsonl, tmp_path, cli):
    endpoint, env, target = s3.endpoint, dict(QUIET), f"s3://{bucket}/acts.zarr"
    if case == "missing bucket":
        target = "s3://no-such-bucket-here/acts.zarr"
        expect = "does not exist"
    elif case == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-" + s3.secret[6:]
        expect = "denied"
    elif case == "unreachable endpoint":
        endpoint = f"http://127.0.0.1:{closed_port()}"
        env["AWS_MAX_ATTEMPTS"] = "1"  # botocore's retries would only make the wait longer
        expect = "cannot reach"
    else:
        target = "nosuchscheme://bucket/acts.zarr"
        expect = "unknown URL scheme"
    if case == "wrong credentials":  # a store really is there, for the credentials to be refused
        copy_store(str(local_store), f"s3://{bucket}/acts.zarr", destination_options=opts(s3), progress=False)
    before = s3_objects(s3, bucket, "acts.zarr")
    pulled = tmp_path / "pulled.zarr"
    commands = {
        "ls": ("ls", target),
        "pull": ("pull", target, pulled, "--quiet"),
        "push": ("push", local_store, target + ("" if case == "unknown scheme" else "-copy"), "--quiet"),
        "extract": ("extract", "--model", tiny_model_dir("llama"), "--dataset", parallel_jsonl, "--store",
                    target.replace("acts.zarr", "new.zarr"), "--quiet"),
    }
    results = cli_all(cli, *(((*args, "--endpoint-url", endpoint), env) for args in commands.values()))
    for name, result in zip(commands, results):
        line = one_line_error(result)
        assert expect in line, (name, line)
    assert not (pulled / "zarr.json").exists()
    assert s3_objects(s3, bucket, "acts.zarr") == before
    assert s3_objects(s3, bucket, "acts.zarr-copy") == {}
    assert s3_objects(s3, bucket, "new.zarr") == {}


def test_dataset_without_model_and_same_place_are_refused(local_store, cli):
    assert "--model" in one_line_error(cli("push", local_store, str(local_store) + "-copy", "--dataset", "pairs"))
    assert "overlap" in one_line_error(cli("push", local_store, local_store / "inside"))


# --- credentials never leave the AWS chain -----------------------------------------------------------------------

def test_credentials_never_appear_in_output_errors_or_store(s3, bucket, local_store, tiny_model_dir, parallel_jsonl,
                                                             tmp_path, cli):
    secrets = [s3.secret, s3.key_id]
    remote = f"s3://{bucket}/acts.zarr"
    pushed = cli("push", local_store, remote, "--endpoint-url", s3.endpoint)
    assert pushed.returncode == 0, pushed.stderr
    wrong = "wrong-" + uuid.uuid4().hex
    model = tiny_model_dir("llama").name
    results = cli_all(cli, *[((*args, "--endpoint-url", s3.endpoint), env) for args, env in (
        (("info", remote, "--model", model, "--dataset", "pairs"), {}),  # prints every stored attribute
        (("ls", remote), {"AWS_SECRET_ACCESS_KEY": wrong}),
        (("push", local_store, remote + "-2"), {"AWS_SECRET_ACCESS_KEY": wrong}),
        (("pull", remote, tmp_path / "x.zarr"), {"AWS_SECRET_ACCESS_KEY": wrong}))])
    assert results[0].returncode == 0, results[0].stderr
    for result in results[1:]:
        one_line_error(result)
    copy_store(remote, str(tmp_path / "pulled.zarr"), source_options=opts(s3), progress=False)
    outputs = [r.stdout + r.stderr for r in (pushed, *results)]
    errors = []
    for call in (lambda: actstore.open(remote, storage_options=opts(s3, key=s3.key_id, secret=wrong)),
                 lambda: copy_store(str(local_store), remote + "-3", progress=False,
                                    destination_options=opts(s3, key=s3.key_id, secret=wrong))):
        with pytest.raises(ActstoreError) as caught:
            call()
        errors.append(f"{caught.value!s} {caught.value!r}")
    actstore.extract(model=str(tiny_model_dir("llama")), dataset=str(parallel_jsonl), store=remote + "-x", limit=1,
                     progress=False, storage_options=opts(s3))
    stored = [v.decode("utf-8", "replace") for prefix in ("acts.zarr", "acts.zarr-x")
              for k, v in s3_objects(s3, bucket, prefix).items() if k.endswith("zarr.json")]
    stored += [p.read_text() for p in (tmp_path / "pulled.zarr").rglob("zarr.json")]
    assert len(stored) > 20
    for text in outputs + errors + stored:
        for secret in (*secrets, wrong):
            assert secret not in text
