"""How ``hidden`` should be laid out in objects: one object per chunk, Zarr sharding, or Icechunk.

Writes one run of synthetic bfloat16 states (default 100,000 tokens × 9 layers × 64) through the write
path extraction uses (``create_run``, ``write_chunks`` block by block, the campaign's commit record after
every task of ``--task-blocks`` blocks), then reads it back whole and one layer at a time, for:

- ``chunks``: one object per layer × token block (today's default);
- ``shards``: Zarr's sharding codec, one object per token block holding every layer's chunk
  (the unit a task owns; a plain zarr reader still opens it);
- ``icechunk``: the same chunks in an Icechunk repository, one Icechunk commit per task in place of our
  record (only if ``icechunk`` is installed; it is not a dependency);

each on local disk and against the S3 test server (tests/s3_server.py, moto in a subprocess). Prints
objects written, write and read throughput (medians of ``--repeats``) and each ratio to ``chunks`` on the
same target, all measured in this one run. Then two checks that are not timings: whether a plain
``zarr.open_group`` reads each layout, and what a writer killed between writing and committing leaves.

    python benchmarks/store_layout.py [--tokens 100000] [--repeats 3] [--targets local,s3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3 server helper

import zarr  # noqa: E402

from activation_store.store import commits  # noqa: E402
from activation_store.store.handle import Store  # noqa: E402
from activation_store.store.location import filesystem  # noqa: E402
from activation_store.store.write import PROGRESS_ATTR, NewRun, create_run, write_chunks  # noqa: E402

PATH = "model/data"


def states(layers: int, tokens: int, d_model: int, seed: int = 0) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of normal activations, as ``encode`` makes them."""
    import torch

    from activation_store.store.precision import encode

    generator = torch.Generator().manual_seed(seed)
    return encode(torch.randn(layers, tokens, d_model, generator=generator), "bfloat16")


