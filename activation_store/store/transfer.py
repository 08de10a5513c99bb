"""Copying a store, or one model or run of it, between any two fsspec URLs (``actstore push`` / ``pull``).

Safe to interrupt and to repeat. An object already at the destination with the
same size and MD5 is skipped, so running the command again resumes it. MD5
because S3 reports it as the ETag of a single-part upload: checking the remote
side costs one listing per 1000 objects, not a download. Objects are uploaded in
one PUT each (``objects.py``: through obstore on ``s3://``, ``jobs`` PUTs in
flight; with Content-MD5 behind s3fs), so the listing's ETag proves what
arrived. Where no MD5 comes cheaply (multipart or KMS ETags, other filesystems,
local files) the object is read back and hashed.

Order makes a half-copied store invisible: chunk data first, then array and
group metadata, then, once every object is verified, the root ``zarr.json``
with the consolidated metadata that readers open. A store copied for the first
time has no root until the end. An existing one keeps presenting its old,
consistent content until then.

Units of a store (layout: ``/<model>`` holds the lens head, ``/<model>/<dataset>``
one run) are what a copy replaces. Each copied unit ends identical to the source,
and stale objects are removed from it. Other runs already at the destination are
kept and stay listed in the merged consolidated metadata. A unit at the
destination that belongs to a different store (another ``model_checksum`` or
``config_hash``, or more of the same run) is refused unless ``overwrite``.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NoReturn

from ..errors import ActstoreError, ConfigConflictError
from . import layout, location
from .handle import Store
from .lock import lock_key
from .objects import TMP_MARK, Listed, md5, objects_at

ROOT = "zarr.json"


class _Side:
    """One end of a copy: listing, reading, writing and removing objects by key relative to the store root, with
    storage failures as one-line errors."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None):
        self.url = str(url)
        self.local = not location.is_remote(self.url)
        try:
            self.objects = objects_at(self.url, storage_options)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def same_place(self, other: _Side) -> bool:
        (service, root), (other_service, other_root) = self.objects.place, other.objects.place
        if service != other_service:  # another filesystem, or the same kind with another endpoint
            return False
        a, b = root.rstrip("/") + "/", other_root.rstrip("/") + "/"
        return a.startswith(b) or b.startswith(a)

    def _fail(self, exc: Exception) -> NoReturn:
        error = location.remote_error(exc, self.url)
        if error is not None:
            raise error from None
        if isinstance(exc, OSError) and self.local:
            raise ActstoreError(f"cannot use {self.url}: {exc.strerror or exc}") from None
        raise exc

    def list(self) -> dict[str, Listed]:
        try:
            return self.objects.list()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it is not there."""
        try:
            return self.objects.read(key)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def docs(self, units: list[str], jobs: int) -> dict[str, dict[str, Any] | None]:
        """The group metadata (``<unit>/zarr.json``) of each unit, None where absent; read concurrently."""
        found = dict(_parallel(lambda unit: (unit, self.read(f"{unit}/{ROOT}")), units, jobs))
        return {unit: _doc(found[unit], f"{self.url}/{unit}/{ROOT}") for unit in units}

    def write(self, key: str, data: bytes) -> None:
        """Write one whole object (never seen half-written)."""
        try:
            self.objects.write(key, data)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def remove(self, keys: list[str]) -> None:
        try:
            self.objects.remove(keys)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def md5(self, key: str, obj: Listed) -> tuple[str | None, bytes | None]:
        """The object's MD5: from the listing when it is there, else by reading it (the bytes come back too)."""
        if obj.md5 is not None:
            return obj.md5, None
        data = self.read(key)
        return (md5(data).hexdigest(), data) if data is not None else (None, None)


# --- units of a store -------------------------------------------------------------------------------------------

def _hidden(key: str) -> bool:
    """Objects that are no part of a store's content: run locks and other dot-files, interrupted writes."""
    return key.endswith(".partial") or any(part.startswith(".") for part in key.split("/"))


def _model_arrays(keys: Iterable[str]) -> set[tuple[str, str]]:
    """(model, child) pairs that are arrays of a model group: a ``zarr.json`` with no node below it."""
    with_meta, nested = set(), set()
    for key in keys:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == ROOT:
            with_meta.add((parts[0], parts[1]))
        elif len(parts) >= 4 and parts[-1] == ROOT:
            nested.add((parts[0], parts[1]))
    return with_meta - nested


