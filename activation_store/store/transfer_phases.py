"""The phases of a copy (``transfer.py``): plan from the source, make room at the destination, send, verify,
publish the root last."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ActstoreError, ConfigConflictError
from . import layout, location
from .handle import Store
from .layout import hidden, model_arrays, node_unit, unit_of
from .lock import lock_key
from .objects import TMP_MARK, Listed, md5
from .transfer_side import ROOT, Side, parallel, parse_doc
from .transfer_units import conflicts, consolidated, dumps, resolve_scope, without

if TYPE_CHECKING:
    from .transfer import CopyOptions, TransferResult


@dataclass
class Plan:
    """What phase 1 finds and the later phases share: both ends, the objects and units in scope."""
    src: Side
    dst: Side
    scope: str  # how the summary names what is copied
    src_root: dict[str, Any]
    src_root_bytes: bytes
    src_objects: dict[str, Listed]
    dst_objects: dict[str, Listed]  # phase 2 drops the objects of replaced units
    arrays: set[tuple[str, str]]
    units: set[str]
    model_units: set[str]
    keys: list[str]  # the source objects to copy, sorted
    src_docs: dict[str, dict[str, Any] | None]  # the group metadata of each unit with a group, at the source


def make_plan(source: str, destination: str, model: str | None, dataset: str | None, options: CopyOptions) -> Plan:
    """Phase 1, the source: an actstore store, and the objects in scope; refuses before anything is written."""
    source_options, destination_options, jobs = options.source_options, options.destination_options, options.jobs
    if jobs < 1:
        raise ActstoreError(f"--jobs must be at least 1, got {jobs}")
    model_key, run_key, scope_name = resolve_scope(model, dataset)
    src, dst = Side(source, source_options), Side(destination, destination_options)
    if src.same_place(dst):
        raise ActstoreError(f"{source} and {destination} overlap; copy to a different place")
    src_root_bytes = src.read(ROOT)
    if src_root_bytes is None:
        raise location.missing_store(source, source_options)
    src_root = parse_doc(src_root_bytes, f"{source}/{ROOT}")
    layout.check_format(src_root.get("attributes", {}), source)
    src_listed, dst_listed = src.list(), dst.list()
    src_objects = {k: v for k, v in src_listed.items() if not hidden(k) and TMP_MARK not in k}
    dst_objects = {k: v for k, v in dst_listed.items() if not hidden(k)}
    arrays = model_arrays([*src_objects, *dst_objects])
    for meta in (consolidated(src_root) or {}).items():
        if meta[0].count("/") == 1 and meta[1].get("node_type") == "array":
            arrays.add(tuple(meta[0].split("/")))  # type: ignore[arg-type]
    src_units = {unit_of(k, arrays) for k in src_objects} - {None}
    if model_key is None:
        units = set(src_units)
    elif run_key is None:
        units = {u for u in src_units if u == model_key or u.startswith(model_key + "/")}
    else:
        units = {model_key, run_key}
    if model_key is not None and f"{model_key}/{ROOT}" not in src_objects:
        raise ActstoreError(f"model {model!r} is not in {source}; `actstore ls {source}` lists what is")
    if run_key is not None and f"{run_key}/{ROOT}" not in src_objects:
        raise ActstoreError(f"model {model!r} / dataset {dataset!r} is not in {source}; "
                            f"`actstore ls {source}` lists what is")
    keys = sorted(k for k in src_objects if unit_of(k, arrays) in units)
    for unit in sorted(u for u in units if "/" in u):  # a run being extracted is a moving target
        for side, listed in ((source, src_listed), (destination, dst_listed)):
            if lock_key(unit) in listed:
                name = "/".join(layout.decode_name(p) for p in unit.split("/"))
                raise ActstoreError(f"{side}: run {name} is being written (lock {lock_key(unit)}); wait for the "
                                    f"extraction to finish, or delete that object if none is running")
    model_units = {u for u in units if u and "/" not in u}
    src_docs = src.docs(sorted(u for u in units if u), jobs)
    return Plan(src, dst, scope_name, src_root, src_root_bytes, src_objects, dst_objects, arrays, units,
                 model_units, keys, src_docs)


def make_room(plan: Plan, result: TransferResult, overwrite: bool, jobs: int) -> set[str]:
    """Phase 2, the destination: refuse another store there unless told to replace it; with ``overwrite``,
    hide the units being replaced from readers, then delete them. Returns the replaced units."""
    dst, src_docs, model_units = plan.dst, plan.src_docs, plan.model_units
    dst_root = parse_doc(dst.read(ROOT), f"{dst.url}/{ROOT}")
    dst_docs = dst.docs(list(src_docs), jobs)  # the same units, in the same order
    problems = conflicts(src_docs, dst_docs, model_units)
    if dst_root is not None:
        found = dst_root.get("attributes", {}).get(layout.FORMAT_ATTR)
        if found != layout.FORMAT_VERSION:
            problems.insert(0, "it is not an actstore store" if found is None else f"it has store format {found}")
    if problems and not overwrite:
        raise ConfigConflictError(f"{dst.url} holds a different store: {problems[0]}"
                                  f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                                  f"pass --overwrite to replace it")
    replaced: set[str] = set()
    if not problems:
        return replaced
    dst_units = {unit_of(k, plan.arrays) for k in plan.dst_objects} - {None, ""}
    for unit, doc in dst_docs.items():
        if doc is None or not conflicts({unit: src_docs[unit]}, {unit: doc}, model_units):
            continue
        replaced |= {u for u in dst_units if u == unit.split("/")[0] or u.startswith(unit.split("/")[0] + "/")} \
            if unit in model_units else {unit}
    if dst_root is not None and dst_root.get("attributes", {}).get(layout.FORMAT_ATTR) != layout.FORMAT_VERSION:
        replaced |= dst_units
    if replaced:
        if consolidated(dst_root) is not None:
            dst_root = without(dst_root, replaced)
            dst.write(ROOT, dumps(dst_root))
        doomed = [k for k in plan.dst_objects if unit_of(k, plan.arrays) in replaced]
        dst.remove(doomed)
        for key in doomed:
            plan.dst_objects.pop(key, None)
        result.replaced = sorted("/".join(layout.decode_name(p) for p in u.split("/")) for u in replaced)
    return replaced


def send(plan: Plan, result: TransferResult, options: CopyOptions) -> dict[str, str]:
    """Phase 3, copy: data, then array metadata, then group metadata (deepest first); the root comes last.
    Returns the MD5 of each object sent, by key."""
    from tqdm.auto import tqdm

    jobs, progress, verb, after_object = options.jobs, options.progress, options.verb, options.after_object
    src, dst, src_objects, keys = plan.src, plan.dst, plan.src_objects, plan.keys
    sent: dict[str, str] = {}
    bar = tqdm(total=sum(src_objects[k].size for k in keys), unit="B", unit_scale=True, unit_divisor=1024,
               desc=verb, disable=not progress, dynamic_ncols=True)

    def copy_one(key: str) -> None:
        obj, there = src_objects[key], plan.dst_objects.get(key)
        data = None
        if there is not None and there.size == obj.size:
            src_sum, data = src.md5(key, obj)
            dst_sum, _ = dst.md5(key, there)
            if src_sum is not None and src_sum == dst_sum:
                bar.update(obj.size)
                return
        if data is None:
            data = src.read(key)
        unit = key[: -len(ROOT) - 1] if key.endswith(f"/{ROOT}") else None
        if data is None or len(data) != obj.size or (unit in plan.src_docs and parse_doc(data, key) != plan.src_docs[unit]):
            raise ActstoreError(f"{src.url} changed during the copy ({key}); run the command again")
        digest = md5(data).hexdigest()
        if obj.md5 is not None and digest != obj.md5:  # the source's ETag disagrees: corrupted on the way, or an
            again = src.read(key)                      # ETag that is no MD5 (KMS); a second read tells them apart
            if again is None or md5(again).hexdigest() != digest:
                raise ActstoreError(f"{key} read differently twice from {src.url}; run the command again")
        dst.write(key, data)
        sent[key] = digest
        bar.update(obj.size)
        if after_object is not None:
            after_object(key)

    try:
        data_keys = [k for k in keys if not k.endswith(ROOT)]
        meta_keys = [k for k in keys if k.endswith(ROOT)]
        parallel(copy_one, data_keys, jobs)
        for depth in sorted({k.count("/") for k in meta_keys}, reverse=True):
            parallel(copy_one, [k for k in meta_keys if k.count("/") == depth], jobs)
    finally:
        bar.close()
    result.sent, result.skipped = len(sent), len(keys) - len(sent)
    result.bytes_sent = sum(src_objects[k].size for k in sent)
    return sent


def verify_copy(plan: Plan, result: TransferResult, sent: dict[str, str], jobs: int) -> dict[str, Listed]:
    """Phase 4: verify every object in scope (sizes, and checksums of what was sent), then drop stale objects.
    Returns what the destination now lists."""
    dst, arrays = plan.dst, plan.arrays
    landed = {k: v for k, v in dst.list().items() if not hidden(k)}

    def verify(key: str) -> str | None:
        there = landed.get(key)
        if there is None or there.size != plan.src_objects[key].size:
            return key
        if key in sent and there.md5 != sent[key]:
            data = dst.read(key)  # no MD5 in the listing (local, multipart, KMS): read it back
            if data is None or md5(data).hexdigest() != sent[key]:
                return key
        return None

    bad = sorted(k for k in parallel(verify, plan.keys, jobs) if k)
    if bad:
        raise ActstoreError(f"verification failed for {len(bad)} objects at {dst.url} (e.g. {bad[0]}); "
                            f"run the command again")
    stale = [k for k in landed if k not in plan.src_objects and unit_of(k, arrays) in plan.units and unit_of(k, arrays)]
    dst.remove(stale)
    result.removed = len(stale)
    return landed


def publish(plan: Plan, landed: dict[str, Listed], replaced: set[str],
             destination_options: dict[str, Any] | None) -> None:
    """Phase 5, the root, last: the source's own when the destination holds nothing else, else merged metadata.
    Read again just before writing, so a push of other runs that finished meanwhile is kept (one GET of a window)."""
    dst, units = plan.dst, plan.units
    dst_root = parse_doc(dst.read(ROOT), f"{dst.url}/{ROOT}")
    kept = {unit_of(k, plan.arrays) for k in landed if k.endswith(f"/{ROOT}") and k.count("/") <= 2} - {None, ""} - units
    write_root(plan.src_root, plan.src_root_bytes, dst, destination_options, dst_root, units | replaced, units, kept)


def write_root(src_root: dict[str, Any], src_bytes: bytes, dst: Side, dst_options: dict[str, Any] | None,
                dst_root: dict[str, Any] | None, changed: set[str], copied: set[str], others: set[str]) -> None:
    """Write the destination's root ``zarr.json``: the source's, with the consolidated entries of the copied
    units plus the destination's own entries for the units it keeps; zarr consolidates when entries are missing."""
    src_meta, dst_meta = consolidated(src_root), consolidated(dst_root)
    listed = {node_unit(p, n) for p, n in (dst_meta or {}).items()}
    if src_meta is None or not others <= listed:
        plain = {k: v for k, v in src_root.items() if k != "consolidated_metadata"}
        dst.write(ROOT, dumps(plain))
        Store.open(dst.url, dst_options, mode="r+").consolidate()
        return
    entries = {p: n for p, n in src_meta.items() if node_unit(p, n) in copied}
    entries.update({p: n for p, n in (dst_meta or {}).items()
                    if node_unit(p, n) not in changed and node_unit(p, n) in others and p not in entries})
    doc = {**src_root, "consolidated_metadata": {**src_root["consolidated_metadata"], "metadata": entries}}
    data = src_bytes if doc == src_root else dumps(doc)
    dst.write(ROOT, data)
    if dst.read(ROOT) != data:
        raise ActstoreError(f"verification failed for {dst.url}/{ROOT}; run the command again")
