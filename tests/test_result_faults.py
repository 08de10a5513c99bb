"""Nothing stored is ever lost (issue 23): a saved analysis result is replaced in one step or not at all.

A save killed at each step (``ACTSTORE_FAULT_RESULT``, store/replace.py), a save that meets a real OS error
(a file size limit: EFBIG, as a full disk gives ENOSPC), an analysis over a run with a lost chunk and two
saves racing for one store each leave the old result or the new one, whole, as every reader reads it; and
``actstore verify`` names an unreadable ``zarr.json`` and live metadata that disagree with the consolidated
metadata readers open. All through the real ``actstore`` command on a tiny random model."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import actstore
from activation_store.store import Store, layout
from activation_store.store.lock import RESULTS_LOCK, results_lock
from activation_store.store.replace import FAULT_ENV, STAGING
from activation_store.workflows.results import load_from_store

from conftest import PAIRS

NAME = "similarity-last-centered"
LENS = "logit-lens-example-0"
OLD = ("--variants", "en,zh")          # the stored result: one pair
NEW = ("--variants", "en,zh,fr")       # what replaces it: three pairs
OTHER = ("--variants", "en,fr")        # a second writer's result: one other pair


def similarity(store: Path, variants: tuple[str, ...], out: Path, model: str) -> list[str]:
    return ["analyze", "similarity", "--store", str(store), "--model", model, "--dataset", "pairs", *variants,
            "--bootstrap", "20", "--no-plot", "--out", str(out)]


def values(store: Path, model: str, name: str = NAME) -> dict[str, object]:
    """The result as ``actstore.open`` shows it, checked equal to what ``load_from_store`` (live metadata) reads:
    every variable's dims and values, and the attributes."""
    tree = actstore.open(str(store))
    ds = tree[f"{layout.RESULTS}/{layout.run_path(model, 'pairs')}/{name}"].dataset
    seen = {n: (v.dims, np.asarray(v.values).tolist()) for n, v in ds.variables.items()}
    live = load_from_store(str(store), model, "pairs", name)
    assert {n: (v.dims, np.asarray(v.values).tolist()) for n, v in live.variables.items()} == seen
    return {"variables": seen, "attrs": dict(ds.attrs)}


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_dir(store: Path) -> Path:
    (model,) = [p for p in store.iterdir() if p.is_dir() and p.name != layout.RESULTS]
    return model / "pairs"


def result_dir(store: Path, model: str, name: str = NAME) -> Path:
    return store / layout.results_path(model, "pairs", name)


def copy(store: Path, where: Path) -> Path:
    target = where / "acts.zarr"
    shutil.copytree(store, target)
    return target


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command failed with exit 2 and exactly one line on stderr, no traceback; that line."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actstore: error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return lines[0]


def verified(cli, store: Path) -> None:
    result = cli("verify", store)
    assert result.returncode == 0 and result.stdout.startswith("ok: ") and " 0 bad or missing" in result.stdout, \
        (result.stdout, result.stderr)


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory, _forked_cli):
    """A tiny store with a stored similarity result (OLD) and a logit-lens result; and the values each of the
    results NEW and OTHER would be, each saved over OLD in a copy of the store."""
    cli = _forked_cli
    root = tmp_path_factory.mktemp("result-faults")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in PAIRS) + "\n", encoding="utf-8")
    model_dir = tiny_model_dir("llama")
    model = model_dir.name
    store = root / "base.zarr"
    actstore.extract(model=str(model_dir), dataset=str(data), store=str(store), dtype="float32", progress=False)
    for args in (similarity(store, OLD, root / "out", model),
                 ["analyze", "logit-lens", "--store", str(store), "--model", model, "--dataset", "pairs",
                  "--example", "0", "--no-plot", "--out", str(root / "out")]):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
    expected = {"old": values(store, model)}
    for key, variants in (("new", NEW), ("other", OTHER)):
        again = copy(store, root / key)
        result = cli(*similarity(again, variants, root / "out", model))
        assert result.returncode == 0, result.stderr
        expected[key] = values(again, model)
    old_pairs = expected["old"]["variables"]["pair"][1]
    assert old_pairs == ["en-zh"] and expected["new"]["variables"]["pair"][1] == ["en-zh", "en-fr", "zh-fr"]
    assert expected["other"]["variables"]["pair"][1] == ["en-fr"]
    return store, model, expected