def _unit(key: str, arrays: set[tuple[str, str]]) -> str | None:
    """The unit an object key belongs to: ``<model>`` (lens head), ``<model>/<dataset>`` (a run), ``""`` (other
    top-level objects) or None (the root ``zarr.json``)."""
    parts = key.split("/")
    if len(parts) == 1:
        return None if key == ROOT else ""
    if parts[1] == ROOT or (parts[0], parts[1]) in arrays:
        return parts[0]
    return f"{parts[0]}/{parts[1]}"


def _node_unit(path: str, node: dict[str, Any]) -> str:
    """The unit of a consolidated-metadata entry (a node path such as ``model/unembedding``)."""
    parts = path.split("/")
    if len(parts) == 1 or (len(parts) == 2 and node.get("node_type") == "array"):
        return parts[0]
    return f"{parts[0]}/{parts[1]}"


def _doc(data: bytes | None, where: str) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        raise ActstoreError(f"{where} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ActstoreError(f"{where} is not Zarr metadata")
    return doc


def _consolidated(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    meta = (doc or {}).get("consolidated_metadata")
    return meta.get("metadata") if isinstance(meta, dict) and isinstance(meta.get("metadata"), dict) else None


# --- the copy ---------------------------------------------------------------------------------------------------

@dataclass
class TransferResult:
    source: str
    destination: str
    scope: str
    objects: int = 0
    sent: int = 0
    skipped: int = 0
    removed: int = 0
    replaced: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    seconds: float = 0.0

    def summary(self, verb: str = "copied") -> str:
        replaced = f"; replaced {', '.join(self.replaced)}" if self.replaced else ""
        return (f"{verb} {self.scope} from {self.source} to {self.destination}: {self.objects} objects verified — "
                f"{self.sent} sent ({self.bytes_sent / 1e6:,.1f} MB), {self.skipped} already there, "
                f"{self.removed} stale removed{replaced}; {self.seconds:.1f}s")


def _parallel(fn: Callable[[str], Any], keys: list[str], jobs: int) -> list[Any]:
    """``fn`` over ``keys`` on ``jobs`` threads; the first failure cancels what has not started and is raised."""
    if not keys:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(keys))), thread_name_prefix="actstore-copy") as pool:
        futures = [pool.submit(fn, key) for key in keys]
        try:
            return [future.result() for future in as_completed(futures)]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _scope(model: str | None, dataset: str | None) -> tuple[str | None, str | None, str]:
    if dataset is not None and model is None:
        raise ActstoreError("--dataset needs --model: a run is named by both")
    if model is None:
        return None, None, "the whole store"
    model_key = layout.encode_name(model)
    if dataset is None:
        return model_key, None, f"model {model}"
    return model_key, layout.run_path(model, dataset), f"{model}/{dataset}"


def _conflicts(src_docs: dict[str, dict | None], dst_docs: dict[str, dict | None], model_units: set[str]) -> list[str]:
    """Units present at both ends that are not the same thing (another model, configuration or more of the run)."""
    found = []
    for unit, src in sorted(src_docs.items()):
        dst = dst_docs.get(unit)
        if not src or not dst:
            continue
        a, b = src.get("attributes", {}), dst.get("attributes", {})
        if unit in model_units:
            if a.get("model_checksum") and b.get("model_checksum") and a["model_checksum"] != b["model_checksum"]:
                found.append(f"{layout.decode_name(unit)} is another model (model_checksum differs)")
        elif a.get("config_hash") and b.get("config_hash"):
            name = "/".join(layout.decode_name(p) for p in unit.split("/"))
            if a["config_hash"] != b["config_hash"]:
                found.append(f"{name} was made with another configuration (config_hash differs)")
            elif int(b.get("progress", {}).get("tokens_done", 0)) > int(a.get("progress", {}).get("tokens_done", 0)):
                found.append(f"{name} holds more of the run than the source")
    return found


@dataclass
class _Plan:
    """What phase 1 finds and the later phases share: both ends, the objects and units in scope."""
    src: _Side
    dst: _Side
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


def copy_store(
    source: str,
    destination: str,
    model: str | None = None,
    dataset: str | None = None,
    *,
    overwrite: bool = False,
    source_options: dict[str, Any] | None = None,
    destination_options: dict[str, Any] | None = None,
    jobs: int = 8,
    progress: bool = True,
    verb: str = "copy",
    after_object: Callable[[str], None] | None = None,
) -> TransferResult:
    """Copy a store, one model (its lens head and runs) or one run to ``destination``; resumable and verified.

    ``after_object(key)`` is called after each object sent (progress hooks; raising stops the copy there)."""
    started = time.perf_counter()
    plan = _plan(source, destination, model, dataset, source_options, destination_options, jobs)
    result = TransferResult(source, destination, plan.scope, objects=len(plan.keys))
    replaced = _make_room(plan, result, overwrite, jobs)
    sent = _send(plan, result, jobs, progress, verb, after_object)
    landed = _verify(plan, result, sent, jobs)
    _publish(plan, landed, replaced, destination_options)
    result.seconds = time.perf_counter() - started
    return result


