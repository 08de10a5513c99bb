"""Two writers, readers during a write, and stale locks.

One extraction per run at a time: a second aimed at the same run is refused with
one line naming the holder; a lock left by a dead process on this host is taken
over; one from another host is not. Readers during a write see whole examples
only, each equal to what the finished run holds."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import actstore
from activation_store.errors import ActstoreError
from activation_store.store.lock import RunLock, lock_key

ENV = {"OMP_NUM_THREADS": "1"}  # see test_crash_resume.py: one torch thread on two shared cores
ITEMS = 400  # of the arithmetic set's 1,123 (three variants each): 10,768 tokens


def extract_args(model_dir: Path, store: Path, dataset: str = "arithmetic") -> list[str]:
    limit = ["--limit", str(ITEMS)] if dataset == "arithmetic" else []
    return ["extract", "--model", str(model_dir), "--dataset", dataset, *limit, "--store", str(store),
            "--chunk-tokens", "64", "--batch-size", "8", "--quiet"]


def tokens_done(group: Path) -> int:
    try:
        return int(json.loads((group / "zarr.json").read_text())["attributes"]["progress"]["tokens_done"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("llama")


def test_second_writer_is_refused_while_the_first_runs(model_dir, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    args = [*extract_args(model_dir, store), "--chunk-tokens", "32"]
    first = cli.start(*args, env=ENV)
    wait_for(lambda: (store / model_dir.name / ".arithmetic.lock").exists() or first.poll() is not None)
    first.send_signal(signal.SIGSTOP)  # held mid-run, lock and all, until the second has had its answer
    try:
        assert first.poll() is None, "the first writer finished before the second got going: inconclusive"
        second = cli(*args, env=ENV)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"is being written by pid {first.pid} on {socket.gethostname()}" in lines[0], lines[0]
    assert f"run {model_dir.name}/arithmetic" in lines[0]
    assert not (store / model_dir.name / ".arithmetic.lock").exists()
    verified = cli("verify", store)
    assert verified.returncode == 0 and "0 bad or missing" in verified.stdout, verified.stdout + verified.stderr
    ds = actstore.open_run(str(store), model_dir.name, "arithmetic")
    assert ds.sizes["example"] == 3 * ITEMS and not np.isnan(ds.hidden.values).any()
    again = cli(*args, env=ENV)
    assert again.returncode == 0 and again.stdout.startswith("already complete"), again.stdout + again.stderr


def test_readers_during_a_write_see_only_whole_examples(model_dir, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    group = store / model_dir.name / "arithmetic"
    writer = cli.start(*extract_args(model_dir, store), env=ENV)
    wait_for(lambda: tokens_done(group) > 0 or writer.poll() is not None)
    snapshots = []
    while writer.poll() is None:
        ds = actstore.open_run(str(store), model_dir.name, "arithmetic")
        snapshots.append((ds.sizes["example"], ds.sizes["token"], ds.hidden.values))
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    final = actstore.open_run(str(store), model_dir.name, "arithmetic")
    ends = (final.token_offset + final.token_count).values
    total = final.sizes["example"]
    partial = [s for s in snapshots if 0 < s[0] < total]
    print(f"\n{len(snapshots)} reads during the write, {len(partial)} of a partly written run: "
          f"{', '.join(str(s[0]) for s in snapshots)} of {total} examples visible")
    assert partial, "no read happened while the run was partly written"
    for examples, tokens, values in snapshots:
        assert tokens == (int(ends[examples - 1]) if examples else 0)  # whole examples, nothing past them
        assert not np.isnan(values).any()  # no unwritten chunk
        assert np.array_equal(values, final.hidden.isel(token=slice(0, tokens)).values)


def write_lock(store: Path, run: str, **holder) -> Path:
    path = store / lock_key(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"since": "2026-01-01T00:00:00+00:00", "token": "old", **holder}))
    return path


def test_stale_lock_of_a_dead_process_is_taken_over(model_dir, parallel_jsonl, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    lock = write_lock(store, f"{model_dir.name}/pairs", host=socket.gethostname(), pid=dead_pid())
    result = cli(*extract_args(model_dir, store, str(parallel_jsonl)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("written:")
    assert not lock.exists()


def test_lock_held_on_another_host_is_refused_and_store_untouched(model_dir, parallel_jsonl, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    assert cli(*extract_args(model_dir, store, str(parallel_jsonl)), "--limit", "2").returncode == 0
    lock = write_lock(store, f"{model_dir.name}/pairs", host="other-host", pid=os.getpid())
    before = tree_hash(store)
    result = cli(*extract_args(model_dir, store, str(parallel_jsonl)), "--overwrite")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "on other-host" in result.stderr and str(lock) in result.stderr
    assert tree_hash(store) == before


def test_lock_on_an_fsspec_url(tmp_path):
    """Behind fsspec the lock is an exclusively created object (memory:// here; S3 uses If-None-Match)."""
    url = "memory://locks/acts.zarr"
    held = RunLock(url, "m/d").acquire()
    with pytest.raises(ActstoreError, match=rf"run m/d is being written by pid {os.getpid()}"):
        RunLock(url, "m/d").acquire()
    RunLock(url, "m/other").acquire().release()  # another run of the same store is free
    held.release()
    again = RunLock(url, "m/d").acquire()
    again.release()
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/locks/acts.zarr/{lock_key('m/d')}",
                 json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "token": "old"}).encode())
    RunLock(url, "m/d").acquire().release()  # a dead holder on this host is taken over
    assert not fs.exists(f"/locks/acts.zarr/{lock_key('m/d')}")


def test_reused_pid_is_not_taken_for_the_holder(tmp_path):
    """A lock whose pid now belongs to another process (a different start time) is stale."""
    store = tmp_path / "acts.zarr"
    write_lock(store, "m/d", host=socket.gethostname(), pid=os.getpid(), process_start="1")
    RunLock(str(store), "m/d").acquire().release()
    write_lock(store, "m/d", host=socket.gethostname(), pid=os.getpid())  # no start recorded: pid alone decides
    with pytest.raises(ActstoreError, match="is being written by"):
        RunLock(str(store), "m/d").acquire()