# --- a kill at each step of a save -----------------------------------------------------------------------------
KILLS = {  # step → which result every reader sees right after the kill
    "staged": "old",        # written under the temporary name, not yet read back
    "checked": "old",       # read back and compared, not yet in place
    "swapped": "new",       # exchanged into place, the consolidated metadata not yet refreshed
    "consolidated": "new",  # in place and described, the old group not yet deleted
}


@pytest.mark.parametrize("step", list(KILLS))
def test_a_save_killed_at_any_step_leaves_the_old_result_or_the_new_whole(world, step, cli, tmp_path):
    base, model, expected = world
    store = copy(base, tmp_path)
    killed = cli(*similarity(store, NEW, tmp_path / "out", model), env={FAULT_ENV: step})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert (store / STAGING).is_dir() and (store / RESULTS_LOCK).is_file()   # the kill left its pieces behind
    assert values(store, model) == expected[KILLS[step]]
    verified(cli, store)      # whole as readers read it, before any recovery

    again = cli(*similarity(store, NEW, tmp_path / "out", model))   # the next save finishes or undoes it
    assert again.returncode == 0, again.stderr
    assert values(store, model) == expected["new"]
    assert not (store / STAGING).exists() and not (store / RESULTS_LOCK).exists()
    assert sorted(p.name for p in result_dir(store, model).parent.iterdir()) == sorted([NAME, LENS, layout.METADATA])
    verified(cli, store)


def test_a_killed_first_save_leaves_no_result_and_no_trace(world, cli, tmp_path):
    """No old result: a save killed after its check leaves none (a reader never meets a half one)."""
    base, model, expected = world
    store = copy(base, tmp_path)
    shutil.rmtree(result_dir(store, model))
    assert cli("verify", store).returncode == 2          # the consolidated metadata still describes it
    Store.open(str(store), mode="r+").consolidate()
    killed = cli(*similarity(store, NEW, tmp_path / "out", model), env={FAULT_ENV: "checked"})
    assert killed.returncode == -signal.SIGKILL
    with pytest.raises(KeyError):
        values(store, model)
    verified(cli, store)
    assert cli(*similarity(store, NEW, tmp_path / "out", model)).returncode == 0
    assert values(store, model) == expected["new"] and not (store / STAGING).exists()
    verified(cli, store)


# --- an OS error while saving ------------------------------------------------------------------------------------
def _limited(max_bytes: int):
    def limit() -> None:  # in the child: writing a file past max_bytes fails with EFBIG (as a full disk: ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return limit


def test_a_save_failing_on_a_full_file_system_leaves_the_old_result(world, cli, tmp_path):
    """Every file of a result is under 10 kB and the store's root ``zarr.json`` with its consolidated metadata is
    over it: the write fails when the consolidated metadata is refreshed, after the new group was put in place;
    the exchange is undone."""
    base, model, expected = world
    store = copy(base, tmp_path)
    assert max(p.stat().st_size for p in result_dir(store, model).rglob("*") if p.is_file()) < 10_000
    assert (store / layout.METADATA).stat().st_size > 10_000
    before = tree_digest(result_dir(store, model))
    result = subprocess.run([sys.executable, "-m", "activation_store", *similarity(store, NEW, tmp_path / "out", model)],
                            capture_output=True, text=True, timeout=120, preexec_fn=_limited(10_000))
    line = one_line_error(result)
    assert line == (f"actstore: error: {store}: saving {NAME} failed (File too large); the stored result is "
                    f"unchanged"), line
    assert tree_digest(result_dir(store, model)) == before
    assert values(store, model) == expected["old"]
    assert not (store / STAGING).exists() and not (store / RESULTS_LOCK).exists()
    verified(cli, store)
    assert cli(*similarity(store, NEW, tmp_path / "out", model)).returncode == 0   # with room again: saved
    assert values(store, model) == expected["new"]
    verified(cli, store)