def _plan(source: str, destination: str, model: str | None, dataset: str | None,
          source_options: dict[str, Any] | None, destination_options: dict[str, Any] | None, jobs: int) -> _Plan:
    """Phase 1, the source: an actstore store, and the objects in scope; refuses before anything is written."""
    if jobs < 1:
        raise ActstoreError(f"--jobs must be at least 1, got {jobs}")
    model_key, run_key, scope_name = _scope(model, dataset)
    src, dst = _Side(source, source_options), _Side(destination, destination_options)
    if src.same_place(dst):
        raise ActstoreError(f"{source} and {destination} overlap; copy to a different place")
    src_root_bytes = src.read(ROOT)
    if src_root_bytes is None:
        raise location.missing_store(source, source_options)
    src_root = _doc(src_root_bytes, f"{source}/{ROOT}")
    layout.check_format(src_root.get("attributes", {}), source)
    src_listed, dst_listed = src.list(), dst.list()
    src_objects = {k: v for k, v in src_listed.items() if not _hidden(k) and TMP_MARK not in k}
    dst_objects = {k: v for k, v in dst_listed.items() if not _hidden(k)}
    arrays = _model_arrays([*src_objects, *dst_objects])
    for meta in (_consolidated(src_root) or {}).items():
        if meta[0].count("/") == 1 and meta[1].get("node_type") == "array":
            arrays.add(tuple(meta[0].split("/")))  # type: ignore[arg-type]
    src_units = {_unit(k, arrays) for k in src_objects} - {None}
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
    keys = sorted(k for k in src_objects if _unit(k, arrays) in units)
    for unit in sorted(u for u in units if "/" in u):  # a run being extracted is a moving target
        for side, listed in ((source, src_listed), (destination, dst_listed)):
            if lock_key(unit) in listed:
                name = "/".join(layout.decode_name(p) for p in unit.split("/"))
                raise ActstoreError(f"{side}: run {name} is being written (lock {lock_key(unit)}); wait for the "
                                    f"extraction to finish, or delete that object if none is running")
    model_units = {u for u in units if u and "/" not in u}
    src_docs = src.docs(sorted(u for u in units if u), jobs)
    return _Plan(src, dst, scope_name, src_root, src_root_bytes, src_objects, dst_objects, arrays, units,
                 model_units, keys, src_docs)


def _make_room(plan: _Plan, result: TransferResult, overwrite: bool, jobs: int) -> set[str]:
    """Phase 2, the destination: refuse another store there unless told to replace it; with ``overwrite``,
    hide the units being replaced from readers, then delete them. Returns the replaced units."""
    dst, src_docs, model_units = plan.dst, plan.src_docs, plan.model_units
    dst_root = _doc(dst.read(ROOT), f"{dst.url}/{ROOT}")
    dst_docs = dst.docs(list(src_docs), jobs)  # the same units, in the same order
    problems = _conflicts(src_docs, dst_docs, model_units)
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
    dst_units = {_unit(k, plan.arrays) for k in plan.dst_objects} - {None, ""}
    for unit, doc in dst_docs.items():
        if doc is None or not _conflicts({unit: src_docs[unit]}, {unit: doc}, model_units):
            continue
        replaced |= {u for u in dst_units if u == unit.split("/")[0] or u.startswith(unit.split("/")[0] + "/")} \
            if unit in model_units else {unit}
    if dst_root is not None and dst_root.get("attributes", {}).get(layout.FORMAT_ATTR) != layout.FORMAT_VERSION:
        replaced |= dst_units
    if replaced:
        if _consolidated(dst_root) is not None:
            dst_root = _without(dst_root, replaced)
            dst.write(ROOT, _dumps(dst_root))
        doomed = [k for k in plan.dst_objects if _unit(k, plan.arrays) in replaced]
        dst.remove(doomed)
        for key in doomed:
            plan.dst_objects.pop(key, None)
        result.replaced = sorted("/".join(layout.decode_name(p) for p in u.split("/")) for u in replaced)
    return replaced


