"""Crash safety, measured: SIGKILL a real ``actstore extract`` and resume it, many times.

Every run here is the real command in a process of its own (forked from one that imported the
library once: tests/forked_cli.py) on a tiny random Llama over the first 400 items of the built-in
arithmetic set (1,200 examples, 10,768 tokens, chunks of 64 tokens: 169 blocks). The store a
killed-and-resumed run ends with must equal an uninterrupted run's in every array, decoded and byte
for byte in every chunk file. Kills land before, during and after chunk writes: after random delays,
at random progress points, and through the ACTSTORE_FAULT_AFTER_BLOCKS hook
(the process kills itself between writing a block's chunks and committing it).
Run with ``-s`` to see the figures."""
from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from forked_cli import ForkedCli, Running

import actstore

# torch's two OpenMP threads spin against each other (and the writer thread) on two shared cores,
# which makes a tiny model ~100x slower; one thread keeps every run here a few seconds.
ENV = {"OMP_NUM_THREADS": "1"}
CHUNK = 64
ITEMS, TOKENS = 400, 10_768  # of arithmetic's 1,123 items (three variants each): room for every kill below


def command(model_dir: Path, store: Path) -> list[str]:
    return ["extract", "--model", str(model_dir), "--dataset", "arithmetic", "--limit", str(ITEMS), "--store",
            str(store), "--chunk-tokens", str(CHUNK), "--batch-size", "8", "--quiet"]


def start(cli: ForkedCli, model_dir: Path, store: Path, **env: str) -> Running:
    return cli.start(*command(model_dir, store), env={**ENV, **env})


