"""Option records: a run's five option groups, the store location that flows down, the loader's buffer plan."""
from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from activation_store.errors import ActstoreError
from activation_store.extract.spec import OPTIONS, Location, Placement, RunSpec, Source


def test_flat_keywords_and_groups_build_the_same_spec():
    flat = RunSpec("m", "d", "s.zarr", limit=3, device="cpu", batch_size=8, storage_options={"anon": True})
    grouped = RunSpec(source=Source("m", "d", limit=3), compute=Placement(device="cpu", batch_size=8),
                      location=Location("s.zarr", {"anon": True}))
    assert flat == grouped
    assert (flat.model, flat.store, flat.limit, flat.batch_size, flat.storage_options) == \
        ("m", "s.zarr", 3, 8, {"anon": True})
    assert flat.location == Location("s.zarr", {"anon": True})
    assert pickle.loads(pickle.dumps(flat)) == flat


def test_flat_keywords_override_a_group_and_replace_takes_either():
    spec = RunSpec(compute=Placement(device="cpu", batch_size=4), batch_size=2)
    assert spec.compute == Placement(device="cpu", batch_size=2)
    moved = replace(spec, store="elsewhere.zarr", overwrite=True)
    assert moved.store == "elsewhere.zarr" and moved.overwrite and moved.batch_size == 2
    assert replace(spec, compute=Placement(device="cpu")).batch_size == 16


def test_every_extract_keyword_is_an_option():
    import inspect

    from activation_store.extract.run import extract

    assert set(OPTIONS) >= {"model", "dataset", "store", "variants", "limit", "bos", "suffixes", "templates", "dtype",
                            "batch_size", "chunk_tokens", "trust_remote_code", "storage_options", "columns",
                            "id_column", "device", "compute_dtype", "device_map", "max_memory", "layers",
                            "positions", "compression"}
    assert list(inspect.signature(extract).parameters)[:3] == ["model", "dataset", "store"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'limits'"):
        RunSpec(limits=3)
    with pytest.raises(TypeError, match="multiple values"):
        RunSpec("m", model="n")


def test_location_opens_checks_and_pickles(tmp_path):
    from activation_store.extract import campaign
    from activation_store.store.address import check_writable

    where = Location(str(tmp_path / "s.zarr"), {})
    assert where.storage_options is None and where == Location(str(tmp_path / "s.zarr"))
    assert pickle.loads(pickle.dumps(where)) == where
    assert not where.exists()
    store = where.open("a")
    assert where.exists() and store.url == where.url and store.writable
    assert campaign.check_writable is check_writable  # the old name still imports
    (tmp_path / "file").write_text("x")
    with pytest.raises(ActstoreError, match="exists and is not an actstore store"):
        Location(str(tmp_path / "file")).check_writable()


def test_version_has_its_own_module():
    import activation_store
    from activation_store.version import __version__

    assert activation_store.__version__ == __version__


def test_buffer_plan_sizes_are_derived():
    from activation_store.torch.loader import BufferPlan, Reading, Selection

    plan = BufferPlan(batch_size=8, read_ahead=2, buffer_tokens=100, budget=None, d_model=4, chunk_tokens=16,
                      stored_itemsize=2, out_itemsize=4, largest=16, all_in_place=True)
    assert plan.capacity == 100 and plan.scratch_blocks == 0 and plan.need == 24
    assert plan.ring_rows == 2 * 100 + 4 * 16
    assert plan.buffer_bytes == plan.ring_rows * plan.ring_row + 100 * 18 + plan.out
    assert replace(plan, all_in_place=False).scratch_blocks == 2
    with pytest.raises(ActstoreError, match="buffer_tokens 10 is too small"):
        replace(plan, buffer_tokens=10)
    with pytest.raises(ActstoreError, match="batch_size must be at least 1"):
        Reading(batch_size=0)
    assert Reading(dtype="bfloat16").batch_dtype is not Reading().batch_dtype
    assert Selection(layers=[1]) == Selection([1])
