"""Selective capture, pooled views and statistics, and chunks without padding, on a tiny random Llama.

A layer subset, a ``--positions last`` and a ``--positions mean`` run must hold exactly
the matching slices and (up to float32 rounding) means of a full run of the same data; a
full run's stored views and statistics must equal what the analyses compute from
``hidden`` without them, bit for bit; analyses on a ``last`` run equal those on the full
run. The campaign path (tasks writing chunk ranges, a SIGKILL mid-run and a resume, dask
workers finishing out of order) must give the same numbers. Run with ``-s`` for the bytes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import actstore
from activation_store.analyze.moments import state_moments
from activation_store.analyze.selection import last_tokens, mean_tokens
from activation_store.errors import ActstoreError
from activation_store.extract.estimate import run_chunk_tokens
from activation_store.store import layout, views

OPTS = dict(batch_size=3, chunk_tokens=16, progress=False)  # chunks of 16 tokens: many examples straddle two
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # campaign processes compute with the same threads, so they agree bit for bit
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process runs too: two torch threads fight on two cores


def without_views(ds: xr.Dataset) -> xr.Dataset:
    """The run as an older actstore wrote it: no pooled views, no statistics (analyses fall back to ``hidden``)."""
    out = ds.drop_vars([*layout.VIEWS.values(), *layout.STATS], errors="ignore")
    out.attrs = {k: v for k, v in ds.attrs.items() if k != layout.VIEWS_ATTR}
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    rows = [{"id": f"i{i}", "en": f"The cat {i} sits on the table number {i * 7}.", "zh": f"猫{i}坐在桌子上。",
             "fr": f"Le chat {i} est assis sur la table {i}."} for i in range(8)]
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tiny_model_dir, pairs, tmp_path_factory) -> dict:
    """One store per selection over the same data: full, two layers, last, mean, and two layers × last."""
    model = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("selective")
    selections = {"full": {}, "layers": {"layers": "0,2"}, "last": {"positions": "last"}, "mean": {"positions": "mean"},
                  "range-last": {"layers": "1:4:2", "positions": "last"}}
    out = {"model": model, "root": root}
    with pytest.MonkeyPatch.context() as patch:  # views in chunks of 5 examples (all layers): several per run
        patch.setattr(views, "VIEW_CHUNK_BYTES", 5 * 4 * 32 * 4)
        for name, kw in selections.items():
            store = root / f"{name}.zarr"
            actstore.extract(model=str(model), dataset=str(pairs), store=str(store), **OPTS, **kw)
            out[name] = store
    return out


def open_(runs, name: str) -> xr.Dataset:
    return actstore.open_run(str(runs[name]), runs["model"].name, "pairs")


def test_selective_runs_hold_the_matching_slices_of_a_full_run(runs):
    full, sub, last, mean, ranged = (open_(runs, n) for n in ("full", "layers", "last", "mean", "range-last"))
    reference = without_views(full)
    assert sub.layer.values.tolist() == [0, 2] and sub.attrs["capture"]["layers"] == [0, 2]
    assert sub.final_norm_applied.values.tolist() == full.final_norm_applied.values[[0, 2]].tolist()
    np.testing.assert_array_equal(sub.hidden.values, full.hidden.sel(layer=[0, 2]).values)

    assert last.hidden.dims == ("layer", "example", "d_model") and last.attrs["capture"]["positions"] == "last"
    np.testing.assert_array_equal(last.hidden.values, last_tokens(reference).values)  # the very stored bits
    np.testing.assert_array_equal(ranged.hidden.values, last_tokens(reference).sel(layer=[1, 3]).values)
    assert ranged.layer.values.tolist() == [1, 3]

    assert mean.hidden.dtype == np.float32 and mean.attrs["capture"]["unit"] == "example"
    # means of the same stored states; summed per chunk in the full run, per example here: float32 rounding apart
    np.testing.assert_allclose(mean.hidden.values, mean_tokens(reference).values, rtol=1e-6, atol=1e-7)
    assert "positions" in mean.attrs["config"] and "positions" not in full.attrs["config"]
    assert "layers" in sub.attrs["config"] and "layers" not in full.attrs["config"]
    for ds in (last, mean):  # the per-token coordinates stay, for reading the text back
        assert ds.sizes["token"] == full.sizes["token"] and ds.sizes["example"] == full.sizes["example"]


def test_views_and_statistics_equal_what_analyses_compute_without_them(runs):
    full = open_(runs, "full")
    assert full.attrs["views"]["last"] == "hidden_last"
    assert full.hidden_last.data.chunks[:2] == ((4,), (5, 5, 5, 5, 4))  # every layer of 5 examples per chunk
    reference = without_views(full)
    for pool in (last_tokens, mean_tokens):
        with_views, fallback = pool(full), pool(reference)
        xr.testing.assert_identical(with_views.compute(), fallback.compute())
    stored, computed = state_moments(full), state_moments(reference)
    xr.testing.assert_identical(stored.compute(), computed)
    h = full.hidden.values.astype(np.float64)  # and they are what they say they are
    np.testing.assert_allclose(stored["mean"].values, h.mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stored.second_moment.values, (h * h).mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(stored.abs_max.values, np.abs(h).max(axis=(1, 2)).astype(np.float32))
    assert int(stored.n_states) == full.sizes["token"]
    for name in ("last", "mean", "layers"):  # every run has statistics over what it stores
        ds = open_(runs, name)
        xr.testing.assert_identical(state_moments(ds).compute(), state_moments(without_views(ds)))


def test_analyses_on_a_last_run_equal_those_on_the_full_run(runs):
    full, last, mean = open_(runs, "full"), open_(runs, "last"), open_(runs, "mean")
    for center in (True, False):
        on_full = actstore.analyze.similarity(without_views(full), center=center, n_boot=200)
        xr.testing.assert_identical(actstore.analyze.similarity(last, center=center, n_boot=200), on_full)
        xr.testing.assert_identical(actstore.analyze.similarity(full, center=center, n_boot=200), on_full)
    on_means = actstore.analyze.similarity(mean, pool="mean", n_boot=200)
    xr.testing.assert_allclose(on_means, actstore.analyze.similarity(full, pool="mean", n_boot=200), rtol=1e-5)
    lens = actstore.open_lens(str(runs["mean"]), runs["model"].name)
    with pytest.raises(ActstoreError, match=r"^the logit lens needs every token's states, but this run stores only "
                                            r"each example's mean state \(extracted with --positions mean\)"):
        actstore.analyze.logit_lens(mean, lens)
    with pytest.raises(ActstoreError, match="each example's mean state"):
        actstore.analyze.similarity(mean, pool="last")


def test_bytes_on_disk_of_selective_runs(runs):
    sizes = {name: du(runs[name] / runs["model"].name / "pairs") for name in ("full", "layers", "last", "mean", "range-last")}
    full = open_(runs, "full")
    print("\nbytes on disk of the run group (tiny Llama, 4 layers × d_model 32, "
          f"{full.sizes['token']} tokens, {full.sizes['example']} examples):")
    for name, size in sizes.items():
        print(f"  {name:<11} {size:>9,} B  ({size / sizes['full']:.2f}× the full run)")
    assert sizes["last"] < sizes["full"] / 2 and sizes["layers"] < sizes["full"]


def test_dry_run_accounts_for_the_selection(runs, pairs, tmp_path):
    from activation_store.extract.dry_run import dry_run
    from activation_store.extract.spec import RunSpec

    model = runs["model"]
    plans = {name: dry_run(RunSpec(model=str(model), dataset=str(pairs), store=str(tmp_path / "s.zarr"), device="cpu",
                                   **OPTS, **kw))
             for name, kw in (("full", {}), ("last", {"positions": "last", "layers": "0,2"}))}
    full = zarr.open_group(str(runs["full"]), mode="r")[f"{model.name}/pairs/hidden"]
    assert plans["full"].units == full.shape[1]  # whole chunks on disk: the user's 16 tokens leave an edge
    assert plans["full"].hidden_bytes == 4 * -(-full.shape[1] // 16) * 16 * 32 * 2
    last = plans["last"]
    assert last.units == 24 and last.layers == (0, 2) and last.hidden_bytes == 2 * 32 * 32 * 2 and last.views_bytes == 2 * (32 * 16 + 4)
    summary = last.summary()
    assert "2 of 4 layers (0,2), each example's last token: 24 states per layer" in summary
    assert not (tmp_path / "s.zarr").exists()


def test_edge_chunk_holds_no_padding(tiny_model_dir, tmp_path):
    """hidden's bytes per token within 2% of packed (layers × d_model × 2) at ~12k tokens and at ~100k tokens."""
    # the figure: 12,167 SmolLM2 tokens in chunks of 8,192 stored 16,384 tokens; spread evenly, 12,168
    assert run_chunk_tokens(576, "bfloat16", 12_167) == 6_084
    assert run_chunk_tokens(576, "bfloat16", 200_001) == 8_001  # 25 chunks of ≤ 8,192: 24 tokens of fill in all
    model = tiny_model_dir("llama")
    print()
    for n_rows, words in ((760, 1), (1_600, 5)):
        data = tmp_path / f"words{n_rows}.jsonl"
        data.write_text("".join(json.dumps({"id": str(i), "en": " ".join(["The cat sits on the table."] * words) + f" {i}"})
                                + "\n" for i in range(n_rows)))
        store = tmp_path / f"w{n_rows}.zarr"
        result = actstore.extract(model=str(model), dataset=str(data), store=str(store), batch_size=64, progress=False)
        hidden = store / model.name / data.stem / "hidden"
        on_disk = du(hidden)
        packed = result.tokens * result.layers * 32 * 2
        chunk = zarr.open_array(str(hidden), mode="r").chunks[1]
        print(f"  {result.tokens:>7,} tokens: hidden {on_disk:>10,} B on disk, packed {packed:>10,} B: "
              f"{on_disk / packed:.4f}× (chunks of {chunk:,} tokens)")
        assert on_disk <= 1.02 * packed