def test_a_save_failing_while_writing_the_staged_result_leaves_the_old_result(world, tmp_path):
    """A limit of 600 bytes: the journal and the lock fit, the staged result's array documents do not."""
    base, model, expected = world
    store = copy(base, tmp_path)
    before = tree_digest(store)
    script = ("import sys, activation_store.workflows.results as r, actstore\n"
              "ds = r.load_from_store(sys.argv[1], sys.argv[2], 'pairs', sys.argv[3])\n"
              "try:\n    r.save_to_store(ds, sys.argv[4], sys.argv[2], 'pairs', sys.argv[3])\n"
              "except actstore.ActstoreError as exc:\n    print(exc)\n")
    source = copy(base, tmp_path / "source")   # a second copy, holding the new result to be saved
    assert subprocess.run([sys.executable, "-m", "activation_store", *similarity(source, NEW, tmp_path / "out", model)],
                          capture_output=True, timeout=120).returncode == 0
    result = subprocess.run([sys.executable, "-c", script, str(source), model, NAME, str(store)], capture_output=True,
                            text=True, timeout=120, preexec_fn=_limited(600))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.strip() == f"{store}: saving {NAME} failed (File too large); the stored result is unchanged"
    assert tree_digest(store) == before             # not one byte of the store changed
    assert values(store, model) == expected["old"]


def test_the_line_a_full_disk_gives(world):
    """ENOSPC (what a full disk gives, which a file size limit cannot) names itself and says what to do."""
    import errno

    from activation_store.workflows.result_save import save_failure

    store = Store.open(str(world[0]))
    full = save_failure(store, NAME, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), None)
    assert str(full) == (f"{store.url}: no space left on the device while saving {NAME}; the stored result is "
                         f"unchanged; free some space and run the same command again")


# --- an analysis over damaged input ------------------------------------------------------------------------------
DAMAGED = {  # the chunk deleted from the run → the analysis that reads it and the result it would replace
    "hidden_last/c/0/0/0": (["analyze", "similarity", *NEW, "--bootstrap", "20"], NAME),
    "hidden/c/1/0/0": (["analyze", "logit-lens", "--example", "0"], LENS),
}


@pytest.mark.parametrize("chunk", list(DAMAGED))
def test_an_analysis_over_a_lost_chunk_leaves_the_stored_result_byte_identical(world, chunk, cli, tmp_path):
    base, model, _ = world
    store = copy(base, tmp_path)
    command, name = DAMAGED[chunk]
    (run_dir(store) / chunk).unlink()
    before, old = tree_digest(store), values(store, model, name)
    out = tmp_path / "out"
    result = cli(*command, "--store", store, "--model", model, "--dataset", "pairs", "--no-plot", "--out", out)
    line = one_line_error(result)
    key = f"{run_dir(store).relative_to(store)}/{chunk}"
    assert line == (f"actstore: error: {store}: chunk {key} is missing; the analysis stopped before writing "
                    f"anything; `actstore verify {store}` lists every damaged chunk"), line
    assert tree_digest(store) == before and values(store, model, name) == old
    assert not out.exists()                                   # no table either
    report = cli("verify", store)
    assert report.returncode == 2 and report.stdout.splitlines() == [f"missing  {key}"], report.stdout


# --- actstore verify on damaged metadata -------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("where", ["run", "result"])
def test_verify_names_a_truncated_array_zarr_json(world, where, cli, tmp_path):
    base, model, _ = world
    store = copy(base, tmp_path)
    doc = (run_dir(store) / "hidden_last" if where == "run" else result_dir(store, model) / "score") / layout.METADATA
    _truncate(doc)
    result = cli("verify", store)
    line = one_line_error(result)
    assert line.endswith(", 1 bad or missing") and line.startswith(f"actstore: error: {store}: ")
    key = str(doc.relative_to(store))
    assert result.stdout.splitlines()[0].startswith(f"metadata {key}  (JSONDecodeError: ")
    assert len(result.stdout.splitlines()) == 1, result.stdout