def _send(plan: _Plan, result: TransferResult, jobs: int, progress: bool, verb: str,
          after_object: Callable[[str], None] | None) -> dict[str, str]:
    """Phase 3, copy: data, then array metadata, then group metadata (deepest first); the root comes last.
    Returns the MD5 of each object sent, by key."""
    from tqdm.auto import tqdm

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
        if data is None or len(data) != obj.size or (unit in plan.src_docs and _doc(data, key) != plan.src_docs[unit]):
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
        _parallel(copy_one, data_keys, jobs)
        for depth in sorted({k.count("/") for k in meta_keys}, reverse=True):
            _parallel(copy_one, [k for k in meta_keys if k.count("/") == depth], jobs)
    finally:
        bar.close()
    result.sent, result.skipped = len(sent), len(keys) - len(sent)
    result.bytes_sent = sum(src_objects[k].size for k in sent)
    return sent


def _verify(plan: _Plan, result: TransferResult, sent: dict[str, str], jobs: int) -> dict[str, Listed]:
    """Phase 4: verify every object in scope (sizes, and checksums of what was sent), then drop stale objects.
    Returns what the destination now lists."""
    dst, arrays = plan.dst, plan.arrays
    landed = {k: v for k, v in dst.list().items() if not _hidden(k)}

    def verify(key: str) -> str | None:
        there = landed.get(key)
        if there is None or there.size != plan.src_objects[key].size:
            return key
        if key in sent and there.md5 != sent[key]:
            data = dst.read(key)  # no MD5 in the listing (local, multipart, KMS): read it back
            if data is None or md5(data).hexdigest() != sent[key]:
                return key
        return None

    bad = sorted(k for k in _parallel(verify, plan.keys, jobs) if k)
    if bad:
        raise ActstoreError(f"verification failed for {len(bad)} objects at {dst.url} (e.g. {bad[0]}); "
                            f"run the command again")
    stale = [k for k in landed if k not in plan.src_objects and _unit(k, arrays) in plan.units and _unit(k, arrays)]
    dst.remove(stale)
    result.removed = len(stale)
    return landed


def _publish(plan: _Plan, landed: dict[str, Listed], replaced: set[str],
             destination_options: dict[str, Any] | None) -> None:
    """Phase 5, the root, last: the source's own when the destination holds nothing else, else merged metadata.
    Read again just before writing, so a push of other runs that finished meanwhile is kept (one GET of a window)."""
    dst, units = plan.dst, plan.units
    dst_root = _doc(dst.read(ROOT), f"{dst.url}/{ROOT}")
    kept = {_unit(k, plan.arrays) for k in landed if k.endswith(f"/{ROOT}") and k.count("/") <= 2} - {None, ""} - units
    _write_root(plan.src_root, plan.src_root_bytes, dst, destination_options, dst_root, units | replaced, units, kept)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=True).encode()


def _without(doc: dict[str, Any], units: set[str]) -> dict[str, Any]:
    """A root document whose consolidated metadata no longer lists ``units``."""
    meta = _consolidated(doc) or {}
    kept = {p: n for p, n in meta.items() if _node_unit(p, n) not in units}
    return {**doc, "consolidated_metadata": {**doc["consolidated_metadata"], "metadata": kept}}


def _write_root(src_root: dict[str, Any], src_bytes: bytes, dst: _Side, dst_options: dict[str, Any] | None,
                dst_root: dict[str, Any] | None, changed: set[str], copied: set[str], others: set[str]) -> None:
    """Write the destination's root ``zarr.json``: the source's, with the consolidated entries of the copied
    units plus the destination's own entries for the units it keeps; zarr consolidates when entries are missing."""
    src_meta, dst_meta = _consolidated(src_root), _consolidated(dst_root)
    listed = {_node_unit(p, n) for p, n in (dst_meta or {}).items()}
    if src_meta is None or not others <= listed:
        plain = {k: v for k, v in src_root.items() if k != "consolidated_metadata"}
        dst.write(ROOT, _dumps(plain))
        Store.open(dst.url, dst_options, mode="r+").consolidate()
        return
    entries = {p: n for p, n in src_meta.items() if _node_unit(p, n) in copied}
    entries.update({p: n for p, n in (dst_meta or {}).items()
                    if _node_unit(p, n) not in changed and _node_unit(p, n) in others and p not in entries})
    doc = {**src_root, "consolidated_metadata": {**src_root["consolidated_metadata"], "metadata": entries}}
    data = src_bytes if doc == src_root else _dumps(doc)
    dst.write(ROOT, data)
    if dst.read(ROOT) != data:
        raise ActstoreError(f"verification failed for {dst.url}/{ROOT}; run the command again")
