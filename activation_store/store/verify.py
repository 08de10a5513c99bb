"""``actstore verify``: everything readers read, checked — every chunk and every metadata document.

The walk goes through the store's directories (prefixes) from the root: each node's ``zarr.json`` is parsed
(an unreadable one is named, never fatal), compared with the consolidated metadata readers open
(``verify_metadata.py``), and every chunk of every array is read back as readers read it, through the
consolidated description where there is one (``verify_chunks.py``). Runs, lens heads, steering vectors,
recorded interventions and the results tree are all walked, and a result replacement killed part way is named
(``replace.py``). Dot-names (locks, the staging area, a run's pieces) hold nothing readers see."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.core.sync import sync

from ..errors import ActstoreError
from . import layout
from .handle import Store, quiet_zarr
from .objects import objects_at
from .replace import journals
from .verify_chunks import check_array
from .verify_metadata import consolidated_of, difference, read_doc
from .verify_report import KINDS, Pending, Problem, VerifyReport, one_line
from .write import PROGRESS_ATTR

__all__ = ["KINDS", "Pending", "Problem", "VerifyReport", "verify"]


@dataclass
class _Walk:
    """What the walk shares: the store, the filters (encoded names), the consolidated metadata, what it saw."""

    store: Store
    report: VerifyReport
    model: str | None
    dataset: str | None
    consolidated: dict[str, dict[str, Any]] | None
    reader_root: zarr.Group | None                                        # the root as readers open it
    live: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # path → live doc (None: reported)
    runs: dict[str, int | None] = field(default_factory=dict)             # group → committed tokens (None: no run)

    def seen(self, path: str) -> dict[str, Any] | None:
        return (self.consolidated or {}).get(path)


def _key(path: str) -> str:
    return f"{path}/{layout.METADATA}" if path else layout.METADATA


def _in_scope(walk: _Walk, path: str, node_type: str | None) -> bool:
    """Whether ``--model``/``--dataset`` include the node at ``path`` (in the results tree, by the same names)."""
    parts = path.split("/")
    if parts[0] == layout.RESULTS:
        parts, node_type = parts[1:], "group"
    if walk.model is not None and parts and parts[0] != walk.model:
        return False
    if walk.dataset is not None and len(parts) >= 2 and (len(parts) > 2 or node_type == "group"):
        return parts[1] == walk.dataset
    return True


def _list(store: Store, path: str) -> list[str]:
    async def listing() -> list[str]:
        return [name async for name in store.zarr_store.list_dir(f"{path}/" if path else "")]
    return sorted(sync(listing()))


def _committed(doc: dict[str, Any], names: list[str]) -> int | None:
    """Tokens committed in a run group; None when the group is not a run (no ``hidden``)."""
    if layout.HIDDEN not in names:
        return None
    attrs = doc.get("attributes") or {}
    return int((attrs.get(PROGRESS_ATTR) or {}).get("tokens_done", 0)) if "config_hash" in attrs else 0


def _walk_group(walk: _Walk, path: str, known: bool) -> None:
    names = _list(walk.store, path)
    doc = walk.live.get(path)
    if doc is not None:
        walk.runs[path] = _committed(doc, names)
    elif not known and set(names) <= {"c", layout.METADATA}:
        return  # an array whose metadata cannot be read: its chunks cannot be either
    for name in names:
        if name != layout.METADATA and not name.startswith(".") and not name.endswith(".partial"):
            _visit(walk, f"{path}/{name}" if path else name)


def _visit(walk: _Walk, path: str) -> None:
    doc, why = read_doc(walk.store.zarr_store, _key(path))
    seen = walk.seen(path)
    node_type = (doc or seen or {}).get("node_type")
    if not _in_scope(walk, path, node_type):
        return
    if doc is None and why is None:
        _no_metadata(walk, path, seen)
        return
    walk.live[path] = doc
    if why is not None:
        walk.report.add(_key(path), "metadata", why)
    if node_type == "array":
        _check(walk, path)
    else:
        _walk_group(walk, path, node_type == "group")


def _no_metadata(walk: _Walk, path: str, seen: dict[str, Any] | None) -> None:
    """A directory (or object) without a ``zarr.json``: damage if readers expect a node there, or if it holds
    anything (nothing reads it); nothing when it is a stray file."""
    if sync(walk.store.zarr_store.exists(path)):
        return  # an object, not a directory: no node
    if seen is not None:
        walk.live[path] = None
        walk.report.add(_key(path), "missing", "readers see a node here (consolidated metadata); its zarr.json is gone")
        if seen.get("node_type") == "array":
            _check(walk, path)
        else:
            _walk_group(walk, path, True)
    elif any(not name.startswith(".") for name in _list(walk.store, path)):
        walk.report.add(_key(path), "missing", "a directory with contents but no zarr.json: no reader sees it")


def _check(walk: _Walk, path: str) -> None:
    """An array's chunks, read through the description readers use."""
    try:
        if walk.reader_root is not None and walk.seen(path) is not None:
            array = walk.reader_root[path]
        else:
            array = zarr.open_array(walk.store.zarr_store, path=path, mode="r")
    except Exception as exc:  # noqa: BLE001 - metadata zarr cannot make an array of
        if walk.live.get(path) is not None:
            walk.report.add(_key(path), "metadata", one_line(exc))
        return
    check_array(array, walk.report, walk.runs.get(path.rpartition("/")[0]))