def test_a_run_begun_with_other_chunks_resumes_with_them(runs, pairs):
    """A run made under another chunking (an older default, or --chunk-tokens) is not refused for it."""
    result = actstore.extract(model=str(runs["model"]), dataset=str(pairs), store=str(runs["full"]), progress=False,
                              batch_size=3)
    assert result.status == "already complete"


@pytest.mark.timeout(1800)  # four commands and a cluster: slow on a loaded two-core machine
def test_campaign_path_kill_and_resume_give_the_same_numbers(runs, pairs, tmp_path, cli):
    """Chunk-range tasks (in one process, SIGKILLed mid-run and resumed; and on two dask workers, finishing in
    any order) equal one another and the single runs: hidden, views and statistics, full and per-example runs."""
    from distributed import LocalCluster

    from activation_store.extract.campaign import run_campaign
    from activation_store.extract.spec import RunSpec

    other = tmp_path / "more.jsonl"
    shutil.copy(pairs, other)
    model = runs["model"]
    base = ("extract", "--model", model, "--dataset", f"{pairs},{other}", "--batch-size", "3", "--chunk-tokens", "16",
            "--task-batches", "1", "--quiet")
    stores = {}
    # worker threads (not processes): tasks still finish out of order, and closing never times out on a loaded machine
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        for positions, fault in (("all", "5"), ("last", "3")):  # chunks of 16 tokens, or of 16 examples
            killed = tmp_path / f"killed-{positions}.zarr"
            first = cli(*base, "--positions", positions, "--store", killed,
                        env={**ONE_THREAD, "ACTSTORE_FAULT_AFTER_BLOCKS": fault})
            assert first.returncode != 0  # SIGKILLed after writing a chunk, before committing it
            assert cli(*base, "--positions", positions, "--store", killed, env=ONE_THREAD).returncode == 0
            spread = tmp_path / f"workers-{positions}.zarr"
            specs = [RunSpec(model=str(model), dataset=str(other), store=str(spread), positions=positions, **OPTS)]
            run_campaign(specs, scheduler=cluster.scheduler_address, threads_per_worker=1, progress=False,
                         batches_per_task=1)
            stores[positions] = (killed, spread)
    single = {"all": runs["full"], "last": runs["last"]}
    for positions, (killed, spread) in stores.items():
        a, b = (actstore.open_run(str(s), model.name, dataset) for s, dataset in ((killed, "pairs"), (spread, "more")))
        reference = actstore.open_run(str(single[positions]), model.name, "pairs")
        names = ["hidden", *layout.STATS] + (list(layout.VIEWS.values()) if positions == "all" else [])
        for name in names:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{positions}: {name}")
            # the single run computed with this process's torch threads: equal to rounding of the stored dtype
            np.testing.assert_allclose(a[name].values, reference[name].values, rtol=1e-2, atol=1e-3)
        assert a.attrs["views"] == b.attrs["views"] and a.attrs["capture"] == b.attrs["capture"]
        if positions == "all":
            xr.testing.assert_identical(mean_tokens(a).compute(), mean_tokens(without_views(a)).compute())
            xr.testing.assert_identical(state_moments(a).compute(), state_moments(without_views(a)))