def make_run(store: Store, args, shard: bool):
    n = args.tokens
    token_coords = {"token_id": np.zeros(n, np.int32), "token_example": np.repeat(np.arange(n // 100 + 1), 100)[:n],
                    "position": np.tile(np.arange(100), n // 100 + 1)[:n].astype(np.int32)}
    examples = n // 100 + 1
    example_coords = {"item": np.array([f"i{i}" for i in range(examples)]), "variant": np.array(["en"] * examples),
                      "token_offset": np.arange(examples) * 100, "token_count": np.full(examples, 100)}
    return create_run(store, PATH, NewRun(
        n_layers=args.layers, d_model=args.d_model, dtype="bfloat16",
        chunk_tokens=args.chunk_tokens, token_coords=token_coords, example_coords=example_coords,
        final_norm_applied=np.zeros(args.layers, bool), attrs={"config_hash": "bench"}, shard=shard))


def fill(hidden, group, data: np.ndarray, args, commit) -> None:
    """Write every block in order, committing after each task of ``task_blocks`` blocks."""
    chunk, n = args.chunk_tokens, args.tokens
    total = commits.n_chunks(n, chunk)
    done: commits.Ranges = []
    for task_start in range(0, total, args.task_blocks):
        task_stop = min(total, task_start + args.task_blocks)
        for block in range(task_start, task_stop):
            write_chunks(hidden, block * chunk, data[:, block * chunk:min(n, (block + 1) * chunk)])
        done = commits.merge([*done, (task_start, task_stop)])
        commit(group, commits.record(done, n, chunk))


def plain(url: str, options, args, data, shard: bool) -> tuple[float, float, float]:
    """Write then read a run through zarr-python on ``url``: (write s, read-all s, read-one-layer s)."""
    store = Store.open(url, options, mode="a")
    started = time.perf_counter()
    writer = make_run(store, args, shard)
    fill(writer.hidden, writer.group, data, args, lambda group, record: group.attrs.update({PROGRESS_ATTR: record}))
    store.consolidate()
    written = time.perf_counter() - started
    return (written, *read(zarr.open_group(Store.open(url, options).zarr_store, mode="r")[PATH]["hidden"], args))


def read(hidden, args) -> tuple[float, float]:
    started = time.perf_counter()
    whole = hidden[...]
    read_all = time.perf_counter() - started
    started = time.perf_counter()
    layer = hidden[args.layers // 2]
    read_layer = time.perf_counter() - started
    assert whole.shape == (args.layers, args.tokens, args.d_model) and layer.shape == (args.tokens, args.d_model)
    return read_all, read_layer


def icechunk_storage(target: str, where: str, server):
    import icechunk

    if target == "local":
        return icechunk.local_filesystem_storage(where)
    return icechunk.s3_storage(bucket="layout", prefix=where, endpoint_url=server.endpoint, allow_http=True,
                               region="us-east-1", access_key_id=server.key_id, secret_access_key=server.secret,
                               force_path_style=True)


def ice(target: str, where: str, server, args, data) -> tuple[float, float, float]:
    """The same run in an Icechunk repository: one commit per task instead of our record."""
    import icechunk

    repo = icechunk.Repository.create(icechunk_storage(target, where, server))
    started = time.perf_counter()
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="a")
    make_run(Store(where, None, session.store, root, "a"), args, shard=False)
    session.commit("create the run")
    chunk, n = args.chunk_tokens, args.tokens
    total = commits.n_chunks(n, chunk)
    for task_start in range(0, total, args.task_blocks):
        session = repo.writable_session("main")
        hidden = zarr.open_array(session.store, path=f"{PATH}/hidden", mode="r+")
        for block in range(task_start, min(total, task_start + args.task_blocks)):
            write_chunks(hidden, block * chunk, data[:, block * chunk:min(n, (block + 1) * chunk)])
        session.commit(f"blocks {task_start}:{min(total, task_start + args.task_blocks)}")
    written = time.perf_counter() - started
    reader = repo.readonly_session(branch="main")
    return (written, *read(zarr.open_array(reader.store, path=f"{PATH}/hidden", mode="r"), args))


def count_objects(url: str, options) -> int:
    fs, root = filesystem(url, options)
    fs.invalidate_cache()
    return len(fs.find(root))


def median(values):
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--task-blocks", type=int, default=8, help="blocks a task writes before it is committed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--targets", default="local,s3")
    parser.add_argument("--layouts", default="chunks,shards,icechunk")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    try:
        import icechunk  # noqa: F401
    except ImportError:
        layouts = [lay for lay in layouts if lay != "icechunk"]
        print("icechunk is not installed: measuring chunks and shards only")
    data = states(args.layers, args.tokens, args.d_model)
    mb = data.nbytes / 1e6
    print(f"{args.tokens:,} tokens x {args.layers} layers x {args.d_model} (bfloat16) = {mb:,.1f} MB; chunks of "
          f"{args.chunk_tokens} tokens ({args.chunk_tokens * args.d_model * 2 / 1e3:,.0f} kB per layer chunk), "
          f"commit every {args.task_blocks} blocks; medians of {args.repeats}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    server = None
    tmp = tempfile.mkdtemp(prefix="actstore-layout-")
    results: dict[tuple[str, str], tuple[int, float, float, float]] = {}
    try:
        for target in args.targets.split(","):
            if target == "s3" and server is None:
                from s3_server import MotoServer

                server = MotoServer().start()
                os.environ.update(server.env())
                server.client().create_bucket(Bucket="layout")
            for layout_name in layouts:
                timings = []
                for repeat in range(args.repeats):
                    name = f"{layout_name}-{repeat}"
                    if target == "local":
                        url, options = f"{tmp}/{name}.zarr", None
                    else:
                        url, options = f"s3://layout/{name}.zarr", {"endpoint_url": server.endpoint}
                    if layout_name == "icechunk":
                        where = url if target == "local" else f"{name}.icechunk"
                        timings.append(ice(target, where, server, args, data))
                        url = url if target == "local" else f"s3://layout/{where}"
                    else:
                        timings.append(plain(url, options, args, data, shard=layout_name == "shards"))
                    objects = count_objects(url, options)
                    if repeat < args.repeats - 1:  # keep the last for the reader checks
                        fs, root = filesystem(url, options)
                        fs.rm(root, recursive=True)
                write, read_all, read_layer = (median(t[i] for t in timings) for i in range(3))
                results[(target, layout_name)] = (objects, write, read_all, read_layer)
        print(f"\n{'target':7} {'layout':9} {'objects':>8} {'write MB/s':>11} {'read all MB/s':>14} "
              f"{'read 1 layer MB/s':>18}   ratios to chunks (write, read all, read layer)")
        for (target, layout_name), (objects, write, read_all, read_layer) in results.items():
            base = results.get((target, "chunks"))
            ratio = "" if base is None else (f"{base[1] / write:.2f}x, {base[2] / read_all:.2f}x, "
                                             f"{base[3] / read_layer:.2f}x; objects {objects / base[0]:.2f}x")
            print(f"{target:7} {layout_name:9} {objects:>8,} {mb / write:>11,.1f} {mb / read_all:>14,.1f} "
                  f"{mb / args.layers / read_layer:>18,.1f}   {ratio}")
        readers_and_crashes(tmp, layouts, args, data)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def readers_and_crashes(tmp: str, layouts: list[str], args, data) -> None:
    """Not timings: can plain zarr open each layout, and what does a writer killed before its commit leave?"""
    print()
    for layout_name in layouts:
        where = f"{tmp}/{layout_name}-{args.repeats - 1}.zarr"
        try:
            hidden = zarr.open_group(where, mode="r")[PATH]["hidden"]
            ok = np.array_equal(hidden[0, :10], data[0, :10])
            print(f"plain zarr.open_group on {layout_name}: {'reads the states' if ok else 'WRONG VALUES'}")
        except Exception as exc:  # noqa: BLE001 - the point is which error a plain reader gets
            print(f"plain zarr.open_group on {layout_name}: fails ({type(exc).__name__}: {str(exc).splitlines()[0][:90]})")
    # a task that wrote its blocks and died before its commit
    small = argparse.Namespace(**{**vars(args), "tokens": 8 * args.chunk_tokens, "task_blocks": 4})
    part = states(args.layers, small.tokens, args.d_model, seed=1)
    url = f"{tmp}/crash.zarr"
    store = Store.open(url, mode="a")
    writer = make_run(store, small, shard=False)
    for block in range(4):
        write_chunks(writer.hidden, block * args.chunk_tokens, part[:, block * args.chunk_tokens:(block + 1) * args.chunk_tokens])
    writer.group.attrs[PROGRESS_ATTR] = commits.record([(0, 4)], small.tokens, args.chunk_tokens)
    for block in range(4, 6):  # written, never committed: the writer is "killed" here
        write_chunks(writer.hidden, block * args.chunk_tokens, part[:, block * args.chunk_tokens:(block + 1) * args.chunk_tokens])
    progress = zarr.open_group(url, mode="r")[PATH].attrs[PROGRESS_ATTR]
    print(f"zarr + commit record, writer killed after 2 uncommitted blocks: record {progress}; readers see "
          f"{progress['tokens_done']:,} tokens; the 2 blocks' {2 * args.layers} objects stay until a rerun rewrites them")
    if "icechunk" in layouts:
        import icechunk

        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(f"{tmp}/crash.icechunk"))
        session = repo.writable_session("main")
        make_run(Store("crash", None, session.store, zarr.open_group(session.store, mode="a"), "a"), small, shard=False)
        session.commit("create")
        session = repo.writable_session("main")
        hidden = zarr.open_array(session.store, path=f"{PATH}/hidden", mode="r+")
        for block in range(4):
            write_chunks(hidden, block * args.chunk_tokens, part[:, block * args.chunk_tokens:(block + 1) * args.chunk_tokens])
        session.commit("4 blocks")
        chunk_files = Path(f"{tmp}/crash.icechunk/chunks")
        before = sum(1 for f in chunk_files.rglob("*") if f.is_file())
        session = repo.writable_session("main")
        hidden = zarr.open_array(session.store, path=f"{PATH}/hidden", mode="r+")
        for block in range(4, 6):
            write_chunks(hidden, block * args.chunk_tokens, part[:, block * args.chunk_tokens:(block + 1) * args.chunk_tokens])
        del session, hidden  # killed before its commit
        reader = zarr.open_array(repo.readonly_session(branch="main").store, path=f"{PATH}/hidden", mode="r")
        seen = reader[0, :, 0]
        committed_tokens = int(np.flatnonzero(seen != 0x7FC0).max() + 1) if (seen != 0x7FC0).any() else 0
        after = sum(1 for f in chunk_files.rglob("*") if f.is_file())
        print(f"icechunk, writer killed after 2 uncommitted blocks: the branch shows {committed_tokens:,} tokens "
              f"(the last commit); chunk objects {before} -> {after}: {after - before} unreferenced until "
              f"repo.garbage_collect")


if __name__ == "__main__":
    main()