def test_a_save_that_cannot_refresh_the_consolidated_metadata_keeps_the_old_result(world, cli, tmp_path):
    """Another node's unreadable ``zarr.json`` makes the consolidation fail after the new group was put in place:
    the exchange is undone, the root ``zarr.json`` put back, and the error points to verify."""
    base, model, expected = world
    store = copy(base, tmp_path)
    _truncate(run_dir(store) / "stat_mean" / layout.METADATA)
    root_doc, before = (store / layout.METADATA).read_bytes(), tree_digest(result_dir(store, model))
    line = one_line_error(cli(*similarity(store, NEW, tmp_path / "out", model)))
    assert line == (f"actstore: error: {store}: cannot refresh the consolidated metadata (JSONDecodeError); "
                    f"`actstore verify {store}` names the damaged metadata"), line
    assert (store / layout.METADATA).read_bytes() == root_doc
    assert tree_digest(result_dir(store, model)) == before and values(store, model) == expected["old"]
    assert not (store / STAGING).exists() and not (store / RESULTS_LOCK).exists()


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def test_verify_reports_live_metadata_that_disagrees_with_the_consolidated(world, cli, tmp_path):
    base, model, _ = world
    store = copy(base, tmp_path)
    hidden = run_dir(store) / "hidden" / layout.METADATA
    shape = json.loads(hidden.read_text())["shape"]
    _edit(hidden, lambda d: d["shape"].__setitem__(1, shape[1] - 1))
    _edit(result_dir(store, model) / layout.METADATA, lambda d: d["attributes"].__setitem__("n_boot", 999))
    result = cli("verify", store)
    line = one_line_error(result)
    assert line.endswith(", 2 bad or missing"), line
    short = [shape[0], shape[1] - 1, shape[2]]
    assert sorted(result.stdout.splitlines()) == sorted([
        f"mismatch {hidden.relative_to(store)}  (readers see shape {json.dumps(shape)}, the store's zarr.json says "
        f"{json.dumps(short)})",
        f"mismatch {layout.results_path(model, 'pairs', NAME)}/{layout.METADATA}  (attributes n_boot differ between "
        f"the store's zarr.json and the consolidated metadata readers open)",
    ]), result.stdout


# --- two savers ----------------------------------------------------------------------------------------------------
def test_two_concurrent_saves_both_end_and_the_result_is_whole(world, cli, tmp_path):
    """Two processes save into one store at once: the second waits for the first (the results lock); both
    succeed and the result is the one or the other, whole."""
    base, model, expected = world
    store = copy(base, tmp_path)
    first = cli.start(*similarity(store, NEW, tmp_path / "a", model))
    second = cli.start(*similarity(store, OTHER, tmp_path / "b", model))
    for running in (first, second):
        out, err = running.communicate(120)
        assert running.returncode == 0, err
    assert values(store, model) in (expected["new"], expected["other"])
    assert not (store / STAGING).exists() and not (store / RESULTS_LOCK).exists()
    verified(cli, store)


def test_two_racing_saves_that_do_not_wait_end_ok_or_refused_in_one_line(world, cli, tmp_path):
    base, model, expected = world
    store = copy(base, tmp_path)
    env = {"ACTSTORE_LOCK_WAIT": "0"}
    runs = {key: cli.start(*similarity(store, args, tmp_path / key, model), env=env)
            for key, args in (("new", NEW), ("other", OTHER))}
    ended = {key: (running.communicate(120), running.returncode) for key, running in runs.items()}
    saved = [key for key, (_, code) in ended.items() if code == 0]
    assert saved, ended
    for key, ((_, err), code) in ended.items():
        if code != 0:
            other = runs["other" if key == "new" else "new"]
            assert code == 2 and err.strip().splitlines() == [
                line for line in err.strip().splitlines() if line.startswith("actstore: error: ")], err
            assert f"results are being saved by pid {other.pid} on " in err and RESULTS_LOCK in err, err
    assert values(store, model) in [expected[key] for key in saved]
    verified(cli, store)