def _compare(walk: _Walk) -> None:
    """Every node in the live tree or the consolidated metadata, against the other."""
    if walk.consolidated is None:
        return
    absent: list[str] = []  # groups readers see and the store lacks: their members are not named one by one
    for path in sorted(set(walk.live) | set(walk.consolidated)):
        seen, live = walk.seen(path), walk.live.get(path)
        if not path or not _in_scope(walk, path, (seen or live or {}).get("node_type")):
            continue
        if path not in walk.live:
            if not any(path.startswith(f"{group}/") for group in absent):
                absent.append(path)
                walk.report.add(_key(path), "mismatch", "readers see this node (consolidated metadata); the store "
                                                        "has none")
        elif live is None:
            continue  # unreadable or gone: reported already
        elif seen is None:
            walk.report.add(_key(path), "mismatch", "not in the consolidated metadata readers open: no reader sees it")
        else:
            found = difference(live, seen)
            if found:
                walk.report.add(_key(path), "mismatch", found)


def _interrupted(walk: _Walk) -> None:
    """Result replacements killed part way (replace.py): named until the next save completes them."""
    for token, record in sorted(journals(walk.store).items()):
        target, state = record.get("target") or "", record.get("state")
        gone = target not in walk.live or walk.live[target] is None
        stale = state in ("checked", "swapping") and any(
            p.kind == "mismatch" and p.key.startswith(f"{target}/") for p in walk.report.problems)
        if (state == "publishing" or (state == "swapping" and gone) or stale) and _in_scope(walk, target, "group"):
            walk.report.add(target or token, "interrupted",
                            "a result replacement was killed part way; the next save into this store completes it")


def _open(url: str | Store, storage_options: dict[str, Any] | None) -> Store:
    """The store; an unreadable root ``zarr.json`` is named as the file it is."""
    if not isinstance(url, Store):
        data = objects_at(str(url), storage_options).read(layout.METADATA) if str(url).strip() else None
        try:
            json.loads(data) if data is not None else None
        except ValueError as exc:
            raise layout.unreadable(f"{str(url).rstrip('/')}/{layout.METADATA}", exc) from None
    return Store.open(url, storage_options)


def verify(store: str | Store, model: str | None = None, dataset: str | None = None,
           storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check every chunk and metadata document of a store (or of one model's / one dataset's nodes, with their
    results) as readers read them, and report each problem by its key."""
    store = _open(store, storage_options)
    with quiet_zarr():
        root_doc, _ = read_doc(store.zarr_store, layout.METADATA)
        consolidated = consolidated_of(root_doc or {})
        reader_root = zarr.open_group(store.zarr_store, mode="r", use_consolidated=True) if consolidated else None
        walk = _Walk(store, VerifyReport(store.url), layout.encode_name(model) if model is not None else None,
                     layout.encode_name(dataset) if dataset is not None else None, consolidated, reader_root)
        walk.live[""] = root_doc
        _walk_group(walk, "", True)
        _require_scope(walk, model, dataset)
        _compare(walk)
        _interrupted(walk)
    return walk.report


def _require_scope(walk: _Walk, model: str | None, dataset: str | None) -> None:
    url = walk.store.url
    tops = [p.split("/") for p in walk.live if p and not p.startswith(f"{layout.RESULTS}/") and p != layout.RESULTS]
    if model is not None and not any(parts[0] == walk.model for parts in tops):
        raise ActstoreError(f"model {model!r} is not in {url}; `actstore ls {url}` lists what is")
    if dataset is not None and not any(len(parts) >= 2 and parts[1] == walk.dataset for parts in tops):
        raise ActstoreError(f"dataset {dataset!r} is not in {url}; `actstore ls {url}` lists what is")