def finish(proc: Running, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_group(store: Path, model_dir: Path) -> Path:
    return store / model_dir.name / "arithmetic"


def progress(store: Path, model_dir: Path) -> dict | None:
    """The committed progress of the run, straight from its zarr.json (None before the run exists)."""
    try:
        attrs = json.loads((run_group(store, model_dir) / "zarr.json").read_text())["attributes"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return attrs.get("progress") if "config_hash" in attrs else None


def tokens_done(store: Path, model_dir: Path) -> int:
    return int((progress(store, model_dir) or {}).get("tokens_done", 0))


def wait_for(condition, timeout: float = 120, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(every)


def decoded_arrays(store: Path, model_dir: Path) -> dict[str, np.ndarray]:
    """Every array of the model's group (lens head and run), read through Zarr with checksums verified."""
    out = {}

    def walk(group: zarr.Group) -> None:
        for name, node in group.members():
            if isinstance(node, zarr.Array):
                out[node.path] = node[...]
            else:
                walk(node)

    walk(zarr.open_group(str(store / model_dir.name), mode="r", use_consolidated=False))
    return out


def stored_files(store: Path, model_dir: Path) -> dict[str, bytes]:
    """Every file of the model's group but the two group zarr.json (their attrs hold times) and lock files.

    A model-group-level ``*.partial`` (a kill while its attrs were written) is left out too: it sits beside,
    not inside, the run; inside the run group a resumed run must leave none."""
    base = store / model_dir.name
    files = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if path.is_dir() or path.name.startswith(".") or rel in ("zarr.json", "arithmetic/zarr.json"):
            continue
        if path.parent == base and path.name.endswith(".partial"):
            continue
        files[rel] = path.read_bytes()
    return files


def committed_chunks(store: Path, model_dir: Path, done: int) -> dict[str, bytes]:
    hidden = run_group(store, model_dir) / "hidden" / "c"
    blocks = done // CHUNK + (1 if done % CHUNK else 0)
    out = {}
    for layer in sorted(os.listdir(hidden)) if hidden.exists() else []:
        for block in range(blocks):
            path = hidden / layer / str(block) / "0"
            out[f"{layer}/{block}"] = path.read_bytes() if path.exists() else b"<missing>"
    return out


def assert_identical(store: Path, reference: Path, model_dir: Path) -> None:
    got, want = decoded_arrays(store, model_dir), decoded_arrays(reference, model_dir)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), f"array {name} differs"
    got_files, want_files = stored_files(store, model_dir), stored_files(reference, model_dir)
    assert sorted(got_files) == sorted(want_files), set(got_files) ^ set(want_files)
    differing = [name for name in want_files if got_files[name] != want_files[name]]
    assert not differing, f"{len(differing)} files differ, e.g. {differing[:3]}"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir("llama")


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory, _forked_cli) -> Path:
    """An uninterrupted run: the store every killed-and-resumed run must end up equal to."""
    store = tmp_path_factory.mktemp("reference") / "acts.zarr"
    code, out, err = finish(start(_forked_cli, model_dir, store))
    assert code == 0, err
    assert out.startswith("written:") and f"{3 * ITEMS} examples" in out
    return store


def test_reference_is_complete_and_verifies(reference, model_dir, cli):
    assert progress(reference, model_dir) == {"tokens_done": TOKENS, "complete": True}
    result = cli("verify", reference, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "0 bad or missing" in result.stdout


def test_kill_mid_run_and_resume_equals_uninterrupted(reference, model_dir, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    total = progress(reference, model_dir)["tokens_done"]
    proc = start(cli, model_dir, store)
    wait_for(lambda: tokens_done(store, model_dir) >= total // 3 or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = tokens_done(store, model_dir)
    assert proc.returncode == -signal.SIGKILL and 0 < done < total, (proc.returncode, done)
    assert (store / model_dir.name / ".arithmetic.lock").exists()  # the dead writer's lock, taken over next

    code, out, err = finish(start(cli, model_dir, store))
    assert code == 0, err
    assert out.startswith("resumed:"), out
    assert f"wrote {total - done:,} tokens" in out  # nothing committed was written twice
    assert not (store / model_dir.name / ".arithmetic.lock").exists()
    assert_identical(store, reference, model_dir)
    print(f"\nkill at {done:,} of {total:,} tokens, resumed: identical to the uninterrupted run")


def _visible_examples_match(store: Path, reference_ds, done: int) -> bool:
    """What a reader sees of a killed run: whole examples only, each equal to the uninterrupted run's."""
    ds = actstore.open_run(str(store), reference_ds.attrs["config"]["model"], "arithmetic")
    n = ds.sizes["example"]
    ends = (reference_ds.token_offset + reference_ds.token_count).values
    assert n == int(np.searchsorted(ends, done, side="right"))
    tokens = int(ends[n - 1]) if n else 0
    assert ds.sizes["token"] == tokens
    return bool(np.array_equal(ds.hidden.values, reference_ds.hidden.isel(token=slice(0, tokens)).values))


def test_fault_injection_many_kills_then_identical(reference, model_dir, tmp_path, cli):
    seed = int(os.environ.get("ACTSTORE_TEST_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    store = tmp_path / "acts.zarr"
    total = progress(reference, model_dir)["tokens_done"]
    reference_ds = actstore.open_run(str(reference), model_dir.name, "arithmetic")
    # one kill or more in each phase: before any new chunk (startup, model load, run creation: a random
    # delay, cut short by the run's next commit), mid-write at random points, and between a block's chunks
    # and its commit (the hook); one hook kill also gets a torn chunk and a stray temporary file planted
    # past the committed point, as a non-atomic store or a kill mid-write would leave
    plan = ["delay"] * 2 + ["progress"] * 3 + ["hook"] + ["torn"]
    rng.shuffle(plan)
    tried = resumed = identical = visible_ok = 0
    log = []
    for mode in plan:
        before = tokens_done(store, model_dir)
        remaining_blocks = (total - before) // CHUNK
        env = {}
        if mode in ("hook", "torn"):
            env["ACTSTORE_FAULT_AFTER_BLOCKS"] = str(rng.randint(1, max(1, min(25, remaining_blocks - 1))))
        proc = start(cli, model_dir, store, **env)
        if mode == "delay":
            deadline = time.monotonic() + rng.uniform(0.05, 1.5)
            while time.monotonic() < deadline and tokens_done(store, model_dir) == before and proc.poll() is None:
                time.sleep(0.01)
        elif mode == "progress":
            target = before + rng.randint(1, max(1, (total - before) // 4))
            wait_for(lambda: tokens_done(store, model_dir) >= target or proc.poll() is not None)
            time.sleep(rng.uniform(0, 0.05))
        if mode in ("delay", "progress"):
            proc.send_signal(signal.SIGKILL)
        code, out, err = finish(proc)
        after = tokens_done(store, model_dir)
        if code == 0:  # finished before the kill landed: not a kill
            log.append(f"{mode}: finished first")
            break
        assert code == -signal.SIGKILL, f"{mode}: exit {code}: {err}"
        tried += 1
        # the run picked up where the last one stopped (never went back, never failed), and all it committed
        # is exactly what the uninterrupted run has
        if after >= before and "error" not in err:
            resumed += 1
        if committed_chunks(store, model_dir, after) == committed_chunks(reference, model_dir, after):
            identical += 1
        if after and _visible_examples_match(store, reference_ds, after):
            visible_ok += 1
        elif not after:
            visible_ok += 1  # nothing committed: nothing to see
        partials = list(run_group(store, model_dir).rglob("*.partial")) if run_group(store, model_dir).exists() else []
        if mode == "torn" and after < total:
            block = after // CHUNK
            torn = run_group(store, model_dir) / "hidden" / "c" / "0" / str(block) / "0"
            torn.parent.mkdir(parents=True, exist_ok=True)
            torn.write_bytes(b"\x00" * 100)  # half a chunk, past the committed point
            (torn.parent / "0.deadbeef.partial").write_bytes(b"junk")
        log.append(f"{mode}{'(' + env['ACTSTORE_FAULT_AFTER_BLOCKS'] + ')' if env else ''}: "
                   f"{before:,} -> {after:,} tokens, {len(partials)} partial files left")

    code, out, err = finish(start(cli, model_dir, store))
    assert code == 0, err
    assert out.startswith(("resumed:", "written:")), out
    assert_identical(store, reference, model_dir)
    print(f"\nseed {seed}: " + "; ".join(log))
    print(f"kills tried {tried} / resumed {resumed} / identical {identical} "
          f"(readers saw only whole, correct examples after {visible_ok}); final store identical: yes")
    assert tried == len(plan)
    assert resumed == identical == visible_ok == tried


def test_group_killed_while_being_created_is_made_afresh(model_dir, parallel_jsonl, tmp_path):
    """A kill between creating a run group and setting its attrs leaves a group with no config: not a run."""
    store = str(tmp_path / "acts.zarr")
    first = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, chunk_tokens=16,
                             progress=False)
    group = zarr.open_group(store, mode="r+", path=f"{model_dir.name}/pairs", use_consolidated=False)
    group.attrs.put({})  # what create_run leaves when killed before its last step
    again = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=store, chunk_tokens=16,
                             progress=False)
    assert (first.status, again.status) == ("written", "written")
    assert actstore.open_run(store, model_dir.name, "pairs").sizes["example"] == 15


def test_complete_run_missing_from_consolidated_metadata_is_repaired(model_dir, parallel_jsonl, tmp_path):
    """Killed after its last block but before the final consolidation: the next run only re-consolidates."""
    store = tmp_path / "acts.zarr"
    actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=str(store), progress=False)
    root_meta = json.loads((store / "zarr.json").read_text())
    root_meta.pop("consolidated_metadata", None)
    (store / "zarr.json").write_text(json.dumps(root_meta))
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and p.name != "zarr.json"}
    result = actstore.extract(model=str(model_dir), dataset=str(parallel_jsonl), store=str(store), progress=False)
    assert result.status == "already complete" and result.tokens_written == 0
    assert "consolidated_metadata" in json.loads((store / "zarr.json").read_text())
    assert before == {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and p.name != "zarr.json"}


def test_kills_with_several_blocks_in_flight_resume_identical(reference, model_dir, tmp_path, cli):
    """The writer keeps blocks in flight: at each kill (before a block's commit) later blocks' chunks are already
    on disk, uncommitted. The resume rewrites them; the store ends identical."""
    store = tmp_path / "acts.zarr"
    ahead = []
    for kill_at in (3, 9, 20):
        code, _, _ = finish(start(cli, model_dir, store, ACTSTORE_FAULT_AFTER_BLOCKS=str(kill_at)))
        assert code == -signal.SIGKILL
        done = tokens_done(store, model_dir)
        hidden = run_group(store, model_dir) / "hidden" / "c" / "0"
        written = {int(p.name) for p in hidden.iterdir() if p.name.isdigit()} if hidden.exists() else set()
        ahead.append(len([b for b in written if b * CHUNK >= done]))
    assert max(ahead) >= 1, ahead  # chunks beyond the committed prefix: more than one block was in flight
    code, out, err = finish(start(cli, model_dir, store))
    assert code == 0 and out.startswith("resumed:"), err
    assert_identical(store, reference, model_dir)
    print(f"\nuncommitted blocks already written at each kill: {ahead}")


def test_disk_full_fails_in_one_line_and_resumes_identical(reference, model_dir, tmp_path, cli):
    """ENOSPC mid-run on a real small tmpfs: one line that says what to do, exit 2; with space back, the same
    command resumes and the store equals an uninterrupted run's."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=2m tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        store = mount / "acts.zarr"
        code, out, err = finish(start(cli, model_dir, store))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, err
        assert len(lines) == 1 and "no space left" in lines[0] and "run the same command again" in lines[0], err
        done = tokens_done(store, model_dir)
        assert 0 < done < TOKENS
        assert os.system(f"mount -o remount,size=64m {mount}") == 0
        code, out, err = finish(start(cli, model_dir, store))
        assert code == 0 and out.startswith("resumed:"), err
        assert_identical(store, reference, model_dir)
        print(f"\ndisk full at {done:,} of {TOKENS:,} tokens: {lines[0]}")
    finally:
        os.system(f"umount {mount}")