def test_a_save_while_the_results_lock_is_held_is_refused_naming_the_holder(world, cli, tmp_path):
    base, model, expected = world
    store = copy(base, tmp_path)
    before = tree_digest(store / layout.RESULTS)
    with results_lock(Store.open(str(store), mode="r+"), wait=0):
        refused = cli(*similarity(store, NEW, tmp_path / "out", model), env={"ACTSTORE_LOCK_WAIT": "0"})
    line = one_line_error(refused)
    assert f"{store}: results are being saved by pid {os.getpid()} on " in line, line
    assert line.endswith(f"wait for it to finish, or delete {store / RESULTS_LOCK} if that process is gone"), line
    assert tree_digest(store / layout.RESULTS) == before and values(store, model) == expected["old"]

    held = Store.open(str(store), mode="r+")
    lock = results_lock(held, wait=0)
    lock.__enter__()
    threading.Timer(1.5, lock.__exit__, (None, None, None)).start()   # released while the next save waits
    started = time.monotonic()
    waited = cli(*similarity(store, NEW, tmp_path / "out", model), env={"ACTSTORE_LOCK_WAIT": "60"})
    assert waited.returncode == 0, waited.stderr
    assert time.monotonic() - started >= 1.4
    assert values(store, model) == expected["new"]
    verified(cli, store)


# --- an object store (no rename there): the staged objects are copied into place -----------------------------
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "ACTSTORE_S3_CLIENT")


@pytest.fixture
def bucket_store(world, monkeypatch, tmp_path):
    """The world's store copied into a bucket of a local S3 server (moto); its credentials in this process."""
    from s3_server import MotoServer

    from activation_store.store.transfer import copy_store

    server = MotoServer().start()
    try:
        for key in S3_KEYS:
            monkeypatch.delenv(key, raising=False)
        nowhere = tmp_path / "no-aws-config"
        for key, value in {**server.env(), "AWS_CONFIG_FILE": str(nowhere),
                           "AWS_SHARED_CREDENTIALS_FILE": str(nowhere)}.items():
            monkeypatch.setenv(key, value)
        server.client().create_bucket(Bucket="result-faults")
        url = "s3://result-faults/acts.zarr"
        copy_store(str(world[0]), url, destination_options={"endpoint_url": server.endpoint}, progress=False)
        yield url, server.endpoint
    finally:
        server.stop()


def test_a_save_into_a_bucket_killed_while_copying_is_named_then_completed(world, bucket_store, cli, tmp_path):
    """Killed half way through the copy into place: ``verify`` names the interrupted replacement (exit 2); the
    next save completes it. Killed after the copy, before the consolidation: readers read the new result whole."""
    _, model, expected = world
    url, endpoint = bucket_store
    options = {"endpoint_url": endpoint}

    def read() -> dict:
        tree = actstore.open(url, options)
        ds = tree[f"{layout.RESULTS}/{layout.run_path(model, 'pairs')}/{NAME}"].dataset
        return {"variables": {n: (v.dims, np.asarray(v.values).tolist()) for n, v in ds.variables.items()},
                "attrs": dict(ds.attrs)}

    def save(variants, **env) -> subprocess.CompletedProcess:
        return cli(*similarity(url, variants, tmp_path / "out", model), "--endpoint-url", endpoint, env=env)

    assert read() == expected["old"]
    assert save(NEW, **{FAULT_ENV: "copying"}).returncode == -signal.SIGKILL
    report = cli("verify", url, "--endpoint-url", endpoint)
    assert report.returncode == 2 and f"interrupted {layout.results_path(model, 'pairs', NAME)}  (a result " \
        "replacement was killed part way; the next save into this store completes it)" in report.stdout, report.stdout
    assert save(OTHER).returncode == 0             # completes the interrupted copy, then saves its own
    assert read() == expected["other"]
    assert save(NEW, **{FAULT_ENV: "copied"}).returncode == -signal.SIGKILL
    assert read() == expected["new"]               # all copied, not yet consolidated: the new result, whole
    assert save(NEW).returncode == 0 and read() == expected["new"]
    report = cli("verify", url, "--endpoint-url", endpoint)
    assert report.returncode == 0 and report.stdout.startswith("ok: "), (report.stdout, report.stderr)
